"""Raw sensor data -> aligned, normalised 3-channel network inputs (pure PyTorch).

:func:`prepare_inputs` is the one path used by training, evaluation and the ROS node; the
converters it is built from are exported for tools and tests. Pixel centres are at integer
coordinates everywhere (see :mod:`anyseg_core.sensors.geometry`).
"""
from .camera import CAMERA_ENCODINGS, camera_to_tensor
from .depth import DEPTH_ENCODINGS, depth_to_tensor
from .distortion import check_distortion, distort
from .events import render_events
from .frame import Events, RawFrame
from .geometry import as_tensor, resolve_device, rotation_homography, scale_intrinsics
from .lidar import intensity_percentile, normalize_intensity, project_lidar
from .normalize import denormalize, normalization_of, normalize
from .pipeline import prepare_inputs, prepare_label
from .resize import resize_dense, resize_modality, resize_nearest, resize_sparse

__all__ = [
    "CAMERA_ENCODINGS", "DEPTH_ENCODINGS", "Events", "RawFrame", "as_tensor",
    "camera_to_tensor", "check_distortion", "denormalize", "depth_to_tensor", "distort",
    "intensity_percentile", "normalization_of", "normalize", "normalize_intensity",
    "prepare_inputs", "prepare_label", "project_lidar",
    "render_events", "resize_dense", "resize_modality", "resize_nearest", "resize_sparse",
    "resolve_device", "rotation_homography", "scale_intrinsics",
]
