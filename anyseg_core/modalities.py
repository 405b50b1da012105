"""Modality names, Cityscapes classes and per-modality normalisation.

A *modality* is one aligned 3-channel image per sample (see docs/method.md). The names
below are the only spelling used anywhere in the project (configs, checkpoints, the node).
"""
from __future__ import annotations

from itertools import combinations
from typing import Iterable, Sequence

CAMERA = "camera"
EVENTS = "events"
LIDAR = "lidar"
DEPTH = "depth"
ALL_MODALITIES = (CAMERA, EVENTS, LIDAR, DEPTH)
#: One letter per modality, for subsets in tables ("CEL" = camera + events + LiDAR).
ABBREV = {CAMERA: "C", EVENTS: "E", LIDAR: "L", DEPTH: "D"}

#: Modalities whose images are sparse (most pixels empty). They are never resized with
#: bilinear interpolation: that would smear returns/events into their empty neighbours.
SPARSE_MODALITIES = frozenset({EVENTS, LIDAR})

IGNORE_INDEX = 255

#: The 19 Cityscapes train ids, as used by MUSES (255 = ignore).
CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
    "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
    "bus", "train", "motorcycle", "bicycle",
)
CITYSCAPES_PALETTE = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
)
CLASS_ID = {name: i for i, name in enumerate(CITYSCAPES_CLASSES)}

#: Per-channel (mean, std) applied after the raw -> 3-channel conversion.
#: camera: ImageNet statistics on [0, 1] RGB.
#: lidar: range (m), intensity, z (m) -- the statistics used by the MUSES authors' group.
#: events: positive count, negative count (MUSES statistics), recency in [0, 1] (ours; the
#:   third channel is 0 in MUSES, see anyseg_core.sensors.events).
#: depth: depth (m), inverse depth (1/m), validity (see anyseg_core.sensors.depth).
NORMALIZATION: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    CAMERA: ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    LIDAR: ((4.917, 6.149, 0.270), (13.35, 17.64, 1.232)),
    EVENTS: ((0.1258, 0.1273, 0.05), (0.544, 0.476, 0.2)),
    DEPTH: ((15.0, 0.15, 0.9), (15.0, 0.2, 0.3)),
}


def check_modalities(modalities: Iterable[str]) -> tuple[str, ...]:
    """Return ``modalities`` as a tuple, raising a clear error on unknown or repeated names."""
    mods = tuple(modalities)
    unknown = [m for m in mods if m not in ALL_MODALITIES]
    if unknown:
        raise ValueError(f"unknown modality {unknown}; known: {list(ALL_MODALITIES)}")
    if len(set(mods)) != len(mods) or not mods:
        raise ValueError(f"modalities must be a non-empty list without repeats, got {list(mods)}")
    return mods


def all_subsets(modalities: Sequence[str]) -> list[tuple[str, ...]]:
    """Every non-empty subset of ``modalities`` (2^M - 1), smallest first, in list order."""
    mods = check_modalities(modalities)
    return [c for k in range(1, len(mods) + 1) for c in combinations(mods, k)]
