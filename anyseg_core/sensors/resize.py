"""Resizing that respects what a pixel means: dense images blend, labels and sparse images never do.

All resizes share the pixel-centre convention of :func:`scale_intrinsics`: output pixel i
covers source coordinate (i + 0.5) * H / h - 0.5.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..modalities import CAMERA, DEPTH, EVENTS, LIDAR

PRIORITIES = ("first_channel_min_positive", "sum")


def _check(x: torch.Tensor, min_dim: int, what: str) -> None:
    if x.ndim < min_dim or x.ndim > 4:
        raise ValueError(f"{what} expects {min_dim}..4 dimensions (..., H, W), got shape "
                         f"{tuple(x.shape)}")


def _batched(x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Apply ``fn`` (which takes [B, C, H, W]) to [C, H, W] or [B, C, H, W]."""
    return fn(x.unsqueeze(0)).squeeze(0) if x.ndim == 3 else fn(x)


def resize_dense(x: torch.Tensor, size_hw: Sequence[int]) -> torch.Tensor:
    """Bilinear resize of a dense image ``[C, H, W]`` / ``[B, C, H, W]`` (camera).

    Downscaling is antialiased (a plain bilinear resize would alias fine texture); integer
    input is converted to float32. Returns ``x`` itself when it is floating point and the
    size already matches.

    Upscaling goes through the same antialiased kernel: its triangle filter then has a
    support of one source pixel, which is bilinear interpolation, and unlike PyTorch's plain
    bilinear kernel on the CPU its result does not depend on the number of threads (the plain
    one differs in the last bits between 1 and 2 threads), so training data are the same
    whether DataLoader workers (1 thread each) or the main process prepare them."""
    _check(x, 3, "resize_dense")
    h, w = int(size_hw[0]), int(size_hw[1])
    if not x.is_floating_point():
        x = x.to(torch.float32)
    if tuple(x.shape[-2:]) == (h, w):
        return x
    if x.device.type == "cpu" and x.dtype in (torch.float16, torch.bfloat16):
        # The antialiased kernel has no half-precision CPU version: in float32, cast back.
        return resize_dense(x.float(), (h, w)).to(x.dtype)
    return _batched(x, lambda b: F.interpolate(b, size=(h, w), mode="bilinear",
                                               align_corners=False, antialias=True))


def _nearest_index(n_src: int, n_dst: int, device: torch.device) -> torch.Tensor:
    # floor((i + 0.5) * n_src / n_dst) in exact integer arithmetic (no float rounding at ties).
    i = torch.arange(n_dst, device=device)
    return ((2 * i + 1) * n_src) // (2 * n_dst)


def resize_nearest(x: torch.Tensor, size_hw: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour resize of ``[H, W]``, ``[C, H, W]`` or ``[B, C, H, W]`` of any dtype
    (labels keep their ids, 255 included). Pixel-centre aligned ("nearest-exact")."""
    _check(x, 2, "resize_nearest")
    h, w = int(size_hw[0]), int(size_hw[1])
    H, W = x.shape[-2:]
    if (H, W) == (h, w):
        return x
    rows = _nearest_index(H, h, x.device)
    cols = _nearest_index(W, w, x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


def _priority_map(x: torch.Tensor, priority: str | torch.Tensor | None) -> torch.Tensor:
    """Float priority ``[B, 1, H, W]`` for ``x`` ``[B, C, H, W]``; empty pixels get -inf."""
    if isinstance(priority, torch.Tensor):
        pri = priority.to(device=x.device, dtype=torch.float32)
        if tuple(pri.shape[-2:]) != tuple(x.shape[-2:]) or pri.ndim not in (2, 3):
            raise ValueError(f"priority must be [H, W] or [B, H, W] matching the image "
                             f"{tuple(x.shape)}, got {tuple(pri.shape)}")
        return pri.reshape(-1, 1, *pri.shape[-2:]).expand(x.shape[0], 1, -1, -1)
    if priority is None or priority == "first_channel_min_positive":
        first = x[:, :1].to(torch.float32)
        return torch.where(first > 0, -first, -torch.inf)
    if priority == "sum":
        total = x.to(torch.float32).sum(1, keepdim=True)
        return torch.where((x != 0).any(1, keepdim=True), total, -torch.inf)
    raise ValueError(f"priority must be one of {PRIORITIES}, an [H, W] tensor or None, "
                     f"got {priority!r}")


def resize_sparse(x: torch.Tensor, size_hw: Sequence[int],
                  priority: str | torch.Tensor | None = None) -> torch.Tensor:
    """Resize a sparse image ``[C, H, W]`` / ``[B, C, H, W]`` without ever blending samples.

    Upscaling is nearest-neighbour. Downscaling splits the source into one block per output
    pixel (adaptive pooling blocks) and copies, all channels together, the pixel of the block
    with the highest priority:
    - ``None`` / ``"first_channel_min_positive"``: smallest positive channel 0 (nearest
      range or depth); pixels with channel 0 <= 0 count as empty;
    - ``"sum"``: largest channel sum (event images: the pixel with the most events);
      all-zero pixels count as empty;
    - an ``[H, W]`` (or ``[B, H, W]``) tensor: its largest value.
    A block with only empty pixels gives an empty pixel. Ties go to the first pixel in
    row-major order.
    """
    _check(x, 3, "resize_sparse")
    h, w = int(size_hw[0]), int(size_hw[1])
    H, W = x.shape[-2:]
    # Axes that grow are handled first by nearest neighbour, so pooling only ever shrinks.
    grown = (max(h, H), max(w, W))
    x = resize_nearest(x, grown)
    if isinstance(priority, torch.Tensor):
        priority = resize_nearest(priority, grown)
    if grown == (h, w):
        return x

    def pool(b: torch.Tensor) -> torch.Tensor:
        _, idx = F.adaptive_max_pool2d(_priority_map(b, priority), (h, w), return_indices=True)
        flat = b.flatten(-2)
        picked = flat.gather(-1, idx.flatten(-2).expand(-1, flat.shape[1], -1))
        return picked.view(*b.shape[:2], h, w)

    return _batched(x, pool)


def resize_modality(x: torch.Tensor, modality: str, size_hw: Sequence[int]) -> torch.Tensor:
    """Resize a raw (not yet normalised) 3-channel image of ``modality`` the right way:
    camera bilinear (antialiased), depth and LiDAR keeping the nearest sample, events keeping
    the pixel with the most events."""
    if modality == CAMERA:
        return resize_dense(x, size_hw)
    if modality in (DEPTH, LIDAR):
        return resize_sparse(x, size_hw, "first_channel_min_positive")
    if modality == EVENTS:
        return resize_sparse(x, size_hw, "sum")
    raise ValueError(f"unknown modality {modality!r}")
