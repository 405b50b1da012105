"""Datasets that yield raw sensor data (:class:`anyseg_core.sensors.RawFrame`) and labels, and
the training-time wrappers (augmentation, deterministic sampling)."""
from __future__ import annotations

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
        return SyntheticDataset(num_samples, split=split, seed=data["seed"],
                                size_hw=data["size"], modalities=data["modalities"],
                                conditions=data["conditions"])
    if name == "muses":
        from ..config import ConfigError
        from .muses import MusesDataset

        if not data.get("root"):
            raise ConfigError("data.dataset=muses needs the MUSES folder: --set data.root=DIR "
                             "(training) or --root DIR (evaluation)")
        # num_samples is not applied: a real split is used whole, and callers that want
        # fewer items cap them themselves (evaluate(num_samples=...)).
        return MusesDataset(data["root"], split=split, modalities=data["modalities"],
                            size_hw=data["size"], conditions=data.get("conditions"))
    if name == "deliver":
        raise NotImplementedError(f"the {name} reader is not written yet (issue 5); "
                                  f"train on data.dataset=synthetic for now")
    raise ValueError(f"unknown dataset {name!r}; expected one of {DATASETS}")


def class_info(cfg: Mapping) -> tuple[list[str], list[list[int]]]:
    """Class names and palette of the configured dataset."""
    return list(CITYSCAPES_CLASSES), [list(c) for c in CITYSCAPES_PALETTE]


def collate(items: list[dict]) -> dict:
    """Stack dataset items into a batch: ``inputs`` (per modality) and ``label`` become
    tensors; every other key (condition, index, raw frames) becomes a list."""
    mods = items[0]["inputs"].keys()
    batch = {"inputs": {m: torch.stack([it["inputs"][m] for it in items]) for m in mods},
             "label": torch.stack([it["label"] for it in items])}
    for key in items[0].keys() - {"inputs", "label"}:
        batch[key] = [it[key] for it in items]
    return batch
