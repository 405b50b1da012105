"""The ROS-free session shared by anyseg_node and process_bag, without ROS.

Messages come from a real synthetic bag (rosbags' message classes, the same field layout as
rclpy's); the model is a small random-weight checkpoint. process_bag must be exactly a loop
of the session over the bag: fed the same messages at the same clock, a session makes the
frames process_bag wrote.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import ListLogger

from anyseg_ros.tools import bag as bags
from anyseg_ros import conversions as conv
from anyseg_ros import session as S
from anyseg_ros.params import DEMO_CHECKPOINT, ConfigError, load_params_file
from anyseg_ros.tools.process_bag import process_bag
from anyseg_ros.tools.synthetic_bag import write_synthetic_bag

NET_HW = (64, 96)  # the random checkpoint's size (conftest.py)
ROLE_OF = {bags.TOPICS["camera"]: "camera", bags.TOPICS["lidar"]: "lidar",
           bags.TOPICS["events"]: "events"}


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    bag = tmp_path_factory.mktemp("session_bag") / "drive"
    write_synthetic_bag(bag, 1.6, "clear-day", None, 5, (48, 64), progress=False)
    return bag


def _values(bag, checkpoint=None) -> dict:
    values = load_params_file(bags.params_path(bag))
    values.update({"device": "cpu", "network.height": NET_HW[0], "network.width": NET_HW[1]})
    if checkpoint is not None:
        values["checkpoint"] = str(checkpoint)
    return values


def _first(bag, topic):
    return next(m for m in bags.read_bag(bag, [topic])).decode()


def test_process_bag_is_a_loop_of_the_session(drive, checkpoint, tmp_path):
    summary = process_bag(drive, tmp_path / "out", checkpoint, _values(drive), progress=False)
    written = [m.decode() for m in bags.read_bag(tmp_path / "out", ["/anyseg/labels"])]
    statuses = [json.loads(m.decode().data)
                for m in bags.read_bag(tmp_path / "out", ["/anyseg/status"])]
    assert summary["frames_out"] == len(written) >= 10

    session = S.Session(_values(drive, checkpoint), logger=ListLogger(), warmup=False)
    mine, records = [], []
    for m in bags.read_bag(drive, [*ROLE_OF, bags.TOPICS["camera_info"],
                                   bags.TOPICS["tf_static"]]):
        now = m.time_ns * 1e-9
        if m.topic == bags.TOPICS["tf_static"]:  # the rig's extrinsics
            assert session.transforms(m.decode(), static=True) == 2
            continue
        if m.topic == bags.TOPICS["camera_info"]:
            assert session.camera_info(m.decode(), now=now)
            continue
        assert session.receive(ROLE_OF[m.topic], m.decode(), now=now, ros_now=now)
        while True:
            frame, _ = session.poll(now)
            if frame is None:
                break
            result = session.segment(frame)
            mine.append(result)
            records.append(session.record(result, now=now, ros_now=now))
    frame, _ = session.poll(now + session.values["sync.max_wait"] + 1e-6)
    while frame is not None:  # process_bag's last poll, after the bag's end
        mine.append(session.segment(frame))
        frame, _ = session.poll(now + session.values["sync.max_wait"] + 1e-6)
    assert len(mine) == len(written)
    for result, msg in zip(mine, written):
        labels, _ = conv.image_to_array(msg)
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == result.header_stamp
        assert np.array_equal(labels, result.labels)
    # the status records are the same record (inference time aside)
    for a, b in zip(records, statuses):
        a, b = dict(a), dict(b)
        a.pop("inference_ms"), b.pop("inference_ms")
        assert json.loads(json.dumps(a)) == b
    counts = session.counts()
    assert counts["frames_out"] == len(records)
    assert summary["received"] == {m: c["received"] for m, c in counts["inputs"].items()
                                   if m != "camera_info" and c["received"]}


def test_malformed_messages_are_counted_and_logged_throttled(drive, checkpoint):
    log = ListLogger()
    session = S.Session(_values(drive, checkpoint), logger=log, warmup=False)
    image = _first(drive, bags.TOPICS["camera"])
    image.data = image.data[:-7]  # shorter than step * height
    for _ in range(3):
        assert not session.receive("camera", image, now=1.0)
    counts = session.counts()["inputs"]["camera"]
    assert counts["received"] == 3 and counts["accepted"] == 0
    assert counts["rejected"] == {"data_length": 3}
    warnings = [t for level, t in log.lines if level == "warning" and "rejected" in t]
    assert len(warnings) == 1
    assert warnings[0].startswith("camera: rejected a message (data_length)")
    # a message no conversion expects is a conversion_error, never an exception
    assert not session.receive("lidar", object(), now=1.0)
    assert session.counts()["inputs"]["lidar"]["rejected"] == {"conversion_error": 1}
    # no frame came of any of it
    assert session.poll(10.0) == (None, None)


def test_a_refused_update_changes_nothing(drive, checkpoint):
    session = S.Session(_values(drive, checkpoint), logger=ListLogger(), warmup=False)
    before, sync, geometry = session.values, session.sync, session.geometry
    with pytest.raises(ConfigError):
        session.update({"sync.slop": 0.02, "lidar.T_cam_lidar": [1.0, 2.0]})  # not 4x4
    assert session.values == before and session.sync is sync and session.geometry is geometry
    session.update({"events.window": 0.05, "lidar.min_range": 2.5})
    assert session.values["events.window"] == 0.05 and session.sync is not sync
    assert session.pipeline.event_window == 0.05 and session.pipeline.lidar_min_range == 2.5
    palette = [1, 2, 3]
    session.update({"palette": palette})
    assert session.runtime.palette[0].tolist() == palette


def test_diagnostics_of_a_session(drive, checkpoint):
    session = S.Session(_values(drive, checkpoint), logger=ListLogger(), warmup=False)
    report = {d.name: d for d in session.diagnostics(now=5.0)}
    assert set(report) == {"camera", "events", "lidar", "camera_info", "inference"}
    assert report["camera"].level == S.STALE and report["camera"].message == "no message yet"
    assert report["inference"].level == S.WARN and report["inference"].message == "no frame yet"
    image = _first(drive, bags.TOPICS["camera"])
    stamp = conv.stamp_to_sec(image.header.stamp)
    assert session.receive("camera", image, now=stamp, ros_now=stamp)
    frame, _ = session.poll(stamp + 0.2)  # the others never came: the camera goes alone
    assert frame is not None
    result = session.segment(frame)
    assert result is not None and result.modalities == ("camera",)
    session.record(result, now=stamp + 0.2)
    report = {d.name: d for d in session.diagnostics(now=stamp + 1.1)}
    assert report["inference"].level == S.OK and report["inference"].values["frames_out"] == "1"
    assert report["camera"].values["accepted"] == "1"
    assert report["camera"].level == S.STALE  # 1.1 s old, stale_after is shorter


def test_without_a_checkpoint_both_run_the_bundled_model(drive, tmp_path):
    """The node's default and process_bag's are the same: no checkpoint -> the demo one."""
    values = _values(drive)
    values.pop("checkpoint", None)
    values.update({"network.height": 0, "network.width": 0})
    summary = process_bag(drive, tmp_path / "out", None, values, progress=False)
    assert summary["checkpoint"] == str(DEMO_CHECKPOINT) and summary["frames_out"] > 0


def test_process_bag_scores_are_an_independent_confusion_matrix(drive, checkpoint, tmp_path):
    """The mIoU process_bag reports per set of modalities (the README's kind of figure),
    recomputed here from its output bag and the drive's ground truth with a plain numpy
    confusion matrix: each output against the /gt/labels nearest in stamp (within
    sync.slop), IoU over the classes present in either, 255 ignored."""
    values = _values(drive)
    summary = process_bag(drive, tmp_path / "out", checkpoint, values, progress=False)
    gt = {}
    for m in bags.read_bag(drive, [bags.TOPICS["gt"]]):
        msg = m.decode()
        gt[conv.stamp_to_sec(msg.header.stamp)] = conv.image_to_array(msg)[0]
    labels = [m.decode() for m in bags.read_bag(tmp_path / "out", ["/anyseg/labels"])]
    statuses = [json.loads(m.decode().data)
                for m in bags.read_bag(tmp_path / "out", ["/anyseg/status"])]
    K, slop = 19, summary["parameters"]["sync.slop"]
    matrices: dict[str, np.ndarray] = {}
    for msg, status in zip(labels, statuses):
        stamp = status["stamp"]
        near = min(gt, key=lambda s: abs(s - stamp))
        if abs(near - stamp) > slop:
            continue
        pred, truth = conv.image_to_array(msg)[0].ravel(), gt[near].ravel()
        keep = truth != 255
        key = "".join(sorted({"camera": "C", "events": "E", "lidar": "L"}[m]
                             for m in status["modalities"]))
        cm = matrices.setdefault(key, np.zeros((K, K), np.int64))
        np.add.at(cm, (truth[keep].astype(int), pred[keep].astype(int)), 1)
    assert matrices
    for key, cm in matrices.items():
        inter = np.diag(cm).astype(float)
        union = cm.sum(0) + cm.sum(1) - np.diag(cm)
        seen = union > 0
        miou = 100 * (inter[seen] / union[seen]).mean()
        assert summary["modality_sets"][key]["miou"] == pytest.approx(miou, abs=0.01), key


def test_max_future_away_from_its_default(drive, checkpoint):
    """sync.max_future set to 0.2 s: a message stamped 0.3 s ahead of the clock it is checked
    against is refused (bad_stamp), one 0.1 s ahead is taken; the default (1 s) took both."""
    session = S.Session(_values(drive, checkpoint), logger=ListLogger(), warmup=False)
    image = _first(drive, bags.TOPICS["camera"])
    stamp = conv.stamp_to_sec(image.header.stamp)
    assert session.receive("camera", image, now=stamp, ros_now=stamp - 0.3)
    session.update({"sync.max_future": 0.2})
    assert not session.receive("camera", image, now=stamp, ros_now=stamp - 0.3)
    assert session.receive("camera", image, now=stamp, ros_now=stamp - 0.1)
    assert session.counts()["inputs"]["camera"]["rejected"] == {"bad_stamp": 1}


def test_a_new_palette_colours_the_next_frame(drive, checkpoint):
    session = S.Session(_values(drive, checkpoint), logger=ListLogger(), warmup=False)
    images = [m.decode() for m in bags.read_bag(drive, [bags.TOPICS["camera"]])][:2]

    def one_frame(image):
        stamp = conv.stamp_to_sec(image.header.stamp)
        assert session.receive("camera", image, now=stamp, ros_now=stamp)
        frame, _ = session.poll(stamp + 0.2)  # the others never come: the camera alone
        return session.segment(frame)

    before = one_frame(images[0])
    assert np.array_equal(before.color, session.runtime.palette.numpy()[before.labels])
    palette = np.arange(19 * 3, dtype=np.uint8).reshape(19, 3) * 4
    session.update({"palette": palette.reshape(-1).tolist()})
    after = one_frame(images[1])
    assert np.array_equal(after.color, palette[after.labels])
    assert not np.array_equal(palette[before.labels], before.color)



def test_a_sync_parameter_change_keeps_the_frame_being_formed(drive, checkpoint):
    """Frame 1 (image and sweep) is made; frame 2's sweep is in, then sync.slop changes (as
    `ros2 param set` does between two messages), then frame 2's image: the frame takes its
    sweep. A synchroniser started afresh on the change had lost the sweep and the sensors'
    liveness (the sweep would have pivoted a frame of its own)."""
    session = S.Session(_values(drive, checkpoint), logger=ListLogger(), warmup=False)
    for m in bags.read_bag(drive, [bags.TOPICS["tf_static"]]):
        session.transforms(m.decode(), static=True)
    assert session.camera_info(_first(drive, bags.TOPICS["camera_info"]))  # the camera's frame
    images = [m.decode() for m in bags.read_bag(drive, [bags.TOPICS["camera"]])][:2]
    sweeps = [m.decode() for m in bags.read_bag(drive, [bags.TOPICS["lidar"]])]
    stamps = [conv.stamp_to_sec(image.header.stamp) for image in images]
    near = [min(sweeps, key=lambda c: abs(conv.stamp_to_sec(c.header.stamp) - t)) for t in stamps]
    assert all(abs(conv.stamp_to_sec(c.header.stamp) - t) < 0.05 for c, t in zip(near, stamps))
    # Frame 1: the image first (nothing else is live yet: it goes alone), then its sweep.
    assert session.receive("camera", images[0], now=stamps[0], ros_now=stamps[0])
    assert session.poll(stamps[0])[0].pivot == "camera"
    assert session.receive("lidar", near[0], now=stamps[0] + 0.01, ros_now=stamps[0])
    assert session.poll(stamps[0] + 0.01)[0] is None  # the camera is the pivot, no new image
    # Frame 2: the sweep, the change, the image.
    assert session.receive("lidar", near[1], now=stamps[1], ros_now=stamps[1])
    assert session.poll(stamps[1])[0] is None
    session.update({"sync.slop": 0.06})
    assert session.receive("camera", images[1], now=stamps[1] + 0.01, ros_now=stamps[1])
    frame, _ = session.poll(stamps[1] + 0.01)
    assert frame is not None and frame.stamp == pytest.approx(stamps[1])
    assert frame.pivot == "camera" and "lidar" in frame.items, frame.items.keys()
