"""Datasets that yield raw sensor data (:class:`anyseg_core.sensors.RawFrame`) and labels, and
the training-time wrappers (augmentation, deterministic sampling)."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from torch.utils.data import Dataset

from ..modalities import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE

DATASETS = ("synthetic", "muses", "deliver")


def build_dataset(cfg: Mapping, split: str, num_samples: int | None = None) -> Dataset:
    """The dataset named by ``cfg["data"]`` for ``split`` (train / val / test)."""
    data = cfg["data"]
    name = data["dataset"]
    if name == "synthetic":
        from .synthetic import SyntheticDataset

        if num_samples is None:
            num_samples = data["train_samples"] if split == "train" else data["val_samples"]
        dataset = SyntheticDataset(num_samples, split=split, seed=data["seed"],
                                   size_hw=data["size"], modalities=data["modalities"],
                                   conditions=data["conditions"])
        if data.get("cache"):
            from .cache import CachedItems, cache_key

            return CachedItems(dataset, Path(data["cache"]) / cache_key(data, split))
        return dataset
    if name in ("muses", "deliver"):
        from ..config import ConfigError

        if name == "muses":
            from .muses import MusesDataset as RealDataset
        else:
            from .deliver import DeliverDataset as RealDataset
        if not data.get("root"):
            raise ConfigError(f"data.dataset={name} needs the {name.upper()} folder: --set "
                              "data.root=DIR (training) or --root DIR (evaluation)")
        # num_samples is not applied: a real split is used whole, and callers that want
        # fewer items cap them themselves (evaluate(num_samples=...)). data.conditions:
        # MUSES weather-time ("fog-night"); DELIVER conditions and corner cases
        # ("fog", "motionblur", "fog-motionblur").
        extra = {"event_anchor": data.get("event_anchor", "last")} if name == "muses" else {}
        return RealDataset(data["root"], split=split, modalities=data["modalities"],
                           size_hw=data["size"], conditions=data.get("conditions"), **extra)
    raise ValueError(f"unknown dataset {name!r}; expected one of {DATASETS}")


def class_info(cfg: Mapping) -> tuple[list[str], list[list[int]]]:
    """Class names and palette of the configured dataset (DELIVER's 25, else Cityscapes' 19)."""
    if cfg.get("data", {}).get("dataset") == "deliver":
        from .deliver import CLASSES, PALETTE

        return list(CLASSES), [list(c) for c in PALETTE]
    return list(CITYSCAPES_CLASSES), [list(c) for c in CITYSCAPES_PALETTE]


def normalization_info(cfg: Mapping) -> dict:
    """modality -> (mean, std) the configured dataset's inputs are normalised with: DELIVER's
    images by its own convention, raw sensor data (synthetic, MUSES) by
    :data:`anyseg_core.modalities.NORMALIZATION`."""
    if cfg.get("data", {}).get("dataset") == "deliver":
        from .deliver import NORMALIZATION as table
    else:
        from ..modalities import NORMALIZATION as table
    return dict(table)


def rescale_info(cfg: Mapping) -> dict:
    """modality -> how the training augmentation rescales it (see
    :data:`anyseg_core.data.transforms.RESCALE_POLICIES`): as the configured dataset's own
    inference path resizes it (DELIVER's images by ``deliver_inputs``, raw sensor data as
    the sensors would draw it)."""
    if cfg.get("data", {}).get("dataset") == "deliver":
        from .deliver import RESCALE as table
    else:
        from .transforms import SENSOR_RESCALE as table
    return dict(table)


def collate(items: list[dict]) -> dict:
    """Stack dataset items into a batch: ``inputs`` (per modality) and ``label`` become
    tensors; every other key (condition, index, raw frames) becomes a list."""
    mods = items[0]["inputs"].keys()
    batch = {"inputs": {m: torch.stack([it["inputs"][m] for it in items]) for m in mods},
             "label": torch.stack([it["label"] for it in items])}
    for key in items[0].keys() - {"inputs", "label"}:
        batch[key] = [it[key] for it in items]
    return batch
