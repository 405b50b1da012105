"""Depth image (ROS ``16UC1`` / ``32FC1``) -> 3-channel depth tensor."""
from __future__ import annotations

from typing import Optional

import torch

from .geometry import ArrayLike, as_tensor, resolve_device

DEPTH_ENCODINGS = ("16UC1", "32FC1")


def depth_to_tensor(depth: ArrayLike, encoding: str = "32FC1",
                    device: Optional[torch.device | str] = None,
                    max_depth: float = 100.0) -> torch.Tensor:
    """Convert an H x W (or H x W x 1) depth image to float32 ``[3, H, W]``.

    Encodings (the ROS depth conventions, nothing else is honoured):
    - ``16UC1``: unsigned integer millimetres (uint16; other integer dtypes accepted),
      0 = no measurement;
    - ``32FC1``: float metres; 0, negative and non-finite values = no measurement.
    Channels: 0 depth in metres clipped to [1 mm, ``max_depth``], 1 inverse depth
    1 / channel 0 in 1/m (so at most 1000), 2 validity (1 measured, 0 not); all three are
    0 where invalid.
    """
    if encoding not in DEPTH_ENCODINGS:
        shape = tuple(getattr(depth, "shape", ()))
        raise ValueError(f"unsupported depth encoding {encoding!r} (image shape {shape}); "
                         f"supported: {list(DEPTH_ENCODINGS)}")
    d = as_tensor(depth, device=resolve_device(depth, device=device))
    if d.ndim == 3 and d.shape[2] == 1:
        d = d[:, :, 0]
    integer = not d.is_floating_point() and d.dtype != torch.bool
    if d.ndim != 2 or (encoding == "16UC1") != integer:
        kind = "integer millimetre" if encoding == "16UC1" else "float metre"
        raise ValueError(f"depth encoding {encoding!r} needs an H x W {kind} image, got shape "
                         f"{tuple(d.shape)} {d.dtype}")
    if encoding == "16UC1":
        metres = d.to(torch.float32) / 1000.0
    else:
        metres = d.to(torch.float32)
    valid = torch.isfinite(metres) & (metres > 0)
    depth_m = torch.where(valid, metres.clamp(1e-3, max_depth), 0.0)
    inverse = torch.where(valid, 1.0 / depth_m, 0.0)
    return torch.stack((depth_m, inverse, valid.to(torch.float32)))
