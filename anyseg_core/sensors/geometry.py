"""Tensor conversion and camera geometry shared by the sensor converters.

Pixel convention everywhere: pixel (u, v) has its centre at integer coordinates, so the
image spans [-0.5, W - 0.5) x [-0.5, H - 0.5) and a point lands in column ``floor(u + 0.5)``.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch

ArrayLike = Any  # numpy.ndarray, torch.Tensor or a nested sequence of numbers


def resolve_device(*arrays: ArrayLike, device: Optional[torch.device | str] = None) -> torch.device:
    """``device`` if given, else the device of the first torch tensor in ``arrays``, else CPU."""
    if device is not None:
        return torch.device(device)
    for a in arrays:
        if isinstance(a, torch.Tensor):
            return a.device
    return torch.device("cpu")


def as_tensor(x: ArrayLike, dtype: Optional[torch.dtype] = None,
              device: Optional[torch.device | str] = None) -> torch.Tensor:
    """``x`` as a torch tensor on ``device`` (default: its own device, else CPU).

    ``dtype=None`` keeps the input's dtype. numpy arrays are wrapped without a copy where
    possible; byte-swapped, non-contiguous and read-only ones (e.g. ``np.frombuffer`` of a
    ROS message) are copied first, since torch cannot wrap them safely."""
    if isinstance(x, torch.Tensor):
        return x.to(device=device if device is not None else x.device, dtype=dtype)
    if isinstance(x, np.ndarray):
        if not x.dtype.isnative:
            x = x.astype(x.dtype.newbyteorder("="))
        if not x.flags.writeable:
            x = x.copy()
        t = torch.from_numpy(np.ascontiguousarray(x))
    else:
        t = torch.as_tensor(np.asarray(x))
    return t.to(device=device if device is not None else "cpu", dtype=dtype)


def _matrix(M: ArrayLike, shape: tuple[int, int], name: str, device: torch.device) -> torch.Tensor:
    t = as_tensor(M, torch.float64, device)
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} must be {shape[0]}x{shape[1]}, got shape {tuple(t.shape)}")
    return t


def scale_intrinsics(K: ArrayLike, src_hw: Sequence[int], dst_hw: Sequence[int]) -> torch.Tensor:
    """Intrinsics of an image resized from ``src_hw`` to ``dst_hw`` (float64 3x3 tensor).

    With pixel centres at integer coordinates a resize maps u' = (u + 0.5) * sx - 0.5 with
    sx = W' / W (rows likewise), i.e. K' = S @ K. The result is on K's device (CPU for numpy)."""
    device = resolve_device(K)
    K = _matrix(K, (3, 3), "K", device)
    sy = float(dst_hw[0]) / float(src_hw[0])
    sx = float(dst_hw[1]) / float(src_hw[1])
    S = torch.tensor([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]],
                     dtype=torch.float64, device=device)
    return S @ K


def rotation_homography(K_src: ArrayLike, K_dst: ArrayLike, R_dst_src: ArrayLike) -> torch.Tensor:
    """Homography ``K_dst @ R_dst_src @ inv(K_src)`` (float64 3x3) mapping pixels of a source
    camera to a destination camera that differs by a pure rotation (parallax is ignored, as
    the MUSES SDK does for events)."""
    device = resolve_device(K_dst, K_src, R_dst_src)
    K_src = _matrix(K_src, (3, 3), "K_src", device)
    K_dst = _matrix(K_dst, (3, 3), "K_dst", device)
    R = _matrix(R_dst_src, (3, 3), "R_dst_src", device)
    return K_dst @ R @ torch.linalg.inv(K_src)
