"""Sensor-shift training for the LiDAR (anyseg_core/data/lidar_augment.py, ``augment.lidar_*``)
and the per-sweep intensity normalisation (``data.lidar_intensity``): off changes nothing;
on, fewer rings, fewer points, scaled intensities; the normalised input does not depend on
the scale a driver publishes; the choice travels in the checkpoint and inference applies it."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from anyseg_core import checkpoint as ckpt
from anyseg_core.config import DEFAULTS, ConfigError, load_config
from anyseg_core.data import normalization_info, rescale_info
from anyseg_core.data.lidar_augment import LidarAugment, ring_ids
from anyseg_core.data.synthetic import SyntheticDataset
from anyseg_core.data.transforms import JointAugment
from anyseg_core.modalities import LIDAR
from anyseg_core.runtime import Runtime
from anyseg_core.sensors import denormalize, normalize_intensity, prepare_inputs
from anyseg_core.train import TrainItems, train

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "config" / "train_tiny.yaml"
HW = (96, 160)


@pytest.fixture(scope="module")
def items():
    """Two rendered items of the MUSES-like world and one of the HDL-64E-like rig."""
    muses = SyntheticDataset(2, split="val", size_hw=HW, return_raw=True)
    hdl = SyntheticDataset(1, split="val", size_hw=HW, return_raw=True, sensor_rig="hdl64")
    return [muses[0], muses[1], hdl[0]]


def _raw(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    raw = denormalize(x, LIDAR)
    return raw, raw[0] > 1e-3


def _true_rings(frame, valid: torch.Tensor) -> torch.Tensor:
    """Each present pixel's ring, from the sweep's ring column projected as the intensity."""
    pts = frame.lidar.copy()
    pts[:, 3] = pts[:, 4] + 1
    img = prepare_inputs(replace(frame, lidar=pts), HW, [LIDAR], normalized=False)[LIDAR]
    return img[1][valid].round().long() - 1


# ------------------------------------------------------------------ off is the identity

def test_off_by_default_changes_nothing(items):
    aug = LidarAugment.from_config(DEFAULTS["augment"])
    assert not aug.enabled
    x = items[0]["inputs"]
    assert aug(x, torch.Generator().manual_seed(0)) is x


def test_training_items_are_unchanged_with_the_defaults_and_other_modalities_never(items):
    cfg = load_config(TINY)
    base = SyntheticDataset(3, split="train", size_hw=(64, 96))
    joint = JointAugment.from_config(cfg["augment"], normalization_info(cfg), rescale_info(cfg))
    before = TrainItems(base, joint, 7)
    default = TrainItems(base, joint, 7, LidarAugment.from_config(cfg["augment"]))
    assert default.lidar is None
    on = TrainItems(base, joint, 7, LidarAugment(ring_p=1, density_p=1, intensity_p=1))
    for key in [(0, 0), (1, 2), (3, 1)]:
        a, b, c = before[key], default[key], on[key]
        for m in a["inputs"]:
            assert torch.equal(a["inputs"][m], b["inputs"][m])
        assert torch.equal(a["label"], c["label"])
        # the joint augmentation draws the same with the LiDAR's on: only the LiDAR differs
        for m in ("camera", "events"):
            assert torch.equal(a["inputs"][m], c["inputs"][m])
        assert not torch.equal(a["inputs"][LIDAR], c["inputs"][LIDAR])


# ------------------------------------------------------------------ on: rings, points, scale

def test_ring_ids_find_the_sweeps_rings(items):
    for item in items:
        raw, valid = _raw(item["inputs"][LIDAR])
        found = ring_ids(raw, valid)
        assert (found[~valid] == -1).all()
        true = _true_rings(item["raw"], valid)
        # one found ring per true ring, in the same order
        pairs = torch.unique(torch.stack([true, found[valid]]), dim=1)
        assert pairs.shape[1] == len(torch.unique(true)) == int(found.max()) + 1
        assert (torch.diff(pairs[1][torch.argsort(pairs[0])]) == 1).all()


@pytest.mark.parametrize("k", [2, 4])
def test_ring_subsampling_keeps_every_kth_ring(items, k):
    aug = LidarAugment(ring_p=1.0, ring_factors=[k])
    for item in items:
        x = item["inputs"][LIDAR]
        raw, valid = _raw(x)
        y = aug({LIDAR: x}, torch.Generator().manual_seed(3))[LIDAR]
        out, kept = _raw(y)
        assert kept.sum() < valid.sum() and (kept <= valid).all()
        true = _true_rings(item["raw"], valid)
        rings_before = torch.unique(true)
        rings_after = torch.unique(true[kept[valid]])
        assert len(rings_after) == pytest.approx(len(rings_before) / k, abs=1)
        ranks = torch.searchsorted(rings_before, rings_after)
        assert len(torch.unique(ranks % k)) == 1  # one phase
        # a kept point is as it was; a removed one is "no data"
        assert torch.equal(y[:, kept], x[:, kept])
        assert torch.allclose(out[:, ~kept], torch.zeros(1), atol=1e-4)


def test_density_subsampling_keeps_a_fraction_of_the_points(items):
    x = items[0]["inputs"][LIDAR]
    _, valid = _raw(x)
    aug = LidarAugment(density_p=1.0, density_keep=[0.4, 0.4])
    y = aug({LIDAR: x}, torch.Generator().manual_seed(1))[LIDAR]
    _, kept = _raw(y)
    assert (kept <= valid).all()
    assert kept.sum() / valid.sum() == pytest.approx(0.4, abs=0.03)
    fractions = []
    for s in range(8):
        aug = LidarAugment(density_p=1.0, density_keep=[0.3, 1.0])
        _, kept = _raw(aug({LIDAR: x}, torch.Generator().manual_seed(s))[LIDAR])
        fractions.append(float(kept.sum() / valid.sum()))
    assert min(fractions) >= 0.27 and max(fractions) <= 1.0 and np.std(fractions) > 0.05


def test_intensity_scale_jitter(items):
    x = items[0]["inputs"][LIDAR]
    raw, valid = _raw(x)
    seen = []
    for s in range(12):
        aug = LidarAugment(intensity_p=1.0, intensity_scale=[1 / 255, 4.0])
        out, kept = _raw(aug({LIDAR: x}, torch.Generator().manual_seed(s))[LIDAR])
        assert torch.equal(kept, valid)
        ratio = out[1][valid] / raw[1][valid].clamp_min(1e-3)
        big = raw[1][valid] > 1
        factor = float(ratio[big].median())
        assert torch.allclose(ratio[big], torch.tensor(factor), rtol=1e-3)
        assert torch.allclose(out[0], raw[0], atol=1e-4) and torch.allclose(out[2], raw[2],
                                                                            atol=1e-4)
        seen.append(factor)
    assert 1 / 255 * 0.999 <= min(seen) and max(seen) <= 4.0 * 1.001
    assert max(seen) / min(seen) > 20


def test_the_same_generator_gives_the_same_augmentation(items):
    x = {LIDAR: items[1]["inputs"][LIDAR]}
    aug = LidarAugment(ring_p=0.5, density_p=0.5, intensity_p=0.5)
    outs = [aug(x, torch.Generator().manual_seed(s))[LIDAR] for s in (5, 5, 6)]
    assert torch.equal(outs[0], outs[1])
    assert not all(torch.equal(aug(x, torch.Generator().manual_seed(s))[LIDAR], x[LIDAR])
                   for s in range(6))


def test_config_checks_the_augmentation_keys():
    cfg = load_config(TINY, ["augment.lidar_ring_p=0.5", "augment.lidar_ring_factors=[2, 3]"])
    assert cfg["augment"]["lidar_ring_factors"] == [2, 3]
    for bad, msg in [("augment.lidar_ring_p=2", "augment.lidar_ring_p must be a probability"),
                     ("augment.lidar_ring_factors=[1]", "whole numbers >= 2"),
                     ("augment.lidar_density_keep=[0.5, 1.5]", "0 < low <= high <= 1"),
                     ("augment.lidar_intensity_scale=[0, 1]", "0 < low <= high"),
                     ("data.lidar_intensity=p0", "raw or pNN")]:
        with pytest.raises(ConfigError, match=msg):
            load_config(TINY, [bad])


# ------------------------------------------------------------------ intensity normalisation

def test_normalised_lidar_input_does_not_depend_on_the_intensity_scale(items):
    for item in items:
        frame = item["raw"]
        inputs = {}
        for scale in (1.0, 255.0, 1 / 255):
            pts = frame.lidar.copy()
            pts[:, 3] *= scale
            scaled = replace(frame, lidar=pts)
            inputs[scale] = (prepare_inputs(scaled, HW, [LIDAR], lidar_intensity="p95")[LIDAR],
                             prepare_inputs(scaled, HW, [LIDAR])[LIDAR])
        norm_1, raw_1 = inputs[1.0]
        for scale in (255.0, 1 / 255):
            norm, raw = inputs[scale]
            torch.testing.assert_close(norm, norm_1, rtol=1e-5, atol=1e-5)
            assert not torch.allclose(raw, raw_1)  # without it the input changes
        # range and z untouched; the 95th percentile of the image's intensities is the reference
        n, _ = _raw(norm_1)
        r, valid = _raw(raw_1)
        assert torch.allclose(n[[0, 2]], r[[0, 2]], atol=1e-4)
        assert float(torch.quantile(n[1][valid], 0.95)) == pytest.approx(40.0, rel=0.02)


def test_normalisation_raw_is_the_identity_and_empty_sweeps_pass():
    img = torch.zeros(3, 4, 5)
    assert normalize_intensity(img, "p95") is img
    img[0, 1, 1], img[1, 1, 1] = 5.0, 0.0  # a point with zero intensity: no reference
    assert torch.equal(normalize_intensity(img, "p50"), img)
    assert normalize_intensity(img, "raw") is img
    with pytest.raises(ValueError, match="raw or pNN"):
        normalize_intensity(img, "median")


def test_the_normalisation_is_recorded_in_the_checkpoint_and_applied_by_the_runtime(
        tmp_path, items):
    """Trained with data.lidar_intensity=p95 (and the LiDAR augmentation on), the checkpoint
    says so; the runtime (the node's inference path) normalises a sweep published x255 as
    the one published x1; a checkpoint of before the choice reads as raw."""
    cfg = load_config(TINY, [f"out_dir={tmp_path / 'run'}", "optim.steps=1",
                             "train.eval_samples=0", "data.lidar_intensity=p95",
                             "augment.lidar_ring_p=1", "augment.lidar_density_p=1",
                             "augment.lidar_intensity_p=1"])
    path = train(cfg)
    meta = ckpt.read_metadata(path)
    assert meta["preprocessing"] == {"lidar_intensity": "p95"}
    rt = Runtime(path, device="cpu", warmup=False)
    assert rt.lidar_intensity == "p95"
    frame = items[0]["raw"]
    bright = frame.lidar.copy()
    bright[:, 3] *= 255
    a = rt.prepare(frame)[LIDAR]
    b = rt.prepare(replace(frame, lidar=bright))[LIDAR]
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert rt.predict({LIDAR: a}).labels.equal(rt.predict({LIDAR: b}).labels)
    # the default: raw intensities, as every checkpoint before
    raw_path = train(load_config(TINY, [f"out_dir={tmp_path / 'raw'}", "optim.steps=1",
                                        "train.eval_samples=0"]))
    assert Runtime(raw_path, device="cpu", warmup=False).lidar_intensity == "raw"
    old = {k: v for k, v in meta.items() if k != "preprocessing"}
    assert ckpt.lidar_intensity_of(old) == "p95"  # from its training config
    old["train_config"] = {"data": {}}
    assert ckpt.lidar_intensity_of(old) == "raw"
