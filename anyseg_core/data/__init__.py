"""Datasets that yield raw sensor data (:class:`anyseg_core.sensors.RawFrame`) and labels, and
the training-time wrappers (augmentation, deterministic sampling)."""
from __future__ import annotations

from typing import Mapping

import torch
from torch.utils.data import Dataset

from .registry import DATASETS, DatasetSpec, dataset_spec

__all__ = ["DATASETS", "DatasetSpec", "build_dataset", "class_info", "collate",
           "dataset_spec", "normalization_info", "rescale_info"]


def _spec(cfg: Mapping) -> DatasetSpec:
    return dataset_spec(cfg.get("data", {}).get("dataset", "synthetic"))


def build_dataset(cfg: Mapping, split: str, num_samples: int | None = None) -> Dataset:
    """The dataset named by ``cfg["data"]`` for ``split`` (train / val / test)."""
    data = cfg["data"]
    spec = dataset_spec(data["dataset"])
    if spec.needs_root and not data.get("root"):
        raise ValueError(f"data.dataset={spec.name} needs the {spec.name.upper()} folder: "
                         "--set data.root=DIR (training) or --root DIR (evaluation)")
    return spec.build(data, split, num_samples)


def class_info(cfg: Mapping) -> tuple[list[str], list[list[int]]]:
    """Class names and palette of the configured dataset (DELIVER's 25, else Cityscapes' 19)."""
    return _spec(cfg).classes()


def normalization_info(cfg: Mapping) -> dict:
    """modality -> (mean, std) the configured dataset's inputs are normalised with: DELIVER's
    images by its own convention, raw sensor data (synthetic, MUSES) by
    :data:`anyseg_core.modalities.NORMALIZATION`."""
    return _spec(cfg).normalization()


def rescale_info(cfg: Mapping) -> dict:
    """modality -> how the training augmentation rescales it (see
    :data:`anyseg_core.data.transforms.RESCALE_POLICIES`): as the configured dataset's own
    inference path resizes it (DELIVER's images by ``deliver_inputs``, raw sensor data as
    the sensors would draw it)."""
    return _spec(cfg).rescale()


def collate(items: list[dict]) -> dict:
    """Stack dataset items into a batch: ``inputs`` (per modality) and ``label`` become
    tensors; every other key (condition, index, raw frames) becomes a list."""
    mods = items[0]["inputs"].keys()
    batch = {"inputs": {m: torch.stack([it["inputs"][m] for it in items]) for m in mods},
             "label": torch.stack([it["label"] for it in items])}
    for key in items[0].keys() - {"inputs", "label"}:
        batch[key] = [it[key] for it in items]
    return batch
