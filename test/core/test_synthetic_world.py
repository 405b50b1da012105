"""The synthetic multi-sensor world: determinism, coverage, geometry and conditions."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from anyseg_core.data.synthetic import (Condition, RigConfig, SampleOptions, SyntheticDataset,
                                        collate, drive, generate_scene, render_frame)
from anyseg_core.data.synthetic.__main__ import main as synthetic_cli
from anyseg_core.data.synthetic.rig import add_weather_overlay
from anyseg_core.modalities import CITYSCAPES_CLASSES, IGNORE_INDEX
from anyseg_core.sensors import project_lidar

RIG = RigConfig(image_hw=(144, 256))


def frame(seed: int, condition: str = "clear-day", rig: RigConfig = RIG, scene=None):
    scene = generate_scene(seed) if scene is None else scene
    return render_frame(rig, scene, Condition.parse(condition), seed)


def static(scene):
    """The same street with every object and the ego standing still."""
    return replace(scene, ego_speed=0.0, boxes=replace(scene.boxes, vel=scene.boxes.vel * 0),
                   cylinders=replace(scene.cylinders, vel=scene.cylinders.vel * 0))


def test_same_seed_same_sensors_other_seed_other_sensors():
    a, b, c = frame(3), frame(3), frame(4)
    for name in ("camera", "depth", "label", "lidar"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    for field in ("x", "y", "t", "p"):
        np.testing.assert_array_equal(getattr(a.events, field), getattr(b.events, field))
    assert a.t_cam == b.t_cam
    assert not np.array_equal(a.camera, c.camera)
    assert not np.array_equal(a.label, c.label)


def test_every_cityscapes_class_appears_across_seeds():
    seen: set[int] = set()
    options = SampleOptions(camera=False, depth=True, lidar=False, events=False)
    for seed in range(40):
        f = render_frame(RIG, generate_scene(seed), Condition(), seed, options=options)
        seen |= set(np.unique(f.label).tolist())
        if len(seen - {IGNORE_INDEX}) == len(CITYSCAPES_CLASSES):
            break
    missing = [CITYSCAPES_CLASSES[i] for i in range(19) if i not in seen]
    assert not missing, f"classes never seen in 40 scenes: {missing}"
    assert IGNORE_INDEX in seen  # free-standing clutter is labelled ignore, as in Cityscapes


def test_raw_formats_follow_muses_conventions():
    f = frame(5)
    H, W = RIG.image_hw
    assert f.camera.shape == (H, W, 3) and f.camera.dtype == np.uint8
    assert f.camera_encoding == "rgb8"
    assert f.depth.dtype == np.float32 and f.depth_encoding == "32FC1"
    assert f.label.dtype == np.uint8 and f.label.shape == (H, W)
    assert (f.depth[f.label == 10] == 0).all(), "sky has no depth"
    assert (f.depth[f.label != 10] > 0).all()
    pts = f.lidar
    assert pts.dtype == np.float64 and pts.shape[1] == 6  # x y z intensity ring time
    assert 0 <= pts[:, 3].min() and pts[:, 3].max() <= 255
    assert set(np.unique(pts[:, 4]).astype(int)) <= set(range(RIG.lidar_rings))
    half = RIG.lidar_period / 2
    assert (np.abs(pts[:, 5] - f.t_cam) <= half + 1e-9).all()
    rng_m = np.linalg.norm(pts[:, :3], axis=1)
    assert rng_m.max() < RIG.lidar_max_range + 1.0
    ev = f.events
    eh, ew = f.events_hw
    assert ev.x.dtype == np.uint16 and ev.p.dtype == np.uint8 and ev.t.dtype == np.float64
    assert ev.x.max() < ew and ev.y.max() < eh
    assert (np.diff(ev.t) >= 0).all()
    assert ev.t.min() > f.t_cam - RIG.event_window and ev.t.max() <= f.t_cam
    assert set(np.unique(ev.p).tolist()) == {0, 1}


def test_lidar_agrees_with_camera_depth_and_labels_through_the_calibration():
    """Projecting the LiDAR with K and T_cam_lidar lands on pixels whose rendered depth and
    label match the points: the calibration the world reports is the one it used."""
    f = frame(11, rig=replace(RIG, lidar_range_noise=0.0))
    real = f.meta["lidar_labels"] != IGNORE_INDEX
    pts = f.lidar[real]
    T = np.asarray(f.T_cam_lidar)
    cam = pts[:, :3] @ T[:3, :3].T + T[:3, 3]
    uvw = cam @ np.asarray(f.K).T
    front = cam[:, 2] > 1.0
    u = np.floor(uvw[front, 0] / uvw[front, 2] + 0.5).astype(int)
    v = np.floor(uvw[front, 1] / uvw[front, 2] + 0.5).astype(int)
    H, W = RIG.image_hw
    inside = (u >= 0) & (u < W) & (v >= 0) & (v < H)
    assert inside.sum() > 2000
    z_img = f.depth[v[inside], u[inside]]
    z_pts = cam[front][inside, 2]
    close = np.abs(z_img - z_pts) < 0.05 * z_pts + 0.1
    assert close.mean() > 0.85, f"only {close.mean():.0%} of points match the depth map"
    same = f.label[v[inside], u[inside]] == f.meta["lidar_labels"][real][front][inside]
    assert same.mean() > 0.85
    # and the sensors module sees the same thing
    img = project_lidar(f.lidar, f.K, f.T_cam_lidar, RIG.image_hw)
    assert (img[0] > 0).sum() > 2000


def test_night_darkens_the_camera_and_adds_event_noise_but_leaves_the_lidar_alone():
    scene = static(generate_scene(21))
    day = frame(21, "clear-day", scene=scene)
    night = frame(21, "clear-night", scene=scene)
    assert night.camera.mean() < 0.6 * day.camera.mean()
    np.testing.assert_array_equal(day.lidar, night.lidar)
    # Nothing moves: every event is sensor noise, far more of it at night.
    assert len(night.events) > 4 * max(len(day.events), 1)


def test_fog_lowers_camera_contrast_with_distance_and_shortens_lidar_range():
    clear, fog = frame(8, "clear-day"), frame(8, "fog-day")
    far = clear.depth > 40.0
    assert far.sum() > 100
    grey = lambda img: img.astype(np.float32).mean(2)  # noqa: E731
    assert grey(fog.camera)[far].std() < 0.5 * grey(clear.camera)[far].std()
    r_clear = np.linalg.norm(clear.lidar[:, :3], axis=1)
    r_fog = np.linalg.norm(fog.lidar[:, :3], axis=1)
    assert np.percentile(r_fog, 95) < 0.8 * np.percentile(r_clear, 95)
    assert (fog.meta["lidar_labels"] == IGNORE_INDEX).sum() > 50  # backscatter near returns


@pytest.mark.parametrize("weather", ["rain", "snow"])
def test_rain_and_snow_add_streaks_and_spurious_near_lidar_returns(weather):
    clear, bad = frame(9, "clear-day"), frame(9, f"{weather}-day")
    spurious = bad.meta["lidar_labels"] == IGNORE_INDEX
    assert (clear.meta["lidar_labels"] == IGNORE_INDEX).sum() == 0
    assert spurious.sum() > 20
    assert np.linalg.norm(bad.lidar[spurious, :3], axis=1).max() < 8.0
    # streaks or flakes in front of the lens, over a flat grey picture
    img = np.full((144, 256, 3), 0.3, np.float32)
    add_weather_overlay(img, Condition(weather), np.random.default_rng(0))
    bright = img[..., 0] > 0.35
    assert bright.mean() > 0.004
    below = (bright[:-1] & bright[1:]).sum() / bright[:-1].sum()  # vertical continuation
    assert below > (0.5 if weather == "rain" else 0.3)


def test_exposure_changes_only_the_camera():
    normal, over, under = (frame(12, c) for c in
                           ("clear-day", "clear-day-overexposed", "clear-day-underexposed"))
    assert under.camera.mean() < normal.camera.mean() < over.camera.mean()
    assert (over.camera == 255).mean() > 5 * max((normal.camera == 255).mean(), 0.01)
    np.testing.assert_array_equal(normal.lidar, over.lidar)
    np.testing.assert_array_equal(normal.events.t, under.events.t)


def test_condition_names_round_trip_and_bad_names_fail_clearly():
    for name in ("clear-day", "fog-night", "snow-day-overexposed", "rain-night-underexposed"):
        assert Condition.parse(name).name == name
    assert Condition.parse("night") == Condition("clear", "night")
    with pytest.raises(ValueError, match="sandstorm"):
        Condition.parse("sandstorm-day")


def test_dataset_items_are_deterministic_and_independent_of_order_and_workers():
    ds = SyntheticDataset(4, split="val", seed=1, size_hw=(72, 128),
                          modalities=("camera", "events", "lidar", "depth"))
    a3 = ds[3]
    _ = ds[1]
    b3 = SyntheticDataset(4, split="val", seed=1, size_hw=(72, 128),
                          modalities=("camera", "events", "lidar", "depth"))[3]
    for m in a3["inputs"]:
        assert torch.equal(a3["inputs"][m], b3["inputs"][m])
        assert a3["inputs"][m].shape == (3, 72, 128) and a3["inputs"][m].dtype == torch.float32
    assert torch.equal(a3["label"], b3["label"]) and a3["label"].dtype == torch.int64
    train0 = SyntheticDataset(1, split="train", seed=1, size_hw=(72, 128))[0]
    assert not torch.equal(train0["label"], ds[0]["label"])
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate)
    batches = list(loader)
    assert torch.equal(batches[1]["label"][1], a3["label"])
    assert torch.equal(batches[1]["inputs"]["lidar"][1], a3["inputs"]["lidar"])


def test_dataset_cycles_conditions_and_returns_raw_on_request():
    ds = SyntheticDataset(3, size_hw=(72, 128), conditions=["fog-night", "clear-day"],
                          modalities=("lidar",), return_raw=True)
    items = [ds[i] for i in range(3)]
    assert [it["condition"] for it in items] == ["fog-night", "clear-day", "fog-night"]
    assert set(items[0]["inputs"]) == {"lidar"}
    assert items[0]["raw"].lidar.shape[1] == 6
    batch = collate(items)
    assert batch["inputs"]["lidar"].shape == (3, 3, 72, 128) and len(batch["raw"]) == 3
    with pytest.raises(ValueError, match="split"):
        SyntheticDataset(1, split="holdout")


def test_a_drive_streams_each_sensor_at_its_rate_in_time_order():
    rig = RigConfig(image_hw=(72, 128), lidar_columns=120, lidar_rings=16)
    msgs = list(drive(2, 0.35, "clear-day", rig=rig))
    stamps = [m.stamp for m in msgs]
    assert stamps == sorted(stamps)
    by = {s: [m for m in msgs if m.sensor == s] for s in ("camera", "lidar", "events")}
    cam_t = np.array([m.stamp for m in by["camera"]])
    np.testing.assert_allclose(np.diff(cam_t), 0.1, atol=1e-6)  # float64 UNIX seconds
    lid_t = np.array([m.stamp for m in by["lidar"]])
    np.testing.assert_allclose(np.diff(lid_t), 0.1, atol=1e-6)
    assert 0.0 < (lid_t[0] - cam_t[0]) < 0.1  # the LiDAR is not triggered with the camera
    prev = stamps[0]
    for m in by["events"]:  # packets tile time: each covers (previous packet, stamp]
        if len(m.data):
            assert m.data.t.min() > prev - 1e-9 and m.data.t.max() <= m.stamp
        prev = m.stamp
    assert sum(len(m.data) for m in by["events"]) > 1000  # the ego moves: the world flows
    cam = by["camera"][0].data
    assert cam["image"].shape == (72, 128, 3) and cam["label"].shape == (72, 128)
    again = list(drive(2, 0.35, "clear-day", rig=rig))
    last_events = [m for m in again if m.sensor == "events"][-1].data
    np.testing.assert_array_equal(last_events.t, by["events"][-1].data.t)
    np.testing.assert_array_equal([m for m in again if m.sensor == "camera"][-1].data["image"],
                                  by["camera"][-1].data["image"])


def test_scene_command_writes_the_picture(tmp_path, capsys):
    assert synthetic_cli(["scene", "--seed", "3", "--condition", "snow-night", "--size",
                          "72x128", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "snow-night" in out and "lidar" in out
    import cv2
    img = cv2.imread(str(tmp_path / "scene.png"))
    assert img is not None and img.shape[0] > 5 * 72
    with pytest.raises(SystemExit):
        synthetic_cli(["scene", "--condition", "sandstorm"])
