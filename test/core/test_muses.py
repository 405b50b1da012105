"""MUSES on its real on-disk layout: the synthetic export, the reader, and the MUSES path of
training and evaluation, all offline."""
from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from anyseg_core.data import build_dataset
from anyseg_core.data.muses import (EVENTS, LABEL, LIDAR, MusesDataset, MusesError,
                                    anchor_events, list_scenes, load_calibration,
                                    parse_condition, read_frame, write_events)
from anyseg_core.data.synthetic import SyntheticDataset
from anyseg_core.data.synthetic.__main__ import main as synthetic_cli
from anyseg_core.data.synthetic.export import export_muses
from anyseg_core.evaluate import main as evaluate_main
from anyseg_core.modalities import CAMERA
from anyseg_core.sensors import normalize, prepare_inputs, render_events, rotation_homography
from anyseg_core.train import train

HW = (72, 128)
CONDITIONS = ("clear-day", "fog-night")
N = 4  # scenes per split


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    out = tmp_path_factory.mktemp("muses")
    export_muses(out, N, splits=("train", "val"), conditions=CONDITIONS, size_hw=HW, seed=0)
    return out


@pytest.fixture
def copy(root, tmp_path):
    """A private copy of the export, to break files in."""
    dst = tmp_path / "muses"
    shutil.copytree(root, dst)
    return dst


def synthetic(split: str) -> SyntheticDataset:
    return SyntheticDataset(N, split=split, seed=0, size_hw=HW, conditions=CONDITIONS,
                            return_raw=True)


def test_export_writes_muses_files_in_muses_formats(root):
    meta = json.loads((root / "meta.json").read_text())
    assert len(meta) == 2 * N
    name, entry = next(iter(meta.items()))
    assert name == "REC9000_frame_000000"
    assert entry["path_to_frame_camera"] == \
        f"frame_camera/train/clear/day/{name}_frame_camera.png"
    assert {entry["split"], entry["weather"], entry["time_of_day"]} == {"train", "clear", "day"}
    start, end = (entry[f"frame_camera_exposure_{k}_timestamp_us"] for k in ("start", "end"))
    assert isinstance(start, int) and end - start == 10_000
    base = f"train/clear/day/{name}"
    cam = Image.open(root / f"frame_camera/{base}_frame_camera.png")
    lab = Image.open(root / f"gt_semantic/{base}_gt_labelTrainIds.png")
    assert (cam.format, cam.mode, cam.size) == ("PNG", "RGB", (HW[1], HW[0]))
    assert (lab.format, lab.mode, lab.size) == ("PNG", "L", (HW[1], HW[0]))
    raw = (root / f"lidar/{base}_lidar.bin").read_bytes()
    pts = np.frombuffer(raw, "<f8").reshape(-1, 6)
    t_cam = (start + end) / 2 / 1e6
    assert len(raw) % 48 == 0 and len(pts) > 1000
    assert np.all(np.abs(pts[:, 5] - t_cam) <= 0.05 + 1e-6)  # a 10 Hz sweep around the camera
    with h5py.File(root / f"event_camera/{base}_event_camera.h5") as f:
        dtypes = {k: f[f"events/{k}"].dtype for k in "xytp"}
        assert dtypes == {"x": np.uint16, "y": np.uint16, "t": np.int64, "p": np.uint8}
        assert "32015" in f["events/t"]._filters  # Zstd, through hdf5plugin
        assert set(np.unique(f["events/p"][()])) == {0, 1}
    calib = json.loads((root / "calib.json").read_text())
    assert np.array(calib["intrinsics"]["rgb"]["K"]).shape == (3, 3)
    assert np.array(calib["intrinsics"]["event"]["K"]).shape == (3, 3)
    assert np.array(calib["extrinsics"]["lidar2rgb"]).shape == (4, 4)
    assert np.array(calib["extrinsics"]["event2rgb"]).shape == (4, 4)


