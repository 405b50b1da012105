"""Sensor messages -> the payloads the synchroniser carries (shared by the node and the
offline tools; duck-typed, so rclpy and rosbags messages both work).

Each function takes the message, the current :class:`Geometry` and an optional Counter for
soft problems (data removed from a message that is otherwise used), validates through :mod:`anyseg_ros.conversions` and raises
:class:`~anyseg_ros.conversions.InvalidMessage` with a reason for anything malformed.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Optional

import numpy as np

from anyseg_core.modalities import CAMERA, DEPTH, EVENTS, LIDAR

from . import conversions as conv
from .pipeline import CameraImage, DepthImage, EventImage, Geometry


def camera_payload(msg: Any, geometry: Geometry, notes: Optional[Counter] = None) -> CameraImage:
    array, encoding = conv.image_to_array(msg, conv.CAMERA_ENCODINGS)
    return CameraImage(array, encoding, msg.header.frame_id)


def depth_payload(msg: Any, geometry: Geometry, notes: Optional[Counter] = None) -> DepthImage:
    return DepthImage(*conv.image_to_array(msg, conv.DEPTH_ENCODINGS))


def event_image_payload(msg: Any, geometry: Geometry, notes: Optional[Counter] = None) -> EventImage:
    array, _ = conv.image_to_array(msg, conv.EVENT_IMAGE_ENCODINGS)
    if array.ndim != 3 or array.shape[2] != 3:
        raise conv.InvalidMessage("unknown_encoding", "an event image needs 3 channels "
                                  f"(positive, negative, third), got {msg.encoding}")
    return EventImage(array)


def lidar_payload(msg: Any, geometry: Geometry, notes: Optional[Counter] = None) -> np.ndarray:
    """float32 N x 4. Non-finite points (a non-dense cloud may hold them) are removed and
    counted in ``notes["non_finite_points"]``."""
    points, dropped = conv.lidar_points(msg)
    if dropped and notes is not None:
        notes["non_finite_points"] += dropped
    return points


def events_payload(msg: Any, geometry: Geometry, notes: Optional[Counter] = None):
    """Events, checked against the event camera's size when it is known (the camera's own
    size when the events are in camera pixels)."""
    size = geometry.events_hw or (geometry.image_hw if geometry.events_K is None else None)
    return conv.events_from_cloud(msg, size)


def payload_function(sensor: str, events_type: str = "pointcloud") -> Callable:
    """The converter for ``sensor``'s messages."""
    if sensor == EVENTS:
        return event_image_payload if events_type == "image" else events_payload
    return {CAMERA: camera_payload, LIDAR: lidar_payload, DEPTH: depth_payload}[sensor]
