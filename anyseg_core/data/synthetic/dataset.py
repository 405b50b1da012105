"""A torch Dataset over the synthetic world: network inputs through anyseg_core.sensors."""
from __future__ import annotations

from dataclasses import replace
from typing import Iterable, Optional, Sequence

import numpy as np
from torch.utils.data import Dataset

from ...modalities import (CAMERA, CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, EVENTS, LIDAR,
                           check_modalities)
from ...sensors import prepare_inputs, prepare_label
from .. import collate
from .conditions import Condition, sample_condition
from .rig import RigConfig, SampleOptions, render_frame
from .scene import generate_scene
from .sensor_variants import check_rig, rig_for

SPLITS = {"train": 0, "val": 1, "test": 2}


def sample_seed(seed: int, split: str, index: int) -> int:
    """The seed of sample ``index`` of ``split``: independent streams per split, stable
    whatever the order in which samples are drawn (safe with DataLoader workers)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    ss = np.random.SeedSequence([int(seed), SPLITS[split], int(index)])
    return int(ss.generate_state(1, np.uint32)[0])


class SyntheticDataset(Dataset):
    """``num_samples`` independent street scenes, each rendered by every sensor of the rig.

    Items are dicts: ``inputs`` (modality -> normalised float32 [3, H, W]; only the requested
    modalities), ``label`` (int64 [H, W], 255 = ignore), ``condition`` (name), ``index``,
    and ``raw`` (the :class:`~anyseg_core.sensors.RawFrame`) when ``return_raw``.
    Use :func:`collate` with a DataLoader when ``return_raw`` is set.

    conditions: None samples MUSES-like conditions per item; a list of condition names
    cycles through them (item i gets ``conditions[i % len]``).

    sensor_rig: ``muses`` renders every item with ``rig`` (default the MUSES-like rig),
    ``random`` with a rig drawn from the item's seed, a name of
    :data:`~.sensor_variants.NAMED_RIGS` with that rig (docs/synthetic-world.md).
    lidar_intensity: ``raw`` or ``pNN``, the per-sweep intensity normalisation of
    :func:`~anyseg_core.sensors.prepare_inputs`.
    """

    classes = CITYSCAPES_CLASSES
    palette = CITYSCAPES_PALETTE

    def __init__(self, num_samples: int = 1000, split: str = "train", seed: int = 0,
                 size_hw: Sequence[int] = (288, 512),
                 modalities: Iterable[str] = (CAMERA, EVENTS, LIDAR),
                 conditions: Optional[Sequence[str]] = None, rig: Optional[RigConfig] = None,
                 render_hw: Optional[Sequence[int]] = None, event_window: float = 0.03,
                 lidar_dilate: int = 0, return_raw: bool = False, sensor_rig: str = "muses",
                 lidar_intensity: str = "raw") -> None:
        self.num_samples = int(num_samples)
        self.split = split
        self.seed = int(seed)
        self.size_hw = (int(size_hw[0]), int(size_hw[1]))
        self.modalities = check_modalities(modalities)
        self.conditions = [Condition.parse(c) for c in conditions] if conditions else None
        # Render at the network size unless asked otherwise: the cheapest faithful choice.
        rig = rig or RigConfig()
        self.rig = replace(rig, image_hw=tuple(render_hw or self.size_hw),
                           event_window=event_window)
        self.event_window = event_window
        self.lidar_dilate = lidar_dilate
        self.return_raw = return_raw
        self.sensor_rig = check_rig(sensor_rig)
        self.lidar_intensity = lidar_intensity
        sample_seed(self.seed, split, 0)  # validates the split early

    def __len__(self) -> int:
        return self.num_samples

    def condition_of(self, index: int) -> Condition:
        if self.conditions:
            return self.conditions[index % len(self.conditions)]
        rng = np.random.default_rng(sample_seed(self.seed, self.split, index) ^ 0xC0D)
        return sample_condition(rng)

    def raw(self, index: int):
        """The :class:`RawFrame` of item ``index`` (every sensor the modalities need)."""
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        s = sample_seed(self.seed, self.split, index)
        mods = set(self.modalities)
        # The camera render is always made: the label comes from it (depth is free then).
        options = SampleOptions(camera=CAMERA in mods or self.return_raw, depth=True,
                                lidar=LIDAR in mods or self.return_raw,
                                events=EVENTS in mods or self.return_raw)
        return render_frame(self.rig_of(index), generate_scene(s), self.condition_of(index),
                            s, options=options)

    def rig_of(self, index: int) -> RigConfig:
        """The rig that renders item ``index`` (see ``sensor_rig``)."""
        return rig_for(self.sensor_rig, sample_seed(self.seed, self.split, index), self.rig)

    def __getitem__(self, index: int) -> dict:
        frame = self.raw(index)
        item = {
            "inputs": prepare_inputs(frame, self.size_hw, self.modalities,
                                     event_window=self.event_window,
                                     lidar_dilate=self.lidar_dilate,
                                     lidar_intensity=self.lidar_intensity),
            "label": prepare_label(frame.label, self.size_hw),
            "condition": frame.meta["condition"],
            "index": index,
        }
        if self.return_raw:
            item["raw"] = frame
        return item


__all__ = ["SyntheticDataset", "collate", "sample_seed"]
