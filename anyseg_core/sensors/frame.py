"""The raw sensor data of one frame, as every reader (synthetic, MUSES, the ROS node) hands it
to :func:`anyseg_core.sensors.prepare_inputs`.

Arrays may be numpy arrays or torch tensors (on any device). Everything is in the raw units
of the sensor; nothing here is resized or normalised.

Geometry conventions (all frames are right-handed):
- the *camera* frame is OpenCV's optical frame: x right, y down, z forward; pixel (u, v)
  has its centre at integer coordinates, so a point projects to column ``round(u)``;
- ``T_cam_lidar`` maps homogeneous points from the LiDAR frame to the camera frame;
- ``T_cam_events`` maps points from the event camera's optical frame to the camera frame.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

ArrayLike = Any  # numpy.ndarray or torch.Tensor


@dataclass
class Events:
    """An event stream: pixel coordinates in the event camera, time in seconds, polarity 0/1.

    Times should be float64 (absolute UNIX seconds lose precision in float32)."""

    x: ArrayLike
    y: ArrayLike
    t: ArrayLike
    p: ArrayLike

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclass
class RawFrame:
    """Raw data of every sensor for one frame; a missing sensor is ``None``.

    image_hw: (H, W) of the frame camera; the output geometry even when the camera is missing.
    K: 3x3 intrinsics of the frame camera.
    distortion: the frame camera's lens distortion as ``(model, coefficients)`` (see
      :mod:`~anyseg_core.sensors.distortion`), None for an undistorted (rectified) image;
      LiDAR points are projected where the distorted image shows them.
    t_cam: time of the camera image (seconds, mid-exposure); the event window ends here.
    camera: H x W x C uint8 (or uint16 for mono16) image in ``camera_encoding``.
    lidar: N x >=4 points (x, y, z, intensity, ...) in the LiDAR frame.
    events: an :class:`Events` stream in the event camera's pixels, or ``None``.
    events_image: instead of ``events``, an already rendered event frame aligned with the
      frame camera: H' x W' x 3 (or 3 x H' x W' torch) with the channels of
      :func:`~anyseg_core.sensors.render_events` (positive count, negative count, third
      channel), any size (it is resized to the network like a rendered frame); used only
      when ``events`` is None.
    events_K: 3x3 intrinsics of the event camera (``events_hw`` its size).
    events_distortion: the frame camera's ``distortion`` when the events come from a
      separate event camera and are warped into a distorted frame camera; None when they
      are the frame camera's own pixels (or the frame camera has no distortion). The event
      camera's own pixels are taken as undistorted.
    depth: H x W depth image aligned with the frame camera, in ``depth_encoding``
      (``16UC1`` millimetres or ``32FC1`` metres; 0 or non-finite = no measurement).
    label: H x W uint8 train ids (255 = ignore), when known.
    meta: anything else a reader wants to pass along (condition, stamps, ...).
    """

    image_hw: tuple[int, int]
    K: ArrayLike
    distortion: Optional[tuple[str, tuple[float, ...]]] = None
    t_cam: float = 0.0
    camera: Optional[ArrayLike] = None
    camera_encoding: str = "rgb8"
    lidar: Optional[ArrayLike] = None
    T_cam_lidar: Optional[ArrayLike] = None
    events: Optional[Events] = None
    events_image: Optional[ArrayLike] = None
    events_K: Optional[ArrayLike] = None
    events_hw: Optional[tuple[int, int]] = None
    events_distortion: Optional[tuple[str, tuple[float, ...]]] = None
    T_cam_events: Optional[ArrayLike] = None
    depth: Optional[ArrayLike] = None
    depth_encoding: str = "32FC1"
    label: Optional[ArrayLike] = None
    meta: dict = field(default_factory=dict)
