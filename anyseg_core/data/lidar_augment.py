"""Training-time augmentation for another LiDAR than the training rig's (``augment.lidar_*``).

A checkpoint trained on one LiDAR meets others: fewer or more rings, sparser or denser
points, another intensity scale. :class:`LidarAugment` changes the projected LiDAR image of a
training item (``prepare_inputs``' ``[3, H, W]``: range, intensity, z in the LiDAR frame,
normalised), so it works on items read back from ``data.cache`` as well as on rendered ones:

- **rings** (``lidar_ring_p``): keep every k-th ring only (k drawn from
  ``lidar_ring_factors``, a random phase), as a unit with k times fewer rings over the same
  field of view. A pixel's ring is found from its elevation, asin(z / range) in the LiDAR
  frame: the elevations of the points present are sorted and split where consecutive ones
  differ by more than :data:`RING_GAP_DEG`; each group is a ring. That holds for units whose
  rings are cones about their z axis (the synthetic world's, spinning units); for a real
  unit whose beams wander in elevation, the groups may merge.
- **density** (``lidar_density_p``): keep a random fraction of the points (drawn from
  ``lidar_density_keep``): fewer columns, more dropout.
- **intensity** (``lidar_intensity_p``): multiply every intensity by a factor drawn
  log-uniformly from ``lidar_intensity_scale`` (0.0039 to 4 by default: a driver that
  publishes 0..1 rather than 0..255, or a brighter response). Moot with
  ``data.lidar_intensity=pNN``, whose normalisation removes the scale.

Each is applied with its probability, in that order; a removed point becomes "no data" (the
normalised value of a raw zero). Randomness comes from the ``torch.Generator`` passed in, so
an item's augmentation depends on (seed, epoch, index) only, as :class:`JointAugment`'s does;
with every probability 0 (the default) nothing is drawn and the inputs are returned as
they came.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch

from ..modalities import LIDAR
from ..sensors import normalization_of

#: Elevations (degrees) of points on one ring differ by less than this; rings by more (the
#: synthetic world's rigs have 0.2° or more between rings).
RING_GAP_DEG = 0.1


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def ring_ids(raw: torch.Tensor, valid: torch.Tensor, gap_deg: float = RING_GAP_DEG
             ) -> torch.Tensor:
    """The ring of each pixel of a raw (denormalised) LiDAR image ``[3, H, W]``: 0, 1, ...
    from the lowest elevation up among the points present (``valid``); -1 elsewhere."""
    elev = torch.rad2deg(torch.asin((raw[2] / raw[0].clamp_min(1e-6)).clamp(-1, 1)))
    ids = torch.full(valid.shape, -1, dtype=torch.int64, device=raw.device)
    e = elev[valid].to(torch.float64)
    if e.numel() == 0:
        return ids
    order = torch.argsort(e)
    sorted_e = e[order]
    start = torch.zeros_like(sorted_e, dtype=torch.int64)
    start[1:] = (sorted_e[1:] - sorted_e[:-1] > gap_deg).to(torch.int64)
    ring_sorted = torch.cumsum(start, 0)
    ring = torch.empty_like(ring_sorted)
    ring[order] = ring_sorted
    ids[valid] = ring
    return ids


class LidarAugment:
    """Callable on ``(inputs, generator)`` -> inputs with the LiDAR image changed (see the
    module's docstring); other modalities are returned untouched. ``normalization``: the
    LiDAR's (mean, std) per channel (default the raw-sensor table)."""

    def __init__(self, ring_p: float = 0.0, ring_factors: Sequence[int] = (2, 4),
                 density_p: float = 0.0, density_keep: Sequence[float] = (0.3, 1.0),
                 intensity_p: float = 0.0, intensity_scale: Sequence[float] = (0.0039, 4.0),
                 normalization: Mapping | None = None) -> None:
        self.ring_p, self.ring_factors = float(ring_p), [int(k) for k in ring_factors]
        self.density_p, self.density_keep = float(density_p), tuple(map(float, density_keep))
        self.intensity_p = float(intensity_p)
        self.intensity_scale = tuple(map(float, intensity_scale))
        self.mean_std = (normalization[LIDAR] if normalization is not None and LIDAR in
                         normalization else normalization_of(LIDAR))

    @classmethod
    def from_config(cls, aug: Mapping, normalization: Mapping | None = None) -> "LidarAugment":
        return cls(aug["lidar_ring_p"], aug["lidar_ring_factors"], aug["lidar_density_p"],
                   aug["lidar_density_keep"], aug["lidar_intensity_p"],
                   aug["lidar_intensity_scale"], normalization)

    @property
    def enabled(self) -> bool:
        return self.ring_p > 0 or self.density_p > 0 or self.intensity_p > 0

    def __call__(self, inputs: dict[str, torch.Tensor], g: torch.Generator
                 ) -> dict[str, torch.Tensor]:
        if not self.enabled or LIDAR not in inputs:
            return inputs
        x = inputs[LIDAR]
        # Every draw is made whatever fires, so the stream does not depend on the outcomes.
        ring_on = bool(torch.rand((), generator=g) < self.ring_p)
        k = self.ring_factors[int(torch.randint(0, len(self.ring_factors), (),
                                                generator=g))]
        phase = int(torch.randint(0, k, (), generator=g))
        density_on = bool(torch.rand((), generator=g) < self.density_p)
        keep_frac = _uniform(g, *self.density_keep)
        seed = int(torch.randint(0, 2 ** 62, (), generator=g))
        intensity_on = bool(torch.rand((), generator=g) < self.intensity_p)
        lo, hi = self.intensity_scale
        factor = math.exp(_uniform(g, math.log(lo), math.log(hi)))
        if not (ring_on or density_on or intensity_on):
            return inputs
        mean = x.new_tensor(self.mean_std[0]).view(3, 1, 1)
        std = x.new_tensor(self.mean_std[1]).view(3, 1, 1)
        raw = x * std + mean
        valid = raw[0] > 1e-3  # a range; "no data" is a raw 0
        drop = torch.zeros_like(valid)
        if ring_on:
            ids = ring_ids(raw, valid)
            drop |= valid & ((ids + phase) % k != 0)
        if density_on:
            r = torch.rand(valid.shape, generator=torch.Generator().manual_seed(seed))
            drop |= valid & (r.to(x.device) >= keep_frac)
        out = x.clone()
        if intensity_on:
            out[1] = torch.where(valid, (raw[1] * factor - mean[1]) / std[1], x[1])
        out[:, drop] = (-mean / std).view(3, 1).to(x.dtype).expand(3, int(drop.sum()))
        return {**inputs, LIDAR: out}


__all__ = ["LidarAugment", "RING_GAP_DEG", "ring_ids"]
