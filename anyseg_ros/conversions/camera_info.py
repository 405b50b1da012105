"""``sensor_msgs/CameraInfo`` -> the camera model the node uses (K, size, distortion, R)."""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from anyseg_core.sensors.distortion import Distortion, check_distortion

from .common import MAX_PIXELS, InvalidMessage


class CameraModel(NamedTuple):
    """What a CameraInfo says of the images it goes with."""

    K: np.ndarray  # 3 x 3 float64
    image_hw: tuple[int, int]
    distortion: Distortion  # (model, coefficients), None for none (or a rectified image)
    #: rectified images of a stereo camera: the rotation R from the camera's own optical
    #: frame (header.frame_id) to the rectified one; None for none (identity)
    R: np.ndarray | None = None


def _camera_matrix(values: Any, rows: int, cols: int, name: str) -> np.ndarray:
    m = np.array(values, dtype=np.float64)
    if m.size != rows * cols:
        raise InvalidMessage("singular_K", f"{name} has {m.size} numbers, expected "
                                           f"{rows * cols}")
    M = m.reshape(rows, cols)[:, :3]
    if (not np.isfinite(M).all() or M[0, 0] <= 0 or M[1, 1] <= 0
            or not np.array_equal(M[2], [0.0, 0.0, 1.0]) or abs(np.linalg.det(M)) == 0.0):
        raise InvalidMessage("singular_K", f"{name} = {m.reshape(rows, cols).tolist()} is not "
                                           "a camera matrix (needs finite entries, fx, fy > 0, "
                                           "last row 0 0 1)")
    return M.copy()


def camera_info(msg: Any, rectified: bool = False) -> CameraModel:
    """The intrinsics K (3 x 3 float64, a copy), image size (H, W) and lens distortion of a
    ``sensor_msgs/CameraInfo``, for the images it goes with.

    ``rectified``: the images are rectified (``image_rect``), so K is the left 3 x 3 of the
    projection matrix P, there is no distortion, and a stereo camera's rectification
    rotation R (all zero or identity: none) turns points of the camera's frame into the
    rectified one; otherwise K is ``k`` and the distortion
    ``distortion_model`` with ``d`` (all-zero ``d``: none). A region of interest (``roi``,
    raw images only) crops the image: its offset moves the principal point and its size is
    the image's. (Binning needs nothing here: images of another size than the CameraInfo's
    get K rescaled by the pipeline.) Reasons: bad_size (zero or absurd size), singular_K (not
    9 (12) numbers, non-finite, focal lengths not positive, last row not 0 0 1, or singular:
    an uncalibrated camera publishes K = 0), bad_distortion (a model other than plumb_bob,
    rational_polynomial and equidistant with non-zero ``d``, or a wrong count), bad_roi (an
    ROI outside the image, or with ``rectified``)."""
    height, width = int(msg.height), int(msg.width)
    if height <= 0 or width <= 0 or height * width > MAX_PIXELS:
        raise InvalidMessage("bad_size", f"camera of {height} x {width} pixels")
    R = None
    if rectified:
        K = _camera_matrix(getattr(msg, "p", ()), 3, 4, "P (camera.rectified)")
        distortion = None
        r = np.array(getattr(msg, "r", ()), dtype=np.float64)
        if r.size == 9 and r.any() and not np.array_equal(r.reshape(3, 3), np.eye(3)):
            R = r.reshape(3, 3)
            if not (np.isfinite(R).all() and np.allclose(R @ R.T, np.eye(3), atol=1e-6)
                    and np.linalg.det(R) > 0):
                raise InvalidMessage("singular_K", f"R = {R.tolist()} is not a rotation")
    else:
        K = _camera_matrix(msg.k, 3, 3, "K")
        try:
            distortion = check_distortion(str(getattr(msg, "distortion_model", "")),
                                          getattr(msg, "d", ()))
        except ValueError as e:
            raise InvalidMessage("bad_distortion", str(e)) from None
    roi = getattr(msg, "roi", None)
    if roi is not None and (int(roi.width), int(roi.height)) not in ((0, 0), (width, height)):
        x0, y0, w, h = (int(roi.x_offset), int(roi.y_offset), int(roi.width), int(roi.height))
        if rectified:
            raise InvalidMessage("bad_roi", f"an ROI ({w} x {h} at {x0}, {y0}) with "
                                            "camera.rectified is not supported")
        if w <= 0 or h <= 0 or x0 + w > width or y0 + h > height:
            raise InvalidMessage("bad_roi", f"ROI {w} x {h} at ({x0}, {y0}) is not inside "
                                            f"the {width} x {height} image")
        K[0, 2] -= x0
        K[1, 2] -= y0
        height, width = h, w
    return CameraModel(K, (height, width), distortion, R)


