"""Sensor messages -> the payloads the synchroniser carries (shared by the node and the
offline tools; duck-typed, so rclpy and rosbags messages both work).

Each function takes the message, the current :class:`Geometry` and an optional Counter for
soft problems (data removed from a message that is otherwise used), validates through
:mod:`anyseg_ros.conversions` and raises
:class:`~anyseg_ros.conversions.InvalidMessage` with a reason for anything malformed.
"""
from __future__ import annotations

import functools
from collections import Counter
from typing import Any, Callable, Optional

import numpy as np

from anyseg_core.modalities import CAMERA, DEPTH, EVENTS, LIDAR
from anyseg_core.sensors.pipeline import check_aligned

from . import conversions as conv
from .events import EventPacketStream
from .payloads import CameraImage, DepthImage, EventImage, Geometry


def camera_payload(msg: Any, geometry: Geometry, notes: Optional[Counter] = None) -> CameraImage:
    """A ``sensor_msgs/Image``, or a ``sensor_msgs/CompressedImage`` (jpeg, png: decoded here,
    a corrupt payload rejected as bad_compressed)."""
    if hasattr(msg, "format"):  # CompressedImage (an Image has an encoding, no format)
        array, encoding = conv.compressed_to_array(msg, conv.CAMERA_ENCODINGS)
    else:
        array, encoding = conv.image_to_array(msg, conv.CAMERA_ENCODINGS)
    return CameraImage(array, encoding, msg.header.frame_id)


def _aligned(name: str, array: np.ndarray, geometry: Geometry) -> np.ndarray:
    """``array`` when its size can be aligned with the camera's (see ``check_aligned``);
    else it is rejected as bad_size."""
    try:
        check_aligned(name, array.shape[:2], geometry.image_hw)
    except ValueError as e:
        raise conv.InvalidMessage("bad_size", str(e)) from None
    return array


def depth_payload(msg: Any, geometry: Geometry, notes: Optional[Counter] = None) -> DepthImage:
    array, encoding = conv.image_to_array(msg, conv.DEPTH_ENCODINGS)
    return DepthImage(_aligned("the depth image", array, geometry), encoding)


def event_image_payload(msg: Any, geometry: Geometry,
                        notes: Optional[Counter] = None) -> EventImage:
    """A rendered event frame (32FC3): aligned with the camera, every value finite."""
    array, _ = conv.image_to_array(msg, conv.EVENT_IMAGE_ENCODINGS)
    if array.ndim != 3 or array.shape[2] != 3:
        raise conv.InvalidMessage("unknown_encoding", "an event image needs 3 channels "
                                  f"(positive, negative, third), got {msg.encoding}")
    bad = int(np.count_nonzero(~np.isfinite(array)))
    if bad:
        raise conv.InvalidMessage("non_finite", f"the event image has {bad} NaN or inf values")
    return EventImage(_aligned("the event image", array, geometry))


def lidar_payload(msg: Any, geometry: Geometry, notes: Optional[Counter] = None,
                  intensity_field: str = "intensity", intensity_scale: float = 1.0) -> np.ndarray:
    """float32 N x 4 (x, y, z, intensity x ``intensity_scale``). Non-finite points (a
    non-dense cloud may hold them) are removed and counted in ``notes["non_finite_points"]``;
    a cloud without ``intensity_field`` gets zero intensity, counted (per message) in
    ``notes["intensity_field_missing"]``."""
    points, dropped = conv.lidar_points(msg, intensity_field)
    if notes is not None:
        if dropped:
            notes["non_finite_points"] += dropped
        if not conv.has_field(msg, intensity_field):
            notes["intensity_field_missing"] += 1
    if intensity_scale != 1.0:
        points[:, 3] *= intensity_scale
    return points


def _event_camera_size(geometry: Geometry) -> Optional[tuple[int, int]]:
    """The event camera's size when it is known: its own, or the camera's when the events
    are in camera pixels (no events.K)."""
    return geometry.events_hw or (geometry.image_hw if geometry.events_K is None else None)


def events_payload(msg: Any, geometry: Geometry, notes: Optional[Counter] = None):
    """Events of our PointCloud2 layout, checked against the event camera's size."""
    return conv.events_from_cloud(msg, _event_camera_size(geometry))


class EventPacketPayload:
    """``event_camera_msgs/EventPacket`` -> Events on ROS time, through one stateful
    :class:`~anyseg_ros.events.EventPacketStream` (a topic's decoder, clock mapping and
    packet counter): lost packets, restarts and trigger words go to ``notes``."""

    def __init__(self, backend: str = "auto") -> None:
        self.stream = EventPacketStream(backend)

    def __call__(self, msg: Any, geometry: Geometry, notes: Optional[Counter] = None):
        return self.stream(msg, _event_camera_size(geometry), notes)


def payload_function(sensor: str, events_type: str = "packet",
                     intensity_field: str = "intensity", intensity_scale: float = 1.0,
                     events_decoder: str = "auto") -> Callable:
    """The converter for ``sensor``'s messages (``events_type``, ``events_decoder``,
    ``intensity_*``: the node's ``events.type``, ``events.decoder`` and
    ``lidar.intensity_*`` parameters). Event packets get a new stateful converter each
    call: one per topic."""
    if sensor == EVENTS:
        if events_type == "packet":
            return EventPacketPayload(events_decoder)
        return event_image_payload if events_type == "image" else events_payload
    if sensor == LIDAR:
        return functools.partial(lidar_payload, intensity_field=intensity_field,
                                 intensity_scale=intensity_scale)
    return {CAMERA: camera_payload, DEPTH: depth_payload}[sensor]
