"""An on-disk cache of the synthetic world's network inputs (``data.cache`` in a training config).

Rendering a synthetic sample costs about 23 ms of an idle core at 128x224
(benchmarks/bench_synthetic.py, docs/benchmarks.md; several times that while training shares
the cores), and a training run reads each of its 2,000 scenes once per epoch: six times in the
1,500-step experiment, and once more for every row of it. The items are a pure function of the
world's settings and the index (augmentation is applied afterwards, by the training loop), so
they can be rendered once and read back from disk. A GPU is fed by reading files, not by rendering.

Layout: ``<cache>/<split>-<key>/<index>.npz`` holds one item (float32 inputs per modality, the
label as uint8, the condition name). ``key`` hashes the settings that decide the items (seed,
split, size, the set of modalities, the conditions by their canonical names, the sensor rig
and the LiDAR intensity normalisation where they are not the defaults), numpy's version
(its random streams) and the source code of the modules that make items (the world, the sensor
models of ``anyseg_core.sensors``): editing them starts a new folder instead of serving stale
items. Configs that differ only in the order of the modalities share a folder; items are read
back in each one's own order. Files are written to a temporary name and renamed, so processes
and DataLoader workers can share a cache; an unreadable file is rendered again (with a warning)
and replaced.

Prefill it with every core before training (optional; a run fills it as it goes)::

    python -m anyseg_core.prefill --config config/train_synthetic_teacher.yaml \\
        --set data.cache=runs/cache --jobs 16 [--splits train,val]

(:mod:`anyseg_core.prefill`; ``python -m anyseg_core.data.cache`` is its old, deprecated
name.) This module imports no config: the config imports the data registry, which builds
the synthetic world through :func:`synthetic_items`.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from torch.utils.data import Dataset

# Bump when the file layout changes.
FORMAT = 1
_PACKAGE = Path(__file__).resolve().parents[1]


#: Modules of the synthetic package that do not take part in making an item.
_NOT_ITEMS = {"export.py", "__main__.py"}


def item_sources() -> list[Path]:
    """The source files that decide a synthetic item: the world (not its exporter or command
    line), the sensor models and the modality table."""
    world = [f for f in (_PACKAGE / "data" / "synthetic").glob("*.py")
             if f.name not in _NOT_ITEMS]
    return sorted([*world, *(_PACKAGE / "sensors").glob("*.py"), _PACKAGE / "modalities.py"])


def code_digest() -> str:
    """A hash of :func:`item_sources`."""
    h = hashlib.sha1()
    for f in item_sources():
        h.update(f.relative_to(_PACKAGE).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def cache_key(data: Mapping, split: str) -> str:
    """The folder name of ``split`` of the synthetic world described by ``data`` (a config's
    ``data`` section). What does not change the items does not change the key: the order of
    the modalities and the spelling of a condition (``night-fog`` is ``fog-night``)."""
    from .synthetic.conditions import Condition

    conditions = data.get("conditions")
    spec = {"format": FORMAT, "split": split, "seed": int(data["seed"]),
            "size": [int(v) for v in data["size"]], "modalities": sorted(data["modalities"]),
            "conditions": [Condition.parse(c).name for c in conditions] if conditions else None,
            "numpy": np.__version__, "code": code_digest()}
    # Sensor rig and LiDAR intensity normalisation: only when not the default, so the keys
    # of the MUSES-like world stay what they were.
    for name, default in (("rig", "muses"), ("lidar_intensity", "raw")):
        if data.get(name, default) != default:
            spec[name] = data[name]
    return f"{split}-" + hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


class CachedItems(Dataset):
    """``base``'s items, read from ``folder`` when there and rendered (then stored) when not.

    ``base`` must yield dicts with ``inputs`` (modality -> float32 tensor), ``label`` (int64,
    values in 0..254 and 255), ``condition`` and ``index``, and be deterministic per index
    (the synthetic world without ``return_raw``). ``rendered`` counts the items this object
    rendered (per process)."""

    def __init__(self, base: Dataset, folder: str | os.PathLike) -> None:
        if getattr(base, "return_raw", False):
            raise ValueError("CachedItems stores network inputs only; base has return_raw set")
        self.base = base
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.rendered = 0
        for attr in ("classes", "palette", "modalities", "size_hw", "split"):
            if hasattr(base, attr):
                setattr(self, attr, getattr(base, attr))

    def __len__(self) -> int:
        return len(self.base)

    def path(self, index: int) -> Path:
        return self.folder / f"{index}.npz"

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self.base):
            raise IndexError(f"index {index} out of range for {len(self.base)} samples")
        path = self.path(index)
        if path.exists():
            try:
                return self._read(path, index)
            except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as err:
                warnings.warn(f"data cache: {path} is unreadable ({err}); rendering it again",
                              RuntimeWarning, stacklevel=2)
        item = self.base[index]
        self._write(path, item)
        self.rendered += 1
        return item

    def _read(self, path: Path, index: int) -> dict:
        with np.load(path, allow_pickle=False) as z:
            names = [str(m) for m in z["modalities"]]
            # in the order the base dataset gives them (the key ignores the order)
            order = getattr(self, "modalities", None)
            if order is not None and sorted(order) == sorted(names):
                names = list(order)
            inputs = {m: torch.from_numpy(z[f"input_{m}"]) for m in names}
            label = torch.from_numpy(z["label"].astype(np.int64))
            condition = str(z["condition"])
        return {"inputs": inputs, "label": label, "condition": condition, "index": index}

    def _write(self, path: Path, item: Mapping) -> None:
        label = item["label"].numpy()
        if label.min() < 0 or label.max() > 255:
            raise ValueError(f"label values must lie in 0..255 to be cached, got "
                             f"{label.min()}..{label.max()}")
        arrays = {f"input_{m}": v.numpy() for m, v in item["inputs"].items()}
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=f".{path.stem}.", suffix=".npz")
        try:
            os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide the cache from other users
            with os.fdopen(fd, "wb") as f:
                np.savez(f, modalities=np.array(list(item["inputs"])),
                         label=label.astype(np.uint8), condition=np.array(item["condition"]),
                         **arrays)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def synthetic_items(data: Mapping, split: str, num_samples: int) -> Dataset:
    """The synthetic world's ``split`` as ``data`` (a config's data section) describes it,
    read through the cache in ``data["cache"]`` when it is set."""
    from .synthetic import SyntheticDataset

    dataset = SyntheticDataset(num_samples, split=split, seed=data["seed"],
                               size_hw=data["size"], modalities=data["modalities"],
                               conditions=data["conditions"],
                               sensor_rig=data.get("rig", "muses"),
                               lidar_intensity=data.get("lidar_intensity", "raw"))
    if data.get("cache"):
        return CachedItems(dataset, Path(data["cache"]) / cache_key(data, split))
    return dataset


if __name__ == "__main__":  # the old name of ``python -m anyseg_core.prefill``
    import sys
    import warnings

    warnings.warn("python -m anyseg_core.data.cache is deprecated; use python -m "
                  "anyseg_core.prefill", DeprecationWarning, stacklevel=1)
    from anyseg_core.prefill import main

    main(sys.argv[1:])
