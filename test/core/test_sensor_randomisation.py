"""Other sensors in the synthetic world (anyseg_core/data/synthetic/sensor_variants.py): the
named rigs show their ring counts, fields of view, 360° coverage, mounting and intensity
scale in the points they render; the camera variants change the pixels as described; a rig
drawn per scene is a function of the sample's seed; the MUSES-like default is untouched; the
cache, the config and the evaluation command know the rig."""
from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from anyseg_core.config import ConfigError, load_config
from anyseg_core.data.cache import cache_key
from anyseg_core.data.synthetic import SyntheticDataset
from anyseg_core.data.synthetic.conditions import Condition
from anyseg_core.data.synthetic.raycast import SphericalGrid
from anyseg_core.data.synthetic.rig import (RigConfig, SampleOptions, expose, random_streams,
                                            render_frame)
from anyseg_core.data.synthetic.scene import generate_scene
from anyseg_core.data.synthetic.sensor_variants import (NAMED_RIGS, jitter_materials,
                                                        jpeg_roundtrip, random_rig, rig_for,
                                                        rig_names)
from anyseg_core.modalities import CITYSCAPES_CLASSES

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "config" / "train_tiny.yaml"
ROAD = list(CITYSCAPES_CLASSES).index("road")
HW = (64, 112)
CLEAR = Condition.parse("clear-day")
LIDAR_ONLY = SampleOptions(camera=False, depth=False, events=False)
CAMERA_ONLY = SampleOptions(camera=True, depth=False, lidar=False, events=False)


def _lidar(rig: RigConfig, seed: int = 11, condition: Condition = CLEAR):
    frame = render_frame(replace(rig, image_hw=HW), generate_scene(seed), condition, seed,
                         options=LIDAR_ONLY)
    return frame.lidar, frame.meta["lidar_labels"]


def _camera(rig: RigConfig, seed: int = 5, scene=None) -> np.ndarray:
    scene = generate_scene(seed) if scene is None else scene
    return render_frame(replace(rig, image_hw=HW), scene, CLEAR, seed,
                        options=CAMERA_ONLY).camera


def _angles(points: np.ndarray):
    r = np.linalg.norm(points[:, :3], axis=1)
    return (np.degrees(np.arcsin(points[:, 2] / r)),
            np.degrees(np.arctan2(points[:, 1], points[:, 0])))


# ------------------------------------------------------------------ the default is untouched

def test_the_default_rig_is_the_muses_rig_and_renders_as_without_variants():
    assert NAMED_RIGS["muses"] == RigConfig()
    assert rig_for("muses", 123, RigConfig(image_hw=HW)) == RigConfig(image_hw=HW)
    default = SyntheticDataset(3, split="val", size_hw=HW, return_raw=True)
    named = SyntheticDataset(3, split="val", size_hw=HW, return_raw=True, sensor_rig="muses")
    for i in range(3):
        a, b = default[i], named[i]
        for m in a["inputs"]:
            assert np.array_equal(a["inputs"][m].numpy(), b["inputs"][m].numpy())
        assert np.array_equal(a["raw"].lidar, b["raw"].lidar)
        assert np.array_equal(a["raw"].camera, b["raw"].camera)


def test_exposure_with_the_default_rig_is_the_exposure_without_one():
    """expose's camera-response branch is taken only for a rig that asks for it: the default
    rig's image is the one made before the variants existed (rig=None), bit for bit."""
    rad = np.random.default_rng(0).uniform(0, 0.8, (HW[0], HW[1], 3)).astype(np.float32)
    for cond in ("clear-day", "rain-night", "clear-day-over"):
        c = Condition.parse(cond)
        a = expose(rad.copy(), c, random_streams(5, 1)["camera"])
        b = expose(rad.copy(), c, random_streams(5, 1)["camera"], RigConfig())
        assert np.array_equal(a, b)


# ------------------------------------------------------------------ LiDAR variants

