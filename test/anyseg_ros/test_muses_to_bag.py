"""MUSES scenes to a ROS 2 bag: real timing kept, scenes re-based, calibration beside it, and
the bag processed offline by the node's logic."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from anyseg_core.data.muses import list_scenes, read_frame
from anyseg_core.data.synthetic.export import export_muses
from anyseg_ros.tools import bag as bags
from anyseg_ros import conversions as conv
from anyseg_ros.events import EventPacketStream
from anyseg_ros.tools.muses_to_bag import convert, main
from anyseg_ros.params import load_params_file

HW = (72, 128)
N = 3
INTERVAL = 0.5


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    out = tmp_path_factory.mktemp("muses")
    export_muses(out, N, splits=("val",), conditions=("clear-day", "fog-night"), size_hw=HW)
    return out


@pytest.fixture(scope="module")
def converted(root, tmp_path_factory):
    out = tmp_path_factory.mktemp("bags") / "muses_val"
    summary = convert(root, out, split="val", interval=INTERVAL, progress=False)
    return out, summary


def _decoded(path, topic):
    return [(m.time_ns, m.decode()) for m in bags.read_bag(path, [topic])]


def test_every_scene_keeps_its_sensor_timing_and_scenes_follow_at_the_interval(root, converted):
    out, summary = converted
    assert summary["scenes"] == N
    scenes = list_scenes(root, split="val")
    raws = [read_frame(s) for s in scenes]
    cams = [conv.stamp_to_sec(m.header.stamp) for _, m in _decoded(out, bags.TOPICS["camera"])]
    assert len(cams) == N
    np.testing.assert_allclose(np.diff(cams), INTERVAL, atol=1e-6)
    lidars = _decoded(out, bags.TOPICS["lidar"])
    events = _stream_events(out)
    for k, raw in enumerate(raws):
        st = raw.meta["stamps"]
        shift = cams[k] - st["camera"]
        # LiDAR: stamped at the sweep centre, every point's time kept (shifted like the scene).
        t_ns, cloud = lidars[k]
        assert conv.stamp_to_sec(cloud.header.stamp) == pytest.approx(st["lidar"] + shift,
                                                                    abs=1e-6)
        np.testing.assert_allclose(conv.cloud_to_array(cloud, ["t"], np.float64)[:, 0],
                                   raw.lidar[:, 5] + shift, atol=1e-6)
        pts, _ = conv.lidar_points(cloud)
        np.testing.assert_array_equal(pts, raw.lidar[:, :4].astype(np.float32))
        assert t_ns * 1e-9 == pytest.approx(st["lidar_last"] + shift, abs=1e-6)
        # Events: 10 ms EventPackets (evt3, as metavision_driver), received at their end and
        # stamped at their first event, together exactly the scene's events (to EVT 3.0's
        # microsecond), shifted (--event-anchor last, the default) so that the last one is on
        # the camera's stamp.
        mine = [(end, e) for end, stamp, e in events
                if cams[k] - INTERVAL / 2 < end < cams[k] + INTERVAL / 2]
        assert sum(len(e) for _, e in mine) == len(raw.events)
        for end, e in mine:
            assert (e.t <= end + 1e-6).all() and (e.t > end - 0.01 - 1e-6).all()
        all_t = np.sort(np.concatenate([e.t for _, e in mine]))
        ev_shift = st["camera"] - st["events_last"]
        np.testing.assert_allclose(all_t, np.sort(np.asarray(raw.events.t) + ev_shift + shift),
                                   atol=1e-6)
        assert all(abs(stamp - e.t[0]) < 1e-6 for _, stamp, e in events if len(e))
        assert all_t[-1] == pytest.approx(cams[k], abs=1e-6)
    # Receive times never go backwards, ground truth comes with each camera image.
    times = [m.time_ns for m in bags.read_bag(out)]
    assert times == sorted(times)
    gts = _decoded(out, bags.TOPICS["gt"])
    assert [conv.stamp_to_sec(m.header.stamp) for _, m in gts] == pytest.approx(cams)
    images = _decoded(out, bags.TOPICS["camera"])
    infos = _decoded(out, bags.TOPICS["camera_info"])
    for k, raw in enumerate(raws):  # every image, label and CameraInfo equals its source
        np.testing.assert_array_equal(conv.image_to_array(gts[k][1])[0], raw.label)
        assert images[k][1].encoding == "rgb8"
        np.testing.assert_array_equal(conv.image_to_array(images[k][1])[0], raw.camera)
        K, hw, distortion, _ = conv.camera_info(infos[k][1])
        np.testing.assert_allclose(K, raw.K)
        assert hw == tuple(raw.image_hw) and distortion is None


def _stream_events(path):
    """(receive time s, header stamp s, Events on ROS time) of every event packet of a bag,
    decoded as one stream, as the node does."""
    stream = EventPacketStream(backend="numpy")
    return [(t_ns * 1e-9, conv.stamp_to_sec(m.header.stamp), stream(m))
            for t_ns, m in _decoded(path, bags.TOPICS["events"])]


def _bag_events(path):
    """Camera stamps and every event (x, y, t, p columns) of a bag."""
    cams = [conv.stamp_to_sec(m.header.stamp) for _, m in _decoded(path, bags.TOPICS["camera"])]
    evs = [e for _, _, e in _stream_events(path)]
    return cams, np.concatenate([np.stack([e.x, e.y, e.t, e.p], 1) for e in evs])


def _window(rows, t, t_end, window=0.03):
    """rows (x, y, p) of the events in (t_end - window, t_end], sorted; events within 2 us of
    the window's start are left out (float rounding of shifted times and EVT 3.0's
    microseconds decide their side), and so is the end's rounding."""
    dt = t - t_end
    sel = (dt > -window) & (dt <= 2e-6) & (np.abs(dt + window) > 2e-6)
    picked = rows[sel]
    return picked[np.lexsort(picked.T[::-1])]