def test_reader_gives_back_the_synthetic_scenes(root):
    syn = synthetic("val")
    scenes = list_scenes(root, split="val")  # sorted by name: REC<condition>_frame_<index>
    index = [s.entry["synthetic"]["index"] for s in scenes]
    assert sorted(index) == list(range(N))
    assert [s.condition for s in scenes] == [CONDITIONS[i % 2] for i in index]
    for i, scene in zip(index, scenes):
        f, s = read_frame(scene), syn.raw(i)
        assert f.image_hw == HW and f.t_cam == s.t_cam
        np.testing.assert_array_equal(f.label, s.label)
        np.testing.assert_array_equal(f.camera, s.camera)
        np.testing.assert_array_equal(f.lidar, s.lidar)
        np.testing.assert_allclose(f.K, s.K)
        np.testing.assert_allclose(f.T_cam_lidar, s.T_cam_lidar)
        np.testing.assert_allclose(f.T_cam_events, s.T_cam_events)
        np.testing.assert_allclose(f.events_K, s.events_K)
        assert f.events_hw == s.events_hw
        st = f.meta["stamps"]
        assert st["camera"] == f.t_cam and st["lidar"] == pytest.approx(f.t_cam, abs=1e-3)
        assert st["events_first"] < f.t_cam - 0.03 < f.t_cam < st["events_last"]
        assert f.meta["weather"] == scene.weather and f.meta["name"] == scene.name


def test_lidar_through_prepare_inputs_agrees_with_the_rendered_depth(root):
    syn = synthetic("val")
    checked = 0
    for scene in list_scenes(root, split="val", conditions=["clear"]):
        f = read_frame(scene, modalities=[LIDAR])
        depth = syn.raw(scene.entry["synthetic"]["index"]).depth
        img = prepare_inputs(f, HW, [LIDAR], normalized=False)[LIDAR].numpy()
        v, u = np.nonzero(img[0] > 0)
        ok = depth[v, u] > 0
        v, u = v[ok], u[ok]
        # back-project each pixel's rendered depth and measure its range from the LiDAR
        p_cam = np.linalg.inv(f.K) @ np.stack([u, v, np.ones_like(u)]) * depth[v, u]
        T = np.linalg.inv(f.T_cam_lidar)
        expected = np.linalg.norm(T[:3, :3] @ p_cam + T[:3, 3:], axis=0)
        got = img[0, v, u]
        close = np.abs(got - expected) < 0.05 * expected + 0.2
        assert len(v) > 300 and close.mean() > 0.8, f"{close.mean():.0%} of {len(v)} agree"
        checked += 1
    assert checked == N // 2


def test_event_window_is_the_30_ms_before_the_camera_stamp(root):
    scene = list_scenes(root, split="train")[1]
    f = read_frame(scene, modalities=[EVENTS])
    with h5py.File(scene.path(EVENTS)) as h5:
        t_us = h5["events/t"][()]
    start, end = (scene.entry[f"frame_camera_exposure_{k}_timestamp_us"] for k in ("start", "end"))
    cam_us = (start + end) // 2
    ev = f.events
    dt = ev.t - f.t_cam
    sel = (dt > -0.03) & (dt <= 0)
    sel_us = (t_us > cam_us - 30_000) & (t_us <= cam_us)
    assert np.all(t_us[sel != sel_us] == cam_us - 30_000)  # only rounding on the boundary
    assert sel.sum() > 100 and (t_us <= cam_us - 30_000).sum() > 100 and (t_us > cam_us).sum() > 100
    img = prepare_inputs(f, HW, [EVENTS], normalized=False, event_third="zero")[EVENTS]
    warp = rotation_homography(f.events_K, f.K * 1.0, f.T_cam_events[:3, :3])
    expected = render_events(ev.x[sel], ev.y[sel], ev.t[sel], ev.p[sel], HW, t_end=f.t_cam,
                             window=1.0, warp=warp, third="zero")
    np.testing.assert_array_equal(img.numpy(), expected.numpy())
    everything = render_events(ev.x, ev.y, ev.t, ev.p, HW, t_end=f.t_cam + 1, window=2.0,
                               warp=warp, third="zero")
    assert everything.sum() > img.sum() > 0