@pytest.mark.parametrize("name", ["muses", "hdl64", "vlp16", "os128"])
def test_each_lidar_shows_its_rings_field_of_view_and_coverage(name):
    rig = NAMED_RIGS[name]
    points, _ = _lidar(rig)
    rings = np.unique(points[:, 4])
    assert len(rings) == len(rig.lidar_elevations_rad()) == {
        "muses": 32, "hdl64": 64, "vlp16": 16, "os128": 128}[name]
    elev, az = _angles(points)
    lo, hi = np.degrees(rig.lidar_elevations_rad()[[0, -1]])
    # the lowest ring always hits the road; no point outside the vertical field of view
    assert elev.min() == pytest.approx(lo, abs=0.01)
    assert elev.max() <= hi + 0.01
    # each ring's points lie on its cone (rings are told apart by elevation)
    for k in rings[:: max(1, len(rings) // 8)]:
        e = elev[points[:, 4] == k]
        assert e.max() - e.min() < 1e-4  # degrees (float32 ray directions)
    if rig.lidar_360:
        assert np.abs(az).max() > 179  # behind the car
        counts, _ = np.histogram(az, bins=12, range=(-180, 180))
        assert (counts > 0).all()  # every 30° sector all round
    else:
        assert np.abs(az).max() <= rig.lidar_hfov_deg / 2 + 0.01


@pytest.mark.parametrize("name", ["muses", "hdl64", "vlp16", "os128"])
def test_each_lidar_sees_the_road_from_its_mounting_height_and_pitch(name):
    """Road points near the car, in the LiDAR's frame, lie on the plane z = tan(pitch) x -
    height (the road is flat; roll tilts it sideways by less than a degree)."""
    rig = NAMED_RIGS[name]
    points, labels = _lidar(rig)
    road = (labels == ROAD) & (np.linalg.norm(points[:, :3], axis=1) < 15)
    assert road.sum() > 100
    A = np.c_[points[road, 0], points[road, 1], np.ones(int(road.sum()))]
    slope_x, _, offset = np.linalg.lstsq(A, points[road, 2], rcond=None)[0]
    assert offset == pytest.approx(-rig.lidar_height, abs=0.02)
    assert slope_x == pytest.approx(math.tan(math.radians(rig.lidar_rpy_deg[1])), abs=0.003)
    heights = {n: NAMED_RIGS[n].lidar_height for n in ("muses", "hdl64", "vlp16", "os128")}
    assert heights["hdl64"] == pytest.approx(1.73)  # KITTI's Velodyne
    assert len(set(round(h, 2) for h in heights.values())) == 4


def test_intensity_scale_and_response():
    hdl64 = NAMED_RIGS["hdl64"]
    unit, _ = _lidar(hdl64)
    byte, _ = _lidar(replace(hdl64, lidar_intensity_scale=1.0))
    assert np.array_equal(unit[:, :3], byte[:, :3])  # the same sweep ...
    np.testing.assert_allclose(unit[:, 3], byte[:, 3] / 255, rtol=1e-12)  # ... on 0..1
    assert unit[:, 3].max() <= 1.0 and byte[:, 3].max() > 1.0
    # a response curve changes the intensities' distribution, not their order
    curved, _ = _lidar(replace(hdl64, lidar_intensity_scale=1.0, lidar_intensity_gamma=0.5))
    assert np.median(curved[:, 3]) > 2 * np.median(byte[:, 3])
    order = np.argsort(byte[:, 3], kind="stable")
    assert (np.diff(curved[order, 3]) >= 0).all()
    os128, _ = _lidar(NAMED_RIGS["os128"])
    os128_byte, _ = _lidar(replace(NAMED_RIGS["os128"], lidar_intensity_scale=1.0))
    np.testing.assert_allclose(os128[:, 3], 8 * os128_byte[:, 3], rtol=1e-12)


def test_dropout_loses_returns():
    full, _ = _lidar(RigConfig())
    fewer, _ = _lidar(replace(RigConfig(), lidar_dropout=0.3))
    assert 0.6 < len(fewer) / len(full) < 0.8


def test_a_spinning_units_grid_wraps_at_180_degrees():
    """A box behind the car across +-180° is cast over every column of a 360° grid (its
    columns at both ends), where a forward grid clips it at the grid's edge."""
    az = -math.pi + 2 * math.pi * np.arange(360) / 360
    elev = np.radians(np.linspace(-15, 15, 16))
    corners = np.array([[[x, y, z] for x in (-10.5, -9.5) for y in (-1.0, 1.0)
                         for z in (-1.0, 1.0)]], np.float32)
    wrapped = SphericalGrid(elev, az, np.eye(3), np.zeros(3), wraps=True).rects(corners)[0]
    assert (wrapped[2], wrapped[3]) == (0, 360)
    clipped = SphericalGrid(elev, az, np.eye(3), np.zeros(3)).rects(corners)[0]
    assert clipped[3] - clipped[2] < 20
    # and the rendered sweep has points on both sides of the seam
    points, _ = _lidar(NAMED_RIGS["vlp16"])
    _, a = _angles(points)
    assert (a > 178).any() and (a < -178).any()


# ------------------------------------------------------------------ camera variants

def _grad(img: np.ndarray) -> float:
    return float(np.abs(np.diff(img.astype(np.float64), axis=1)).mean())


def test_camera_variants_change_the_pixels_as_described():
    base = _camera(RigConfig())
    warm = _camera(replace(RigConfig(), camera_white_balance=(1.3, 1.0, 0.7)))
    means = lambda img: img.reshape(-1, 3).astype(np.float64).mean(0)  # noqa: E731
    assert means(warm)[0] - means(warm)[2] > means(base)[0] - means(base)[2] + 10
    assert means(_camera(replace(RigConfig(), camera_exposure=1.8))).mean() > \
        means(base).mean() + 10
    assert means(_camera(replace(RigConfig(), camera_gamma=2.8))).mean() > means(base).mean()
    grey = _camera(replace(RigConfig(), camera_saturation=0.0)).astype(int)
    assert np.abs(grey[..., 0] - grey[..., 2]).max() <= 1
    assert _grad(_camera(replace(RigConfig(), camera_blur=1.5))) < 0.7 * _grad(base)
    assert _grad(_camera(replace(RigConfig(), camera_noise=6.0))) > 1.2 * _grad(base)
    wide = NAMED_RIGS["wide_camera"]
    assert replace(wide, image_hw=HW).K[0, 0] < replace(RigConfig(), image_hw=HW).K[0, 0]
    assert replace(wide, image_hw=HW).K[0, 0] == pytest.approx(
        (HW[1] / 2) / math.tan(math.radians(50)))
    assert not np.array_equal(_camera(wide), base)


def test_jpeg_artefacts():
    rng = np.random.default_rng(0)
    img = np.clip(rng.normal(128, 40, (64, 96, 3)), 0, 255).astype(np.uint8)
    img[:, 40:] = 200  # a flat area and an edge
    err = {q: np.abs(jpeg_roundtrip(img, q).astype(int) - img).mean() for q in (20, 60, 95)}
    assert err[20] > err[60] > err[95] > 0
    assert jpeg_roundtrip(img, 60).dtype == np.uint8
    # blocks: at q=20 the steps across 8-pixel block borders exceed those inside blocks
    out = jpeg_roundtrip(img[:, :40].copy(), 20).astype(float)
    d = np.abs(np.diff(out, axis=1)).mean((0, 2)) - np.abs(np.diff(img[:, :40].astype(float),
                                                                   axis=1)).mean((0, 2))
    border = d[7::8].mean()
    inside = np.delete(d, np.s_[7::8]).mean()
    assert border > inside


def test_material_jitter_changes_colours_not_geometry_or_labels():
    scene = generate_scene(5)
    other = jitter_materials(scene, 0.3, 5)
    assert np.array_equal(other.boxes.center, scene.boxes.center)
    assert np.array_equal(other.boxes.label, scene.boxes.label)
    assert not np.array_equal(other.boxes.color, scene.boxes.color)
    assert np.array_equal(other.boxes.color, jitter_materials(scene, 0.3, 5).boxes.color)
    rig = replace(RigConfig(), material_jitter=0.3, image_hw=HW)
    a = render_frame(rig, scene, CLEAR, 5)
    b = render_frame(replace(rig, material_jitter=0.0), scene, CLEAR, 5)
    assert np.array_equal(a.label, b.label) and np.array_equal(a.lidar, b.lidar)
    assert not np.array_equal(a.camera, b.camera)


# ------------------------------------------------------------------ a rig drawn per scene

def test_random_rigs_are_a_function_of_the_seed_and_vary():
    assert random_rig(7) == random_rig(7)
    rigs = [random_rig(s) for s in range(60)]
    assert len({r.lidar_rings for r in rigs}) == 4  # 16, 32, 64, 128
    assert {r.lidar_360 for r in rigs} == {True, False}
    scales = [r.lidar_intensity_scale for r in rigs]
    assert min(scales) < 0.01 and max(scales) > 2
    assert len({round(r.hfov_deg) for r in rigs}) > 20
    assert len({round(r.lidar_height, 2) for r in rigs}) > 20
    for r in rigs:
        spacing = np.diff(np.degrees(r.lidar_elevations_rad()))
        assert spacing.min() >= 0.2 - 1e-9  # rings stay apart (augment's ring finder)
        assert r.name == "random"


def test_a_randomised_world_is_deterministic_per_item_and_order():
    ds = SyntheticDataset(4, split="train", size_hw=HW, sensor_rig="random", return_raw=True)
    again = SyntheticDataset(4, split="train", size_hw=HW, sensor_rig="random",
                             return_raw=True)
    later = {i: again[i] for i in (3, 1, 0, 2)}
    rings = set()
    for i in range(4):
        a, b = ds[i], later[i]
        assert np.array_equal(a["raw"].lidar, b["raw"].lidar)
        assert np.array_equal(a["raw"].camera, b["raw"].camera)
        for m in a["inputs"]:
            assert np.array_equal(a["inputs"][m].numpy(), b["inputs"][m].numpy())
        rings.add(len(np.unique(a["raw"].lidar[:, 4])))
        assert ds.rig_of(i) == again.rig_of(i)
        # the scene and the condition are the MUSES world's for the same seed
        assert ds.condition_of(i) == SyntheticDataset(4, split="train").condition_of(i)
    assert len(rings) > 1


def test_named_rigs_keep_the_datasets_image_size():
    ds = SyntheticDataset(1, split="val", size_hw=HW, sensor_rig="kitti", return_raw=True)
    frame = ds[0]["raw"]
    assert frame.camera.shape[:2] == HW
    assert tuple(ds.rig_of(0).image_hw) == HW and ds.rig_of(0).hfov_deg == 81.0
    assert ds[0]["inputs"]["lidar"].shape[-2:] == HW


# ------------------------------------------------------------------ cache, config, evaluate

def test_the_cache_keys_on_the_rig_and_the_intensity_normalisation():
    data = load_config(TINY)["data"]
    muses = cache_key(data, "train")
    assert cache_key({**data, "rig": "muses"}, "train") == muses
    keys = {cache_key({**data, "rig": r}, "train") for r in rig_names()}
    assert len(keys) == len(rig_names())
    assert cache_key({**data, "lidar_intensity": "p95"}, "train") != muses
    # without the new keys (a config of before) the MUSES key is the same
    old = {k: v for k, v in data.items() if k not in ("rig", "lidar_intensity")}
    assert cache_key(old, "train") == muses


def test_config_checks_the_rig():
    assert load_config(TINY, ["data.rig=random"])["data"]["rig"] == "random"
    assert load_config(TINY)["data"]["rig"] == "muses"
    with pytest.raises(ConfigError, match="data.rig must be one of muses, random, hdl64"):
        load_config(TINY, ["data.rig=velodyne"])
    with pytest.raises(ConfigError, match="a real data set has its own sensors"):
        load_config(TINY, ["data.rig=hdl64", "data.dataset=muses", "data.root=/x"])


def test_evaluate_picks_the_rig(tmp_path, tiny_teacher):
    from anyseg_core.evaluate import main

    out = tmp_path / "eval"
    assert main(["--checkpoint", str(tiny_teacher), "--num-samples", "1", "--subsets", "L",
                 "--rig", "vlp16", "--out", str(out)]) == 0
    protocol = json.loads((out / "anymodal.json").read_text())["protocol"]
    assert protocol["rig"] == "vlp16" and protocol["lidar_intensity"] == "raw"
    assert main(["--checkpoint", str(tiny_teacher), "--num-samples", "1", "--subsets", "L",
                 "--out", str(out)]) == 0
    assert json.loads((out / "anymodal.json").read_text())["protocol"]["rig"] == "muses"
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(tiny_teacher), "--rig", "nope", "--out", str(out)])
