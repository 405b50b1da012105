"""The data sets the pipeline knows, in one table: how to build one, its classes and palette,
how its inputs are normalised and how the training augmentation rescales them, whether it is
read from ``data.root`` and whether ``data.cache`` applies.

Data, config checks and evaluation look a data set up here (:data:`DATASETS`) instead of
switching on its name; adding one is adding an entry. The readers are imported when a data
set is built, so this table costs nothing to import.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Optional

from torch.utils.data import Dataset

from ..modalities import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE


@dataclass(frozen=True)
class DatasetSpec:
    """How the pipeline treats one data set (see the module's docstring)."""

    name: str
    #: (cfg["data"], split, num_samples or None) -> the data set
    build: Callable[[Mapping, str, Optional[int]], Dataset]
    #: () -> (class names, palette [[r, g, b], ...])
    classes: Callable[[], tuple[list[str], list[list[int]]]]
    #: () -> modality -> (mean, std)
    normalization: Callable[[], dict]
    #: () -> modality -> rescale policy (anyseg_core.data.transforms.RESCALE_POLICIES)
    rescale: Callable[[], dict]
    #: read from data.root (a real data set) rather than made (the synthetic world)
    needs_root: bool
    #: data.cache applies (items are a pure function of the settings and the index)
    cacheable: bool


def _cityscapes() -> tuple[list[str], list[list[int]]]:
    return list(CITYSCAPES_CLASSES), [list(c) for c in CITYSCAPES_PALETTE]


def _raw_normalization() -> dict:
    from ..modalities import NORMALIZATION
    return dict(NORMALIZATION)


def _sensor_rescale() -> dict:
    from .transforms import SENSOR_RESCALE
    return dict(SENSOR_RESCALE)


def _synthetic(data: Mapping, split: str, num_samples: Optional[int]) -> Dataset:
    from .cache import synthetic_items

    if num_samples is None:
        num_samples = data["train_samples"] if split == "train" else data["val_samples"]
    return synthetic_items(data, split, num_samples)


# num_samples is not applied to a real split: it is used whole, and callers that want fewer
# items cap them themselves (evaluate(num_samples=...)). data.conditions: MUSES weather-time
# ("fog-night"); DELIVER conditions and corner cases ("fog", "motionblur", "fog-motionblur").
def _muses(data: Mapping, split: str, num_samples: Optional[int]) -> Dataset:
    from .muses import MusesDataset

    return MusesDataset(data["root"], split=split, modalities=data["modalities"],
                        size_hw=data["size"], conditions=data.get("conditions"),
                        event_anchor=data.get("event_anchor", "last"),
                        lidar_intensity=data.get("lidar_intensity", "raw"))


def _deliver(data: Mapping, split: str, num_samples: Optional[int]) -> Dataset:
    from .deliver import DeliverDataset

    return DeliverDataset(data["root"], split=split, modalities=data["modalities"],
                          size_hw=data["size"], conditions=data.get("conditions"))


def _deliver_classes() -> tuple[list[str], list[list[int]]]:
    from .deliver import CLASSES, PALETTE
    return list(CLASSES), [list(c) for c in PALETTE]


def _deliver_normalization() -> dict:
    from .deliver import NORMALIZATION
    return dict(NORMALIZATION)


def _deliver_rescale() -> dict:
    from .deliver import RESCALE
    return dict(RESCALE)


DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in (
    DatasetSpec("synthetic", _synthetic, _cityscapes, _raw_normalization, _sensor_rescale,
                needs_root=False, cacheable=True),
    DatasetSpec("muses", _muses, _cityscapes, _raw_normalization, _sensor_rescale,
                needs_root=True, cacheable=False),
    DatasetSpec("deliver", _deliver, _deliver_classes, _deliver_normalization,
                _deliver_rescale, needs_root=True, cacheable=False),
)}


def dataset_spec(name: str) -> DatasetSpec:
    """The entry of ``name``; ValueError naming the known ones otherwise."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; expected one of {list(DATASETS)}") from None
