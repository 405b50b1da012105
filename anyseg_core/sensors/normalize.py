"""Per-modality, per-channel normalisation ``(x - mean) / std`` (constants in modalities.py)."""
from __future__ import annotations

import torch

from ..modalities import NORMALIZATION


Triple = tuple[float, float, float]


def normalization_of(modality: str) -> tuple[Triple, Triple]:
    """The per-channel (mean, std) triples of ``modality``."""
    try:
        return NORMALIZATION[modality]
    except KeyError:
        raise ValueError(f"no normalisation for modality {modality!r}; known: "
                         f"{list(NORMALIZATION)}") from None


def _stats(x: torch.Tensor, modality: str) -> tuple[torch.Tensor, torch.Tensor]:
    if x.ndim not in (3, 4) or x.shape[-3] != 3:
        raise ValueError(f"expected a [3, H, W] or [B, 3, H, W] {modality} tensor, "
                         f"got shape {tuple(x.shape)}")
    mean, std = normalization_of(modality)
    dtype = x.dtype if x.is_floating_point() else torch.float32
    return (torch.tensor(mean, dtype=dtype, device=x.device).view(3, 1, 1),
            torch.tensor(std, dtype=dtype, device=x.device).view(3, 1, 1))


def normalize(x: torch.Tensor, modality: str) -> torch.Tensor:
    """``(x - mean) / std`` per channel on ``[3, H, W]`` or ``[B, 3, H, W]``; returns a new tensor.

    Sparse modalities are normalised everywhere: empty pixels become ``-mean / std``, a
    constant the network learns to read as "no data"."""
    mean, std = _stats(x, modality)
    return (x - mean) / std


def denormalize(x: torch.Tensor, modality: str) -> torch.Tensor:
    """Inverse of :func:`normalize`: ``x * std + mean`` per channel."""
    mean, std = _stats(x, modality)
    return x * std + mean