def test_the_nodes_event_window_sees_the_readers_window(root, converted, tmp_path):
    # The node renders the events of (stamp - events.window, stamp] of a camera frame. With
    # --event-anchor last (the default) that is the MUSES SDK's window of the file, the
    # reader's default; with --event-anchor camera the 30 ms up to the camera's time.
    out, summary = converted
    assert summary["event_anchor"] == "last" and summary["labels"] == N
    recorded = tmp_path / "camera_anchor"
    other = convert(root, recorded, split="val", interval=INTERVAL, progress=False,
                    event_anchor="camera")
    assert other["max_event_shift_s"] is None
    scenes = list_scenes(root, split="val")
    for path, anchor in ((out, "last"), (recorded, "camera")):
        cams, bag_events = _bag_events(path)
        for k, scene in enumerate(scenes):
            raw = read_frame(scene)
            ev = raw.events
            rows = np.stack([ev.x, ev.y, ev.p], 1).astype(np.float64)
            t_end = float(ev.t.max()) if anchor == "last" else raw.t_cam
            want = _window(rows, np.asarray(ev.t), t_end)
            got = _window(bag_events[:, [0, 1, 3]], bag_events[:, 2], cams[k])
            assert len(want) > 100
            np.testing.assert_array_equal(got, want)
        if anchor == "last":  # the synthetic files run 10 ms past the camera's time
            assert summary["max_event_shift_s"] == pytest.approx(-0.01, abs=1e-3)


def test_comma_lists_of_weathers_and_times_of_day(root, tmp_path, capsys):
    # val holds clear-day, fog-night, clear-day
    assert main([str(root), str(tmp_path / "a"), "--weather", " fog, clear", "--quiet"]) == 0
    assert f"{N} scenes" in capsys.readouterr().out
    assert main([str(root), str(tmp_path / "b"), "--weather", "fog,snow",
                 "--time-of-day", "night,day", "--quiet"]) == 0
    assert "1 scenes" in capsys.readouterr().out
    assert main([str(root), str(tmp_path / "c"), "--weather", "fog,sunny", "--quiet"]) == 2
    assert "unknown MUSES weather ['sunny']" in capsys.readouterr().err
    for bad in ("fog,,snow", "fog,", ","):
        with pytest.raises(SystemExit) as err:
            main([str(root), str(tmp_path / "d"), "--time-of-day", "day", "--weather", bad])
        assert err.value.code == 2
        assert f"empty name in the comma list {bad!r}" in capsys.readouterr().err


def test_test_split_converts_without_labels(tmp_path, capsys):
    root = tmp_path / "muses"
    export_muses(root, 2, splits=("test",), conditions=("clear-day",), size_hw=HW)
    shutil.rmtree(root / "gt_semantic")  # MUSES withholds the test split's ground truth
    assert main([str(root), str(tmp_path / "bag"), "--split", "test", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "no ground truth written (the test split has none)" in out
    topics = {m.topic for m in bags.read_bag(tmp_path / "bag")}
    assert bags.TOPICS["gt"] not in topics and bags.TOPICS["camera"] in topics
    assert len(_decoded(tmp_path / "bag", bags.TOPICS["camera"])) == 2


def test_params_file_holds_the_calibration_and_sync_settings(root, converted):
    out, summary = converted
    values = load_params_file(bags.params_path(out))
    raw = read_frame(list_scenes(root, split="val")[0])
    # The extrinsics are in the bag's /tf_static, which the node and process_bag read.
    assert "lidar.T_cam_lidar" not in values
    from anyseg_ros.tf_tree import TfTree
    tree = TfTree()
    for m in bags.read_bag(out, [bags.TOPICS["tf_static"]]):
        assert tree.add_message(m.decode(), static=True) == []
    np.testing.assert_allclose(tree.lookup(bags.FRAME_IDS["camera"], bags.FRAME_IDS["lidar"],
                                           None), raw.T_cam_lidar, atol=1e-9)
    np.testing.assert_allclose(np.reshape(values["events.K"], (3, 3)), raw.events_K)
    assert (values["events.height"], values["events.width"]) == tuple(raw.events_hw)
    assert values["sync.stale_after"] > INTERVAL  # the camera stays live between scenes
    assert values["sync.slop"] >= 0.05 and values["sync.max_wait"] >= 0.1


def test_process_bag_uses_every_sensor_after_the_first_scene(converted, tmp_path):
    from anyseg_core.checkpoint import save_model
    from anyseg_core.model import AnymodalSegmentor
    from anyseg_ros.tools.process_bag import process_bag

    out, _ = converted
    model = AnymodalSegmentor(["camera", "events", "lidar"], 19, embed_dim=32)
    ckpt = save_model(tmp_path / "random.safetensors", model,
                      {"input_size": [64, 96], "stage": "teacher", "step": 0,
                       "train_config": {}})
    values = load_params_file(bags.params_path(out))
    values["device"] = "cpu"
    summary = process_bag(out, tmp_path / "out", ckpt, values, progress=False)
    # The first scene's event packets arrive before any camera image (see muses_to_bag).
    assert summary["modality_sets"]["CEL"]["frames"] >= N - 1
    assert summary["scored"] >= N - 1


def test_errors_name_the_problem(root, tmp_path, capsys):
    assert main([str(root), str(tmp_path / "b"), "--split", "train"]) == 2
    assert "no MUSES scene" in capsys.readouterr().err
    with pytest.raises(ValueError, match="overlaps the previous scene"):
        convert(root, tmp_path / "c", split="val", interval=0.02, progress=False)
