"""What the node's inputs become once converted, below everything that uses them.

:mod:`anyseg_ros.inputs` turns ROS messages into these payloads, :mod:`anyseg_ros.params`
and :class:`~anyseg_ros.session.Session` keep the rig's :class:`Geometry`, and
:mod:`anyseg_ros.pipeline` assembles them into the frame the model sees. No ROS, no torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

import numpy as np

#: Where outputs are drawn: at the camera image's size, or at the network's.
OUTPUT_RESOLUTIONS = ("camera", "network")


@dataclass
class CameraImage:
    """A camera image as received: H x W (x C) array in ``encoding``, and its frame id."""

    array: np.ndarray
    encoding: str
    frame_id: str


@dataclass
class DepthImage:
    """A depth image aligned with the camera: 16UC1 (mm) or 32FC1 (m)."""

    array: np.ndarray
    encoding: str


@dataclass
class EventImage:
    """An event frame rendered upstream, H x W x 3 in the channels of render_events."""

    array: np.ndarray


@dataclass
class LidarSweep:
    """A LiDAR cloud as received: float32 N x 4 (x, y, z, intensity) in the cloud's own frame,
    and ``T_cam_lidar``, the transform into the camera's frame resolved when it arrived (from
    TF, for the cloud's frame_id and stamp); None = the rig's ``Geometry.T_cam_lidar`` (the
    ``lidar.T_cam_lidar`` parameter)."""

    points: np.ndarray
    T_cam_lidar: Optional[np.ndarray] = None


@dataclass
class EventPacket:
    """An event packet (``conversions.Events``) and, for a separate event camera, the
    transform from its frame into the camera's resolved when it arrived (from TF); None =
    the rig's ``Geometry.T_cam_events`` (the ``events.T_cam_events`` parameter)."""

    events: object
    T_cam_events: Optional[np.ndarray] = None


@dataclass
class Geometry:
    """What the node knows of the rig when a frame is processed.

    K / image_hw: the frame camera's intrinsics and size (from CameraInfo, else parameters);
    distortion: its lens distortion (model, coefficients), None for none or rectified images.
    R_rect: rectified images of a stereo camera: the rotation from the camera's frame to the
    rectified one (CameraInfo's R), applied after T_cam_lidar and T_cam_events; None = none.
    frame_id: the camera's frame id for outputs made without a camera image.
    T_cam_lidar: LiDAR to camera, 4x4. events_K / events_hw / T_cam_events: the event
    camera; events_K None means the events are in the frame camera's pixels.
    """

    K: Optional[np.ndarray] = None
    image_hw: Optional[tuple[int, int]] = None
    distortion: Optional[tuple[str, tuple[float, ...]]] = None
    R_rect: Optional[np.ndarray] = None
    frame_id: str = "camera"
    T_cam_lidar: np.ndarray = field(default_factory=lambda: np.eye(4))
    events_K: Optional[np.ndarray] = None
    events_hw: Optional[tuple[int, int]] = None
    T_cam_events: Optional[np.ndarray] = None


def with_geometry(geometry: Geometry, **changes) -> Geometry:
    """A copy of ``geometry`` with fields replaced (the node swaps it atomically)."""
    return replace(geometry, **changes)


def geometry_from_camera(geometry: Geometry, image: CameraImage) -> Geometry:
    """``geometry`` completed from a camera image, for use while no CameraInfo has been seen:
    the image's size when none is known yet (``camera.K`` without ``camera.height/width`` is
    then for images of that size) and its frame id, so outputs made during a camera outage
    keep the camera's size and frame. Returns ``geometry`` itself when nothing changes."""
    changes: dict = {}
    if geometry.image_hw is None:
        changes["image_hw"] = tuple(int(n) for n in image.array.shape[:2])
    if image.frame_id and image.frame_id != geometry.frame_id:
        changes["frame_id"] = image.frame_id
    return with_geometry(geometry, **changes) if changes else geometry
