"""The synthetic multi-sensor world: determinism, coverage, geometry and conditions."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from anyseg_core.data.synthetic import (Condition, RigConfig, SampleOptions, SyntheticDataset,
                                        collate, drive, generate_scene, render_frame,
                                        sample_condition)
from anyseg_core.data.synthetic.__main__ import main as synthetic_cli
from anyseg_core.data.synthetic.rig import add_weather_overlay
from anyseg_core.modalities import CITYSCAPES_CLASSES, CLASS_ID, IGNORE_INDEX
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
    scene = generate_scene(9)  # without its clutter (labelled 255 like spurious returns)
    scene = replace(scene, boxes=scene.boxes.select(scene.boxes.label != IGNORE_INDEX))
    clear, bad = frame(9, "clear-day", scene=scene), frame(9, f"{weather}-day", scene=scene)
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


# The documented mix (docs/synthetic-world.md, sample_condition): 40 % clear, 20 % each of
# rain, snow and fog; 40 % at night; a quarter of clear days badly exposed, half of them
# over-, half under-exposed; no other condition badly exposed.
WEATHER_MIX = {"clear": 0.4, "rain": 0.2, "snow": 0.2, "fog": 0.2}
NIGHT = 0.4
BAD_EXPOSURE_OF_CLEAR_DAYS = 0.25


def _within(count: int, total: int, p: float, what: str) -> None:
    """count / total is p within 4.5 standard errors (the draws are seeded, so this is the
    same every run; a real change of the mix by a few points is tens of errors away)."""
    se = (p * (1 - p) / total) ** 0.5
    assert abs(count / total - p) <= 4.5 * se, f"{what}: {count}/{total} = " \
        f"{count / total:.3f}, documented {p} (+- {4.5 * se:.3f})"


@pytest.mark.parametrize("source", ["sample_condition", "dataset"])
def test_sampled_conditions_follow_the_documented_mix(source):
    n = 6000
    if source == "sample_condition":  # a fresh generator per seed, as the dataset makes one
        drawn = [sample_condition(np.random.default_rng(seed)) for seed in range(n)]
    else:  # what a training run draws: each item's condition
        data = SyntheticDataset(n, split="train", seed=0)
        drawn = [data.condition_of(i) for i in range(n)]
    for weather, p in WEATHER_MIX.items():
        _within(sum(c.weather == weather for c in drawn), n, p, weather)
    _within(sum(c.time == "night" for c in drawn), n, NIGHT, "night")
    clear_days = [c for c in drawn if (c.weather, c.time) == ("clear", "day")]
    _within(len(clear_days), n, WEATHER_MIX["clear"] * (1 - NIGHT), "clear-day")
    bad = [c for c in clear_days if c.exposure != "normal"]
    _within(len(bad), len(clear_days), BAD_EXPOSURE_OF_CLEAR_DAYS, "badly exposed clear days")
    _within(sum(c.exposure == "over" for c in bad), len(bad), 0.5, "over- of badly exposed")
    assert all(c.exposure == "normal" for c in drawn if (c.weather, c.time) != ("clear", "day"))


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


# --------------------------------------------------------------------------- road users

_VEHICLES = [CLASS_ID[k] for k in ("car", "truck", "bus", "train", "motorcycle", "bicycle")]


def vehicle_footprints(scene, dt: float = 0.0):
    """Every vehicle's footprint ``dt`` seconds on: x-y centre [N, 2], half extents along its
    own axes [N, 2], yaw [N], velocity [N, 2]. A car's cabin (flagged by color2, inside its
    body) is left out; a two-wheeler is widened to its rider."""
    boxes, cyls = scene.boxes.at_time(dt), scene.cylinders.at_time(dt)
    cabin = (boxes.label == CLASS_ID["car"]) & (boxes.color2[:, 0] == 1.0)
    sel = np.isin(boxes.label, _VEHICLES) & ~cabin
    c = boxes.center[sel, :2].astype(np.float64)
    h = boxes.size[sel, :2].astype(np.float64)
    riders = cyls.label == CLASS_ID["rider"]
    rc, rr = cyls.center[riders, :2], cyls.size[riders, 0]
    two = np.isin(boxes.label[sel], [CLASS_ID["motorcycle"], CLASS_ID["bicycle"]])
    assert two.sum() == riders.sum()
    for i in np.nonzero(two)[0]:
        d = np.linalg.norm(rc - c[i], axis=1)
        assert d.min() < 0.2, "a two-wheeler without its rider"
        h[i, 1] = max(h[i, 1], float(rr[np.argmin(d)]))
    return c, h, boxes.yaw[sel].astype(np.float64), boxes.vel[sel]


def _axes(yaw):
    return np.stack([np.cos(yaw), np.sin(yaw)], -1), np.stack([-np.sin(yaw), np.cos(yaw)], -1)


def _aabb_half(h, yaw):
    c, s = np.abs(np.cos(yaw)), np.abs(np.sin(yaw))
    return np.stack([c * h[:, 0] + s * h[:, 1], s * h[:, 0] + c * h[:, 1]], -1)


def overlapping_pairs(c, h, yaw, tol: float = 1e-3) -> list[tuple[int, int]]:
    """Pairs of footprints (yawed rectangles) that overlap by more than ``tol`` metres."""
    a = _aabb_half(h, yaw)
    d = np.abs(c[:, None] - c[None])
    cand = np.triu((d < a[:, None] + a[None] - tol).all(-1), 1)
    u, v = _axes(yaw)
    out = []
    for i, j in zip(*np.nonzero(cand)):
        for axis in (u[i], v[i], u[j], v[j]):  # separating axis theorem
            ri = h[i, 0] * abs(u[i] @ axis) + h[i, 1] * abs(v[i] @ axis)
            rj = h[j, 0] * abs(u[j] @ axis) + h[j, 1] * abs(v[j] @ axis)
            if abs((c[i] - c[j]) @ axis) >= ri + rj - tol:
                break
        else:
            out.append((int(i), int(j)))
    return out


def containing(c, h, yaw, point) -> np.ndarray:
    """Which footprints contain the x-y of ``point``."""
    u, v = _axes(yaw)
    o = np.asarray(point, np.float64)[:2] - c
    return (np.abs((o * u).sum(1)) <= h[:, 0]) & (np.abs((o * v).sum(1)) <= h[:, 1])


def sensor_origins(rig: RigConfig, scene, dt: float):
    from anyseg_core.data.synthetic.rig import camera_pose

    pose = camera_pose(rig, scene, dt)
    return {"camera": pose.origin, "lidar": (pose.T_world_cam @ rig.T_cam_lidar)[:3, 3]}


def test_vehicles_keep_to_their_lane_or_the_parking_strip_and_never_overlap():
    """Over 200 streets: no two vehicles overlap, none stands over the ego's camera or LiDAR,
    lane traffic stays inside its lane and parked vehicles inside the strip along the curb."""
    parked = 0
    for seed in range(200):
        scene = generate_scene(seed)
        c, h, yaw, vel = vehicle_footprints(scene)
        assert len(c) > 5
        pairs = overlapping_pairs(c, h, yaw)
        assert not pairs, f"seed {seed}: vehicles overlap: {[(c[i], c[j]) for i, j in pairs]}"
        for name, origin in sensor_origins(RIG, scene, 0.0).items():
            assert not containing(c, h, yaw, origin).any(), f"seed {seed}: {name} in a vehicle"
        lw, n, R = scene.lane_width, scene.lanes_per_side, scene.road_half_width
        lanes = [(k * lw, (k + 1) * lw) for k in range(-n, n)]
        strips = [(-R, -n * lw), (n * lw, R)]
        ay = _aabb_half(h, yaw)[:, 1]
        lo, hi = c[:, 1] - ay, c[:, 1] + ay
        within = lambda a, b: (lo >= a - 1e-4) & (hi <= b + 1e-4)  # noqa: E731
        in_lane = np.any([within(a, b) for a, b in lanes], 0)
        in_strip = np.any([within(a, b) for a, b in strips], 0)
        assert (in_lane | in_strip).all(), f"seed {seed}: a vehicle straddles a lane line"
        assert not vel[in_strip].any(), f"seed {seed}: a vehicle drives in the parking strip"
        parked += int(in_strip.sum())
    assert parked > 200  # the strips are used


@pytest.mark.parametrize("seed", [0, 2, 7, 11])
def test_vehicles_never_meet_during_a_drive(seed, monkeypatch):
    """The street of a 30 s drive, at every camera frame: no vehicle passes through another
    (one speed per lane) or over the ego's sensors."""
    import anyseg_core.data.synthetic.sequence as sequence

    made = []

    def recording(*args, **kwargs):
        made.append(generate_scene(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(sequence, "generate_scene", recording)
    seconds, rig = 30.0, RigConfig(image_hw=(8, 12))
    next(drive(seed, seconds, rig=rig))  # the street the drive runs through
    scene = made[0]
    for k in range(int(seconds * 10) + 1):
        dt = k / 10
        c, h, yaw, _ = vehicle_footprints(scene, dt)
        pairs = overlapping_pairs(c, h, yaw)
        assert not pairs, f"t = {dt} s: vehicles overlap: {[(c[i], c[j]) for i, j in pairs]}"
        for name, origin in sensor_origins(rig, scene, dt).items():
            assert not containing(c, h, yaw, origin).any(), f"t = {dt} s: {name} in a vehicle"


# --------------------------------------------------------------------------- ray casting


def _look_at(origin, target, hw=(1, 1)):
    """A 1-pixel pinhole camera at ``origin`` whose single ray points at ``target``."""
    from anyseg_core.data.synthetic.raycast import PinholeGrid
    from anyseg_core.data.synthetic.rig import intrinsics

    f = np.subtract(target, origin, dtype=np.float64)
    f /= np.linalg.norm(f)
    right = np.cross(f, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    R = np.stack([right, np.cross(f, right), f], 1)
    return PinholeGrid(intrinsics(hw, 30.0), hw, R, np.asarray(origin, np.float32))


def test_a_tree_crown_is_closed_underneath():
    """A ray from below a crown enters it through its bottom disk, whose normal points down."""
    from anyseg_core.data.synthetic.raycast import KIND_CYL, cast
    from anyseg_core.data.synthetic.scene import _Builder

    b = _Builder()
    b.cyl((10.0, 0.0, 3.0), 2.0, 3.0, CLASS_ID["vegetation"], (0.2, 0.4, 0.1))
    empty = generate_scene(0).boxes.select(np.zeros(len(generate_scene(0).boxes), bool))
    scene = replace(generate_scene(0), boxes=empty, cylinders=b.build("cyl"))
    origin = np.array([0.0, 0.0, 1.5])
    for target in ([10.0, 0.0, 3.0], [9.0, 0.5, 3.0], [11.5, -1.0, 3.0]):
        hits = cast(scene, _look_at(origin, target))
        assert hits.kind[0] == KIND_CYL and hits.label[0] == CLASS_ID["vegetation"], target
        np.testing.assert_allclose(hits.t[0], np.linalg.norm(np.subtract(target, origin)),
                                   rtol=1e-4)
        np.testing.assert_allclose(hits.normal[0], [0.0, 0.0, -1.0], atol=1e-6)
    # just above the base, through the side: a horizontal normal
    hits = cast(scene, _look_at([0.0, 0.0, 3.01], [8.0, 0.0, 3.01]))
    assert hits.kind[0] == KIND_CYL
    np.testing.assert_allclose(hits.normal[0], [-1.0, 0.0, 0.0], atol=1e-3)


# --------------------------------------------------------------------------- randomness


def test_each_sensors_noise_is_its_own_whatever_else_is_rendered():
    """An item's LiDAR and events inputs do not depend on which other modalities it has."""
    kw = dict(split="val", seed=0, size_hw=(48, 80))
    full = SyntheticDataset(3, modalities=("camera", "events", "lidar"), **kw)
    alone = {m: SyntheticDataset(3, modalities=(m,), **kw) for m in ("events", "lidar")}
    pair = SyntheticDataset(3, modalities=("events", "lidar"), **kw)
    for i in range(2):
        a = full[i]["inputs"]
        for m, ds in alone.items():
            assert torch.equal(a[m], ds[i]["inputs"][m]), (i, m)
            assert torch.equal(a[m], pair[i]["inputs"][m]), (i, m)