def test_dataset_event_window_is_the_sdks_last_30_ms_unless_anchored_at_the_camera(root):
    # The MUSES SDK (processing/event_camera_processing.py, accumulate_events) keeps the
    # events with t >= max(t) - 30000 us of the file, whatever the camera's time; the
    # synthetic files run 10 ms past the camera's time, so the two anchors differ.
    kw = dict(modalities=[EVENTS], size_hw=HW, event_third="zero", return_raw=True)
    sdk, cam = MusesDataset(root, "train", **kw), MusesDataset(root, "train", **kw,
                                                               event_anchor="camera")
    for i, scene in enumerate(sdk.scenes):
        with h5py.File(scene.path(EVENTS)) as h5:
            t_us = h5["events/t"][()]
        item = sdk[i]
        f = item["raw"]
        assert f.t_cam == scene.t_cam  # the raw frame keeps the camera's time
        warp = rotation_homography(f.events_K, f.K * 1.0, f.T_cam_events[:3, :3])
        ev = f.events

        def expected(sel, t_end):
            img = render_events(ev.x[sel], ev.y[sel], ev.t[sel], ev.p[sel], HW, t_end=t_end,
                                window=1.0, warp=warp, third="zero")
            return normalize(img, EVENTS)

        last = t_us.max()
        sdk_sel = t_us >= last - 30_000
        edge = t_us == last - 30_000  # the SDK keeps these, (end - 30 ms, end] does not
        assert (sdk_sel & ~edge).sum() > 100 and edge.sum() < 50
        assert last > (scene.t_cam + 0.005) * 1e6  # the windows really differ here
        torch.testing.assert_close(item["inputs"][EVENTS],
                                   expected(sdk_sel & ~edge, ev.t.max()))
        dt = ev.t - scene.t_cam  # in seconds, as the renderer takes them (the edge rounds)
        cam_sel = (dt > -0.03) & (dt <= 0)
        assert cam_sel.sum() > 100 and (cam_sel != sdk_sel).sum() > 100
        torch.testing.assert_close(cam[i]["inputs"][EVENTS], expected(cam_sel, scene.t_cam))
    assert anchor_events(f, "camera") is f and anchor_events(f).t_cam == ev.t.max()
    with pytest.raises(ValueError, match="event anchor 'exposure'"):
        MusesDataset(root, "train", event_anchor="exposure")


def test_test_split_needs_labels_that_muses_withholds(tmp_path):
    export_muses(tmp_path, 2, splits=("val", "test"), conditions=("clear-day",), size_hw=HW)
    shutil.rmtree(tmp_path / "gt_semantic" / "test")  # as in the real download
    assert len(MusesDataset(tmp_path, "val")) == 2
    withheld = "MUSES withholds the ground truth of its test split.*use split train or val"
    with pytest.raises(MusesError, match=f"_gt_labelTrainIds.png: missing .*{withheld}"):
        MusesDataset(tmp_path, "test")
    with pytest.raises(ValueError, match=withheld):
        MusesDataset(tmp_path, "test", skip_broken=True)
    (scene,) = list_scenes(tmp_path, split="test")[:1]
    f = read_frame(scene)  # the sensors alone read fine
    assert f.label is None and f.camera is not None and f.events is not None


def test_dataset_items_filters_and_build_dataset(root):
    ds = MusesDataset(root, "val", size_hw=(64, 96))
    item = ds[1]
    assert set(item["inputs"]) == {CAMERA, EVENTS, LIDAR}
    assert all(x.shape == (3, 64, 96) for x in item["inputs"].values())
    assert item["label"].shape == (64, 96) and item["condition"] == ds.scenes[1].condition
    assert item["name"] == ds.scenes[1].name and item["index"] == 1
    fog = MusesDataset(root, "val", modalities=[LIDAR], conditions=["fog"])
    assert len(fog) == N // 2 and {s.condition for s in fog.scenes} == {"fog-night"}
    assert {s.condition for s in MusesDataset(root, "train", weather="clear").scenes} == \
        {"clear-day"}
    assert len(MusesDataset(root, "train", time_of_day=["day", "night"])) == N
    assert {s.split for s in MusesDataset(root, "train").scenes} == {"train"}
    with pytest.raises(ValueError, match="no MUSES scenes.*val/fog-night 2"):
        MusesDataset(root, "val", conditions=["snow-night"])
    with pytest.raises(ValueError, match=r"unknown MUSES weather \['sunny'\]"):
        MusesDataset(root, "val", weather="sunny")
    with pytest.raises(ValueError, match="overexposed"):
        parse_condition("clear-day-overexposed")
    cfg = {"data": {"dataset": "muses", "root": str(root), "modalities": ["camera", "lidar"],
                    "size": [64, 96], "conditions": ["night"]}}
    ds = build_dataset(cfg, "val", num_samples=1)
    assert isinstance(ds, MusesDataset) and len(ds) == N // 2  # a real split is used whole
    assert ds.event_anchor == "last"  # the SDK's window unless the config says otherwise
    cam = build_dataset({"data": {**cfg["data"], "event_anchor": "camera"}}, "val")
    assert cam.event_anchor == "camera"
    with pytest.raises(ValueError, match="data.root"):
        build_dataset({"data": {**cfg["data"], "root": None}}, "val")


