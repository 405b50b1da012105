"""Camera image (ROS ``sensor_msgs/Image`` encodings) -> float32 RGB tensor in [0, 1]."""
from __future__ import annotations

from typing import Optional

import torch

from .geometry import ArrayLike, as_tensor, resolve_device

#: encoding -> (channels in the input, dtype, input channel index of R, G, B).
#: OpenCV's 8UC3 is taken as bgr8 (cv2.imread order) and 8UC1 as mono8.
_ENCODINGS: dict[str, tuple[int, torch.dtype, tuple[int, int, int]]] = {
    "rgb8": (3, torch.uint8, (0, 1, 2)),
    "bgr8": (3, torch.uint8, (2, 1, 0)),
    "8UC3": (3, torch.uint8, (2, 1, 0)),
    "rgba8": (4, torch.uint8, (0, 1, 2)),
    "bgra8": (4, torch.uint8, (2, 1, 0)),
    "mono8": (1, torch.uint8, (0, 0, 0)),
    "8UC1": (1, torch.uint8, (0, 0, 0)),
    "mono16": (1, torch.uint16, (0, 0, 0)),
}
CAMERA_ENCODINGS = tuple(_ENCODINGS)


def camera_to_tensor(image: ArrayLike, encoding: str = "rgb8",
                     device: Optional[torch.device | str] = None) -> torch.Tensor:
    """Convert an H x W x C (H x W for mono) image to float32 RGB ``[3, H, W]`` in [0, 1].

    Encodings: rgb8, bgr8, rgba8, bgra8 (alpha dropped), mono8 (replicated to 3 channels),
    mono16 (divided by 65535, replicated), 8UC3 (taken as bgr8, OpenCV's order) and 8UC1
    (taken as mono8). 8-bit encodings need uint8 data, mono16 uint16. The conversion to
    float happens on ``device``, so only the raw bytes travel to a GPU.
    """
    if encoding not in _ENCODINGS:
        shape = tuple(getattr(image, "shape", ()))
        raise ValueError(f"unsupported camera encoding {encoding!r} (image shape {shape}); "
                         f"supported: {list(CAMERA_ENCODINGS)}")
    channels, dtype, rgb = _ENCODINGS[encoding]
    img = as_tensor(image, device=resolve_device(image, device=device))
    if channels == 1 and img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    shape_ok = img.ndim == 2 if channels == 1 else (img.ndim == 3 and img.shape[2] == channels)
    if not shape_ok or img.dtype != dtype:
        want = "H x W" if channels == 1 else f"H x W x {channels}"
        raise ValueError(f"camera encoding {encoding!r} needs a {want} {dtype} image, got shape "
                         f"{tuple(img.shape)} {img.dtype}")
    scale = 65535.0 if dtype == torch.uint16 else 255.0
    if channels == 1:
        return (img.to(torch.float32) / scale).expand(3, -1, -1).contiguous()
    return img.permute(2, 0, 1)[list(rgb)].to(torch.float32).div_(scale)