def test_missing_and_corrupt_files_are_named_or_skipped_and_counted(copy):
    scenes = list_scenes(copy, split="val")
    lidar = scenes[0].path(LIDAR)
    lidar.unlink()
    with pytest.raises(MusesError, match=str(lidar)):
        MusesDataset(copy, "val")
    with pytest.warns(UserWarning, match="1 scene"):
        ds = MusesDataset(copy, "val", skip_broken=True)
    assert len(ds) == N - 1 and ds.num_skipped == 1 and ds.skipped[0][1] == lidar
    MusesDataset(copy, "val", modalities=[CAMERA])  # the LiDAR is not needed here

    truncated = scenes[1].path(LIDAR)
    truncated.write_bytes(truncated.read_bytes()[:-5])
    with pytest.raises(MusesError, match=f"{truncated}.*multiple of 48"):
        read_frame(scenes[1])

    events = scenes[2].path(EVENTS)
    events.write_bytes(b"not an hdf5 file")
    ds = MusesDataset(copy, "val", modalities=[CAMERA, EVENTS])
    with pytest.raises(MusesError, match=f"{events}.*HDF5"):
        ds[2]
    ds = MusesDataset(copy, "val", modalities=[CAMERA, EVENTS], skip_broken=True)
    with pytest.warns(UserWarning, match="skipping"):
        item = ds[2]
    assert item["name"] == scenes[3].name and ds.num_skipped == 1
    assert ds[2]["name"] == scenes[3].name and ds.num_skipped == 1  # counted once
    assert [p[1] for p in MusesDataset(copy, "val", modalities=[EVENTS],
                                       skip_broken=True).verify()] == [events]

    label = scenes[3].path(LABEL)
    Image.fromarray(np.full(HW, 33, np.uint8), "L").save(label)
    with pytest.raises(MusesError, match=f"{label}.*train ids"):
        read_frame(scenes[3])
    label.write_bytes(b"\x89PNG garbage")
    with pytest.raises(MusesError, match=f"{label}.*PNG"):
        read_frame(scenes[3])

    with h5py.File(events, "w") as f:
        f.create_dataset("events/x", data=np.zeros(3, np.uint16))
    with pytest.raises(MusesError, match=f"{events}.*events/y"):
        read_frame(scenes[2], modalities=[EVENTS])

    (copy / "calib.json").unlink()
    with pytest.raises(MusesError, match="calib.json: missing"):
        MusesDataset(copy, "val", modalities=[LIDAR])
    (copy / "meta.json").write_text("{not json")
    with pytest.raises(MusesError, match="meta.json: not readable JSON"):
        list_scenes(copy)


def test_events_on_another_clock_end_at_the_camera_stamp(copy):
    scene = list_scenes(copy, split="val")[0]
    x, y, t = np.array([1, 2, 3]), np.array([4, 5, 6]), np.array([1000, 21_000, 41_000])
    write_events(scene.path(EVENTS), x, y, t, np.array([1, 0, 1]))  # microseconds from 0
    f = read_frame(scene, modalities=[EVENTS])
    assert f.events.t[-1] == pytest.approx(f.t_cam)
    assert f.meta["stamps"]["events_shifted_s"] == pytest.approx(f.t_cam - 0.041)
    assert load_calibration(copy).events_hw == f.events_hw


def test_export_command(tmp_path, capsys):
    assert synthetic_cli(["export", "--layout", "muses", str(tmp_path), "--scenes", "1",
                          "--split", "test", "--conditions", "snow-night", "--size", "36",
                          "64"]) == 0
    assert "test/snow-night: 1 scenes" in capsys.readouterr().out
    (scene,) = list_scenes(tmp_path, split="test", conditions=["snow-night"])
    assert read_frame(scene).camera.shape == (36, 64, 3)
    with pytest.raises(SystemExit):
        synthetic_cli(["export", str(tmp_path), "--scenes", "1", "--conditions", "sandstorm"])


def test_train_and_evaluate_on_muses(root, tmp_path, tiny_config):
    ckpt = train(tiny_config(tmp_path / "run", "data.dataset=muses", f"data.root={root}",
                             "optim.steps=1", "optim.warmup_steps=0", "train.eval_samples=0",
                             "train.device=cpu"))
    out = tmp_path / "eval"
    assert evaluate_main(["--checkpoint", str(ckpt), "--dataset", "muses", "--root", str(root),
                          "--out", str(out), "--device", "cpu"]) == 0
    rep = json.loads((out / "anymodal.json").read_text())
    assert rep["protocol"]["dataset"] == "muses" and rep["protocol"]["num_samples"] == N
    assert list(rep["subsets"]) == ["C", "E", "L", "CE", "CL", "EL", "CEL"]
