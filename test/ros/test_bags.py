"""The bag tools end to end: process_bag offline, play over real DDS, and the live demo.

Everything is real: a synthetic drive bag written by ``anyseg_ros.tools.synthetic_bag``, a tiny
checkpoint trained by ``python -m anyseg_core.train`` (config/train_tiny.yaml), the
commands started as processes (each process that starts rclpy with the ``ros_env``
environment: loopback discovery and a ROS domain of its own), and a listener in this
process. The drive is 3 s of a 96 x 160 camera; stamps are checked in drive seconds
(stamp minus the first camera stamp).
"""
from __future__ import annotations

import json
import re
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from anyseg_ros.tools import bag as bags
from anyseg_ros import conversions as conv
from anyseg_ros.events import EventPacketStream
from anyseg_ros.tools.play import CORRUPTIONS, corrupt

REPO = Path(__file__).resolve().parents[2]
SEED = 1
SECONDS = 3.0
SIZE = (96, 160)
# Namespaces of the replays, unique to this run: two test sessions on one machine (which
# may draw the same domain id) never see each other's topics.
_RUN = uuid.uuid4().hex[:8]
NS_X, NS_Y, NS_Q = (f"/ns_{k}_{_RUN}" for k in "xyq")
NETWORK = ("64", "96")
LIDAR_OFF = (1.0, 2.0)  # process_bag --faults and play --drop
LIDAR_KINDS = {"data_length", "bad_point_step", "non_finite"}

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def drive_bag(tmp_path_factory):
    """A 3 s drive with every sensor (outages are made by the tools under test)."""
    from anyseg_ros.tools.synthetic_bag import write_synthetic_bag

    out = tmp_path_factory.mktemp("bags") / "drive"
    info = write_synthetic_bag(out, SECONDS, "clear-day", None, SEED, SIZE, progress=False)
    return out, info


@pytest.fixture(scope="module")
def recorded(drive_bag):
    """topic -> [(drive seconds of the header stamp, receive ns, BagMessage)]."""
    bag, info = drive_bag
    out: dict[str, list] = {}
    for m in bags.read_bag(bag):
        if m.topic == "/tf_static":
            continue
        stamp = conv.stamp_to_sec(m.decode().header.stamp)
        out.setdefault(m.topic, []).append((round(stamp - info["t_start"], 6), m.time_ns, m))
    return out


def _node_values(bag: Path) -> dict:
    from anyseg_ros.params import load_params_file

    values = load_params_file(bags.params_path(bag))
    values.update({"device": "cpu", "network.height": int(NETWORK[0]),
                   "network.width": int(NETWORK[1])})
    return values


def _outputs(bag_out: Path) -> dict[str, list]:
    out: dict[str, list] = {}
    for m in bags.read_bag(bag_out):
        out.setdefault(m.topic, []).append((m.time_ns, m.decode()))
    return out


# --------------------------------------------------------------------------- process_bag


@pytest.fixture(scope="module")
def processed(drive_bag, tiny_checkpoint, tmp_path_factory):
    """``python -m anyseg_ros.tools.process_bag`` with the LiDAR off 1-2 s (params file: the one
    beside the bag, found by default)."""
    bag, _ = drive_bag
    out = tmp_path_factory.mktemp("processed") / "out"
    done = subprocess.run([sys.executable, "-m", "anyseg_ros.tools.process_bag", str(bag), str(out),
                           "--checkpoint", str(tiny_checkpoint), "--device", "cpu",
                           "--network", *NETWORK, "--faults",
                           f"lidar:{LIDAR_OFF[0]:g}-{LIDAR_OFF[1]:g}", "--quiet"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(Path(str(out) + ".summary.json").read_text())
    return {"out": out, "summary": summary, "stdout": done.stdout, "outputs": _outputs(out)}


def test_process_bag_writes_labels_color_and_status(processed, tiny_checkpoint):
    from anyseg_core.checkpoint import read_metadata

    outputs, summary = processed["outputs"], processed["summary"]
    topics = bags.bag_topics(processed["out"])
    assert {t: v for t, v in topics.items() if t != "/anyseg/camera_info"} == {
        "/anyseg/labels": ("sensor_msgs/msg/Image", summary["frames_out"]),
        "/anyseg/color": ("sensor_msgs/msg/Image", summary["frames_out"]),
        "/anyseg/status": ("std_msgs/msg/String", summary["frames_out"])}
    # The label image's CameraInfo goes with every label made once intrinsics were known
    # (a first image may come before the bag's first CameraInfo: no K to give yet).
    infos = {conv.stamp_to_sec(m.header.stamp): m for _, m in outputs["/anyseg/camera_info"]}
    label_stamps = sorted(conv.stamp_to_sec(m.header.stamp) for _, m in outputs["/anyseg/labels"])
    assert set(infos) <= set(label_stamps)
    assert all(t < min(infos) for t in label_stamps if t not in infos)
    assert len(infos) >= summary["frames_out"] - 2
    assert summary["frames_out"] >= 31  # one per camera image at least
    meta = read_metadata(tiny_checkpoint)
    palette = np.asarray(meta["palette"], np.uint8)
    H, W = SIZE
    for (t_l, labels_msg), (t_c, color_msg), (t_s, status_msg) in zip(
            outputs["/anyseg/labels"], outputs["/anyseg/color"], outputs["/anyseg/status"],
            strict=True):
        assert t_l == t_c == t_s
        labels, enc = conv.image_to_array(labels_msg)
        assert enc == "mono8" and labels.shape == (H, W)
        assert labels.max() < len(meta["class_names"])
        color, enc = conv.image_to_array(color_msg)
        assert enc == "rgb8" and color.shape == (H, W, 3)
        assert np.array_equal(color, palette[labels])
        status = json.loads(status_msg.data)
        # the node's status record (anyseg_ros.session.Session.record), field for field
        assert set(status) == {"stamp", "frame_id", "modalities", "pivot", "sensor_age_s",
                               "stamps", "live", "dropped_backlog", "left_out", "latency_ms",
                               "inference_ms"}
        assert status["frame_id"] == labels_msg.header.frame_id
        # offline, latency is the bag's receive time of the last input minus the stamp
        assert 0 <= status["latency_ms"] < 1000
        assert status["stamp"] == pytest.approx(conv.stamp_to_sec(labels_msg.header.stamp),
                                                abs=1e-6)
        assert labels_msg.header.frame_id == color_msg.header.frame_id == "camera_optical"
        info = infos.get(conv.stamp_to_sec(labels_msg.header.stamp))  # the label image's own
        if info is not None:
            assert (info.height, info.width, info.header.frame_id) == (H, W, "camera_optical")
        assert set(status["modalities"]) <= set(status["stamps"])
        assert status["pivot"] in status["stamps"]
    times = [t for t, _ in outputs["/anyseg/labels"]]
    assert times == sorted(times)
    assert "frames out of" in processed["stdout"] and "| lidar off 1-2 s |" in processed["stdout"]


def _status(processed, t_start):
    return [(json.loads(m.data), round(json.loads(m.data)["stamp"] - t_start, 6))
            for _, m in processed["outputs"]["/anyseg/status"]]


def test_process_bag_phases_and_modalities_follow_the_faults(processed, drive_bag, recorded):
    from anyseg_ros.tools.process_bag import modality_key

    summary = processed["summary"]
    t_start = drive_bag[1]["t_start"]
    assert summary["silenced"] == {"lidar": 10}  # sweeps at 1.037 .. 1.937 s
    assert summary["received"] == {"camera": 31, "lidar": 20, "events": 300}
    assert summary["rejected"] == {} and summary["camera_info_seen"] is True
    status = _status(processed, t_start)
    # Every camera image gives one output stamped with it.
    camera_stamps = [t for t, _, _ in recorded["/camera/image"]]
    assert camera_stamps <= sorted(t for s, t in status if s["pivot"] == "camera")
    assert len(camera_stamps) == 31
    lo, hi = LIDAR_OFF
    inside = [s for s, t in status if lo + 0.1 <= t < hi - 0.1]
    outside = [s for s, t in status if 0.1 <= t < lo - 0.1 or hi + 0.1 <= t < SECONDS - 0.1]
    assert len(inside) >= 7 and len(outside) >= 14
    assert all(sorted(s["modalities"]) == ["camera", "events"] for s in inside), inside
    assert all(sorted(s["modalities"]) == ["camera", "events", "lidar"] for s in outside)
    # The summary's tables count the outputs.
    assert set(summary["phases"]) == {"all sensors", "lidar off 1-2 s"}
    assert sum(p["frames"] for p in summary["phases"].values()) == summary["frames_out"]
    assert 8 <= summary["phases"]["lidar off 1-2 s"]["frames"] <= 12
    assert {k: v["frames"] for k, v in summary["modality_sets"].items()} == dict(
        Counter(modality_key(s["modalities"]) for s, _ in status))
    assert summary["modality_sets"]["CE"]["frames"] >= len(inside)


def test_process_bag_scores_against_ground_truth(processed):
    summary = processed["summary"]
    assert summary["scored"] == summary["frames_out"]
    for table in (summary["phases"], summary["modality_sets"]):
        for name, row in table.items():
            assert isinstance(row["miou"], float) and 0.0 <= row["miou"] <= 100.0, (name, row)
    assert summary["inference_ms_p50"] > 0 and summary["parameters"]["device"] == "cpu"
    assert summary["parameters"]["events.K"] is not None  # the params file was read


def test_process_bag_is_deterministic(processed, drive_bag, tiny_checkpoint, tmp_path):
    from anyseg_ros.tools.process_bag import process_bag

    bag, _ = drive_bag
    again = tmp_path / "again"
    summary = process_bag(bag, again, tiny_checkpoint, _node_values(bag),
                          bags.parse_windows(f"lidar:{LIDAR_OFF[0]:g}-{LIDAR_OFF[1]:g}"),
                          progress=False)
    assert summary["frames_out"] == processed["summary"]["frames_out"]
    first = [m for m in bags.read_bag(processed["out"]) if m.topic != "/anyseg/status"]
    second = [m for m in bags.read_bag(again) if m.topic != "/anyseg/status"]
    assert [(m.topic, m.time_ns) for m in first] == [(m.topic, m.time_ns) for m in second]
    assert all(a.data == b.data for a, b in zip(first, second))  # byte-identical
    assert summary["phases"] == processed["summary"]["phases"]


def test_process_bag_labels_equal_the_runtime_offline(processed, drive_bag, recorded,
                                                      tiny_checkpoint):
    """The labels of a frame are what anyseg_core's Runtime makes of the same messages."""
    from anyseg_core.runtime import Runtime
    from anyseg_core.sensors import Events, RawFrame

    bag, info = drive_bag
    calib = info["calibration"]
    by_stamp = {topic: {t: m for t, _, m in rows} for topic, rows in recorded.items()}
    labels_at = {round(conv.stamp_to_sec(m.header.stamp) - info["t_start"], 6): m
                 for _, m in processed["outputs"]["/anyseg/labels"]}
    runtime = Runtime(tiny_checkpoint, device="cpu", input_size=tuple(map(int, NETWORK)),
                      warmup=False)
    full = [s for s, _ in _status(processed, info["t_start"])
            if s["pivot"] == "camera" and sorted(s["modalities"]) == ["camera", "events",
                                                                      "lidar"]]
    assert len(full) >= 10
    # event packets (evt3) decoded as one stream, keyed as the status lists them: by the
    # drive time of their last event
    stream, packet_at = EventPacketStream(), {}
    for _, _, m in recorded["/events"]:
        ev = stream(m.decode(), tuple(calib["events_hw"]))
        if len(ev):
            packet_at[round(float(ev.t.max()) - info["t_start"], 6)] = ev
    for s in full[3:6]:
        t = {k: [round(v - info["t_start"], 6) for v in vs] for k, vs in s["stamps"].items()}
        image = conv.image_to_array(by_stamp["/camera/image"][t["camera"][-1]].decode())[0]
        points = conv.lidar_points(by_stamp["/lidar/points"][t["lidar"][-1]].decode())[0]
        packets = [packet_at[v] for v in t["events"]]
        assert len(packets) >= 3  # 30 ms of 10 ms packets
        events = Events(*(np.concatenate([getattr(p, a) for p in packets])
                          for a in ("x", "y", "t", "p")))
        raw = RawFrame(image_hw=SIZE, K=np.asarray(calib["K"]), t_cam=s["stamp"], camera=image,
                       camera_encoding="rgb8", lidar=points,
                       T_cam_lidar=np.asarray(calib["T_cam_lidar"]), events=events,
                       events_K=np.asarray(calib["events_K"]),
                       events_hw=tuple(calib["events_hw"]),
                       T_cam_events=np.asarray(calib["T_cam_events"]))
        inputs = runtime.prepare(raw, event_window=0.03, lidar_min_range=1.0)
        assert sorted(inputs) == ["camera", "events", "lidar"]
        expected = runtime.predict(inputs, output_size=SIZE).labels.numpy()
        got = conv.image_to_array(labels_at[round(s["stamp"] - info["t_start"], 6)])[0]
        assert np.array_equal(got, expected), (got != expected).mean()


# What each corruption of anyseg_ros.tools.play must be rejected as, per topic.
REJECTED_AS = {
    "/lidar/points": {"truncated": "data_length", "wrong_size": "bad_point_step",
                      "non_finite": "non_finite"},
    "/events": {"truncated": "data_length", "wrong_size": "bad_size",
                "non_finite": "bad_event_data"},
    "/camera/image": {"truncated": "data_length", "wrong_size": "step_too_small",
                      "non_finite": "data_length"},
    "/camera/camera_info": {"non_finite": "singular_K"},
}
SENSOR_OF = {"/lidar/points": "lidar", "/events": "events", "/camera/image": "camera",
             "/camera/camera_info": "camera_info"}


def _write_damaged_bag(src: Path, dst: Path) -> dict:
    """A copy of ``src`` with messages damaged by play.corrupt (every 4th LiDAR sweep, 5th
    image, 10th event packet, in turn through the kinds; every 7th CameraInfo with NaN K),
    one image stamped 5 s ahead, and one sweep with 100 NaN points."""
    every = {"/lidar/points": 4, "/camera/image": 5, "/events": 10, "/camera/camera_info": 7}
    index, turn, expected = Counter(), Counter(), Counter()
    damaged_images, future_image, nan_points = set(), None, 0
    ts = bags.typestore()
    with bags.BagWriter(dst) as out:
        for m in bags.read_bag(src):
            i = index[m.topic]
            index[m.topic] += 1
            data = m.data
            if m.topic in every and i % every[m.topic] == 2:
                kinds = list(REJECTED_AS[m.topic])
                kind = kinds[turn[m.topic] % len(kinds)]
                turn[m.topic] += 1
                msg = corrupt(m.decode(), kind)
                data = ts.serialize_cdr(msg, m.msgtype)
                expected[f"{SENSOR_OF[m.topic]}:{REJECTED_AS[m.topic][kind]}"] += 1
                if m.topic == "/camera/image":
                    damaged_images.add(i)
            elif m.topic == "/camera/image" and i == 13:
                msg = m.decode()
                msg.header.stamp.sec += 5
                data = ts.serialize_cdr(msg, m.msgtype)
                expected["camera:bad_stamp"] += 1
                future_image = i
            elif m.topic == "/lidar/points" and i == 5:
                msg = m.decode()
                arr = np.array(msg.data, dtype=np.uint8)
                x = np.ndarray((msg.width,), "<f4", buffer=arr, offset=0,
                               strides=(msg.point_step,))
                x[:100] = np.nan
                msg.data, msg.is_dense = arr, False
                data = ts.serialize_cdr(msg, m.msgtype)
                nan_points = 100
            out.write_raw(m.topic, data, m.time_ns, m.msgtype)
    assert all(turn[t] >= len(REJECTED_AS[t]) for t in every)  # every kind used
    return {"rejected": dict(expected), "damaged_images": damaged_images,
            "future_image": future_image, "nan_points": nan_points}


def test_process_bag_counts_damaged_messages_and_keeps_going(drive_bag, recorded,
                                                             tiny_checkpoint, tmp_path):
    from anyseg_ros.tools.process_bag import format_summary, process_bag

    bag, info = drive_bag
    damaged = tmp_path / "damaged"
    plan = _write_damaged_bag(bag, damaged)
    out = tmp_path / "out"
    summary = process_bag(damaged, out, tiny_checkpoint, _node_values(bag), progress=False)
    assert summary["rejected"] == plan["rejected"], (summary["rejected"], plan["rejected"])
    assert summary["notes"] == {"non_finite_points": plan["nan_points"]}
    assert summary["received"] == {"camera": 31, "lidar": 30, "events": 300}
    assert summary["camera_info_seen"] is True
    # Every intact image still gives its output.
    intact = [t for i, (t, _, _) in enumerate(recorded["/camera/image"])
              if i not in plan["damaged_images"] and i != plan["future_image"]]
    stamps = {round(json.loads(m.data)["stamp"] - info["t_start"], 6)
              for _, m in _outputs(out)["/anyseg/status"]}
    assert len(intact) == 31 - 6 - 1 and set(intact) <= stamps
    assert summary["frames_out"] >= len(intact)
    assert "rejected: " in format_summary(summary)


def test_process_bag_faults_count_from_the_bag_start(tiny_checkpoint, tmp_path):
    """--faults are seconds from the bag's start (its first message, /tf_static at drive
    time 0), as play --drop: the camera image of drive time 0.3 s, received at 0.31 s, is
    the only one in 0.305-0.4 s (and its CameraInfo with it)."""
    from anyseg_ros.tools.process_bag import process_bag
    from anyseg_ros.tools.synthetic_bag import write_synthetic_bag

    bag = tmp_path / "short"
    info = write_synthetic_bag(bag, 0.6, "clear-day", None, SEED, (48, 64), progress=False)
    summary = process_bag(bag, tmp_path / "out", tiny_checkpoint, _node_values(bag),
                          {"camera": [(0.305, 0.4)]}, storage="sqlite3", progress=False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["metadata.yaml",
                                                                   "out.db3"]
    assert summary["silenced"] == {"camera": 2}, summary["silenced"]
    stamps = [round(json.loads(m.data)["stamp"] - info["t_start"], 6)
              for _, m in _outputs(tmp_path / "out")["/anyseg/status"]]
    assert 0.3 not in stamps and {0.2, 0.4} <= set(stamps), stamps
    assert summary["frames_out"] == len(stamps) >= 6


def test_process_bag_command_line_errors_exit_2(drive_bag, processed, tiny_checkpoint,
                                                 tmp_path, capsys):
    from anyseg_ros.tools.process_bag import main

    bag, _ = drive_bag
    common = ["--checkpoint", str(tiny_checkpoint), "--device", "cpu", "--quiet"]
    for faults, expected in (("lidr:1-2", "lidr"), ("lidar:2-1", "lidar:2-1"),
                             ("/lidar/pointz:1-2", "/lidar/pointz")):
        out = tmp_path / "bad_faults"
        code = main([str(bag), str(out), *common, "--faults", faults])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error:") and expected in err, (faults, err)
        assert not out.exists()
    code = main([str(bag), str(processed["out"]), *common])  # OUT exists
    assert code == 2 and "exists" in capsys.readouterr().err
    code = main([str(bag), str(tmp_path / "o"), *common, "--params-file",
                 str(tmp_path / "missing.yaml")])
    assert code == 2 and "missing.yaml" in capsys.readouterr().err


# --------------------------------------------------------------------------- play


class Listener:
    """rclpy in this process, in the test's own domain, recording what arrives."""

    def __init__(self, env: dict, namespace: str, with_clock: bool = True) -> None:
        rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed (no ROS 2 here)")
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from rclpy.signals import SignalHandlerOptions
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2

        self.rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=int(env["ROS_DOMAIN_ID"]),
                   signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node("bag_test_listener", context=self.context)
        # Reliable, as rviz2 and recorders subscribe: play publishes the sensors reliable (as
        # drivers do, REP-2003), so everything arrives and can be counted exactly.
        qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        from event_camera_msgs.msg import EventPacket

        kinds = {"/camera/image": Image, "/camera/camera_info": CameraInfo,
                 "/lidar/points": PointCloud2, "/events": EventPacket, "/gt/labels": Image}
        self.msgs: dict[str, list] = {t: [] for t in (*kinds, "/clock")}
        for topic, kind in kinds.items():
            self.node.create_subscription(kind, namespace + topic, self.msgs[topic].append, qos)
        if with_clock:
            self.node.create_subscription(Clock, "/clock", self.msgs["/clock"].append, qos)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def spin_until(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            self.executor.spin_once(timeout_sec=0.02)
        return predicate()

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.rclpy.shutdown(context=self.context)


def _play(bag: Path, env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "anyseg_ros.tools.play", str(bag), *args],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


@pytest.fixture(scope="module")
def played(drive_bag, module_ros_env):
    """play --clock --drop lidar:1-2 --corrupt lidar:1.0 into /ns_x, recorded here."""
    bag, _ = drive_bag
    listener = Listener(module_ros_env, NS_X)
    proc = None
    try:
        proc = _play(bag, module_ros_env, "--namespace", NS_X, "--depth", "1000",
                     "--ack-timeout", "300",
                     "--wait-for", "/camera/image", "/camera/camera_info", "/lidar/points",
                     "/events", "/gt/labels", "--start-delay", "0", "--clock",
                     "--drop", f"lidar:{LIDAR_OFF[0]:g}-{LIDAR_OFF[1]:g}",
                     "--corrupt", "lidar:1.0")
        listener.spin_until(lambda: proc.poll() is not None, 120)
        stdout, stderr = proc.communicate(timeout=30)
        # play waited for the acknowledgements: what it published is here or queued to us.
        published = {t: int(n) for t, n in re.findall(
            r"(/[\w/]+) (\d+)", stdout.split("time(s): ")[1].splitlines()[0])}
        listener.spin_until(lambda: all(len(listener.msgs[t]) >= published.get(t, 0)
                                        for t in listener.msgs if t != "/clock"), 60)
    finally:
        if proc is not None:
            _stop(proc)
        listener.close()
    return {"msgs": listener.msgs, "returncode": proc.returncode, "stdout": stdout,
            "stderr": stderr}


def _drive_times(msgs, t_start) -> list[float]:
    return [round(conv.stamp_to_sec(m.header.stamp) - t_start, 6) for m in msgs]


def test_play_publishes_the_recorded_messages_and_stamps(played, recorded, drive_bag):
    assert played["returncode"] == 0, played["stderr"]
    assert "played" in played["stdout"] and "1 time(s)" in played["stdout"]
    t_start = drive_bag[1]["t_start"]
    for topic in ("/camera/image", "/camera/camera_info", "/events", "/gt/labels"):
        want = [t for t, _, _ in recorded[topic]]
        got = _drive_times(played["msgs"][topic], t_start)
        assert got == sorted(want), topic  # every one, in order (reliable)
    images = {t: m for t, _, m in recorded["/camera/image"]}
    for msg, t in zip(played["msgs"]["/camera/image"],
                      _drive_times(played["msgs"]["/camera/image"], t_start)):
        array, encoding = conv.image_to_array(msg, conv.CAMERA_ENCODINGS)  # valid
        assert encoding == "rgb8"
        assert np.array_equal(array, conv.image_to_array(images[t].decode())[0])
    stream = EventPacketStream()
    for msg in played["msgs"]["/events"]:
        stream(msg, (48, 80))  # valid: only the LiDAR is corrupted
    if "tf2_msgs" in played["stderr"]:
        assert "/tf_static" in played["stderr"] and "skipped" in played["stderr"]


def test_play_drop_removes_lidar_in_its_window(played, recorded, drive_bag):
    t_start = drive_bag[1]["t_start"]
    all_sweeps = [t for t, _, _ in recorded["/lidar/points"]]
    kept = [t for t in all_sweeps if not LIDAR_OFF[0] <= t < LIDAR_OFF[1]]
    assert len(all_sweeps) == 30 and len(kept) == 20
    got = _drive_times(played["msgs"]["/lidar/points"], t_start)
    assert got == sorted(kept), sorted(set(got) ^ set(kept))
    assert "dropped: /lidar/points 10" in played["stdout"]


def test_play_corrupt_makes_every_lidar_message_invalid(played):
    reasons = Counter()
    for msg in played["msgs"]["/lidar/points"]:
        with pytest.raises(conv.InvalidMessage) as e:
            conv.lidar_points(msg)
        reasons[e.value.reason] += 1
    assert set(reasons) <= LIDAR_KINDS and len(reasons) == 3, reasons  # kinds in turn
    assert sum(reasons.values()) == 20
    line = [ln for ln in played["stdout"].splitlines() if "corrupted:" in ln]
    assert line and all(f"/lidar/points:{k}" in line[0] for k in CORRUPTIONS), played["stdout"]


def test_play_clock_stays_in_the_bag_time_range(played, recorded, drive_bag):
    clock = [c.clock.sec * 10**9 + c.clock.nanosec for c in played["msgs"]["/clock"]]
    times = [ns for rows in recorded.values() for _, ns, _ in rows]
    first, last = drive_bag[1]["t_start"] * 1e9 - 1, max(times)  # /tf_static at t_start
    assert len(clock) >= 2, len(clock)
    assert all(first <= c <= last for c in clock), (first, last, clock[:3], clock[-3:])
    assert clock == sorted(clock)
    assert (clock[-1] - clock[0]) * 1e-9 >= SECONDS - 0.5


def test_play_topics_only_and_sigint(drive_bag, ros_env):
    """--topics plays only those; --drop counts from the bag's start (its first message,
    the /tf_static at drive time 0) whichever topics are played: the image of drive time
    1.0 s is received at 1.01 s and is the only one in 1.005-1.1 s."""
    bag, info = drive_bag
    listener = Listener(ros_env, NS_Y)
    proc = None
    try:
        proc = _play(bag, ros_env, "--namespace", NS_Y, "--start-delay", "1.0", "--topics",
                     "/camera/image", "--loop", "--rate", "2", "--drop", "camera:1.005-1.1")
        images = listener.msgs["/camera/image"]

        def looped():  # stamps jump back when the bag starts again
            t = [conv.stamp_to_sec(m.header.stamp) for m in images]
            return any(b < a for a, b in zip(t, t[1:])) and len(t) >= 40
        assert listener.spin_until(looped, 60), (len(images), proc.poll())
        assert proc.poll() is None  # --loop keeps it going
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=20)
        listener.spin_until(lambda: False, 0.3)
    finally:
        if proc is not None:
            _stop(proc)
        listener.close()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr and "played" in stdout
    assert {t for t, msgs in listener.msgs.items() if msgs} == {"/camera/image"}
    got = set(_drive_times(images, info["t_start"]))
    assert got <= set(round(0.1 * k, 6) for k in range(31)) - {1.0}, sorted(got)
    assert {0.9, 1.1} <= got  # neighbours of the dropped image (best effort: two passes)
    assert "dropped: /camera/image" in stdout


def test_play_errors_exit_2_with_a_message(drive_bag, ros_env):
    bag, _ = drive_bag
    done = subprocess.run([sys.executable, "-m", "anyseg_ros.tools.play", str(bag), "--topics",
                           "/camera/image", "/camera/nope", "--start-delay", "0"], cwd=REPO,
                          env=ros_env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "/camera/nope" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    # Only topics whose message package is missing here: nothing to play is an error too.
    try:
        import tf2_msgs.msg  # noqa: F401
        have_tf2 = True
    except ImportError:
        have_tf2 = False
    done = subprocess.run([sys.executable, "-m", "anyseg_ros.tools.play", str(bag), "--topics",
                           "/tf_static", "--start-delay", "0"], cwd=REPO, env=ros_env,
                          capture_output=True, text=True, timeout=60)
    assert "Traceback" not in done.stderr, done.stderr
    if have_tf2:
        assert done.returncode == 0 and "/tf_static 1" in done.stdout, done.stdout
    else:
        assert done.returncode == 2 and "tf2_msgs" in done.stderr, done.stderr


def _qos(reliable: bool, transient_local: bool = False, depth: int = 5):
    """A QoS profile as rosbag2 records a publisher's offer."""
    from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness,
                                    QosReliability, QosTime)

    never = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, depth,
               QosReliability.RELIABLE if reliable else QosReliability.BEST_EFFORT,
               QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE,
               never, never, QosLiveliness.AUTOMATIC, never, False)


def _have_tf2_msgs() -> bool:
    try:
        import tf2_msgs.msg  # noqa: F401
    except ImportError:
        return False
    return True


def _write_with_qos(path: Path, messages: list, qos: dict) -> Path:
    """A bag written with rosbags directly: ``(topic, msg, ns)`` with the recorded QoS of
    each topic from ``qos``."""
    from rosbags.rosbag2 import Writer

    ts = bags.typestore()
    with Writer(path, version=9) as w:
        conns = {}
        for topic, msg, t_ns in messages:
            if topic not in conns:
                conns[topic] = w.add_connection(topic, msg.__msgtype__, typestore=ts,
                                                offered_qos_profiles=[qos[topic]])
            w.write(conns[topic], t_ns, ts.serialize_cdr(msg, msg.__msgtype__))
    return path


T0_NS = 1_700_000_000 * 10**9


@pytest.fixture(scope="module")
def played_qos(tmp_path_factory, module_ros_env):
    """A bag with a latched topic (/latched: reliable, transient local, one message at the
    start), /tf (reliable, as tf broadcasters offer it) and /tick (best effort, every 0.1 s
    for 2.5 s), played with --namespace /ns_q --clock --wait-for /tick --start-delay 1.5.
    /tf is a String where tf2_msgs is not installed (the PyPI wheels): only its name is
    under test. A reliable transient-local subscription to /ns_q/latched is made once the
    first tick has arrived, long after the latched message went out."""
    rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed (no ROS 2 here)")
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.signals import SignalHandlerOptions
    from rosgraph_msgs.msg import Clock
    from std_msgs.msg import String as RosString

    String = bags.msg_class("std_msgs/msg/String")
    if _have_tf2_msgs():
        from tf2_msgs.msg import TFMessage as TfType
        tf_msg = bags.tf_static_msg({"lidar": np.eye(4)}, (1_700_000_000, 0), "camera")
    else:
        TfType, tf_msg = RosString, String(data="tf")
    messages = [("/latched", String(data="the map"), T0_NS),
                ("/tf", tf_msg, T0_NS + 50_000_000)]
    messages += [("/tick", String(data=str(k)), T0_NS + k * 100_000_000) for k in range(1, 26)]
    bag = _write_with_qos(tmp_path_factory.mktemp("qos") / "qos", messages, {
        "/latched": _qos(True, transient_local=True, depth=1), "/tf": _qos(True),
        "/tick": _qos(False)})

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(module_ros_env["ROS_DOMAIN_ID"]),
               signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("bag_qos_listener", context=context)
    events: list = []  # (topic, msg) in arrival order
    best_effort = QoSProfile(depth=100, reliability=ReliabilityPolicy.BEST_EFFORT)
    for topic, kind in (("/clock", Clock), (f"{NS_Q}/tick", RosString), ("/tf", TfType),
                        (f"{NS_Q}/tf", TfType)):
        node.create_subscription(kind, topic, lambda m, t=topic: events.append((t, m)),
                                 best_effort)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)

    def spin_until(predicate, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not predicate():
            executor.spin_once(timeout_sec=0.02)
        return predicate()

    proc = None
    offered = {}
    try:
        proc = _play(bag, module_ros_env, "--namespace", NS_Q, "--clock", "--wait-for",
                     "/tick", "--start-delay", "1.5")
        spin_until(lambda: any(t == f"{NS_Q}/tick" for t, _ in events)
                   or proc.poll() is not None,
                   60)
        for topic in (f"{NS_Q}/latched", "/tf", f"{NS_Q}/tick"):
            offered[topic] = [i.qos_profile for i in node.get_publishers_info_by_topic(topic)]
        latched = []
        node.create_subscription(
            RosString, f"{NS_Q}/latched", latched.append,
            QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.TRANSIENT_LOCAL))
        spin_until(lambda: latched, 5)
        spin_until(lambda: proc.poll() is not None, 30)
        spin_until(lambda: False, 0.3)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc is not None:
            _stop(proc)
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
    return {"events": events, "latched": latched, "offered": offered,
            "returncode": proc.returncode, "stdout": stdout, "stderr": stderr}


def test_play_replays_with_the_recorded_qos(played_qos):
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

    assert played_qos["returncode"] == 0, played_qos["stderr"]
    (latched,) = played_qos["offered"][f"{NS_Q}/latched"]
    assert latched.reliability == ReliabilityPolicy.RELIABLE
    assert latched.durability == DurabilityPolicy.TRANSIENT_LOCAL
    (tick,) = played_qos["offered"][f"{NS_Q}/tick"]
    assert tick.reliability == ReliabilityPolicy.BEST_EFFORT
    assert tick.durability == DurabilityPolicy.VOLATILE
    (tf,) = played_qos["offered"]["/tf"]
    assert tf.reliability == ReliabilityPolicy.RELIABLE
    # Subscribed after it was published, and still received.
    assert [m.data for m in played_qos["latched"]] == ["the map"]


def test_play_namespace_leaves_tf_alone(played_qos):
    topics = Counter(t for t, _ in played_qos["events"])
    assert topics["/tf"] == 1 and topics[f"{NS_Q}/tf"] == 0, topics
    assert 1 <= topics[f"{NS_Q}/tick"] <= 25, topics  # recorded best effort: some may be lost
    assert "/tf 1" in played_qos["stdout"]


def test_play_clock_holds_the_bag_start_before_playing(played_qos):
    """/clock is published at the bag's start time while --wait-for and --start-delay hold
    the first message (40 Hz for the 1.5 s delay), then runs on."""
    clock = [m.clock.sec * 10**9 + m.clock.nanosec for t, m in played_qos["events"]
             if t == "/clock"]
    # Held at the start before the first tick went out (playing itself publishes the start
    # time once or twice: its first message is at it). How many depends on the load.
    first_tick = next(i for i, (t, _) in enumerate(played_qos["events"])
                      if t == f"{NS_Q}/tick")
    held = [m.clock.sec * 10**9 + m.clock.nanosec
            for t, m in played_qos["events"][:first_tick] if t == "/clock"]
    assert held.count(T0_NS) >= 3, held[:30]
    assert clock == sorted(clock) and clock[-1] >= T0_NS + 2 * 10**9


def test_play_bad_bags_and_corrupt_topics_exit_2_with_one_line(drive_bag, ros_env, tmp_path):
    """A cut-off bag, a bag without metadata.yaml, and --corrupt on a topic play cannot
    damage: one error line, exit 2, before anything is published."""
    bag, _ = drive_bag
    cut = tmp_path / "cut"
    shutil.copytree(bag, cut)
    (mcap,) = cut.glob("*.mcap")
    os.truncate(mcap, mcap.stat().st_size // 2)
    killed = tmp_path / "killed"
    shutil.copytree(bag, killed)
    (killed / "metadata.yaml").unlink()
    String = bags.msg_class("std_msgs/msg/String")
    notes = _write_with_qos(tmp_path / "notes", [
        ("/notes", String(data="a"), T0_NS), ("/camera/image", bags.image_msg(
            np.zeros((4, 4), np.uint8), "mono8", 1_700_000_000.0, "cam"), T0_NS + 1)],
        {"/notes": _qos(True), "/camera/image": _qos(False)})
    cases = [((str(cut),), [str(cut), "File end magic is invalid"]),
             ((str(killed),), [str(killed), "ros2 bag reindex"]),
             ((str(notes), "--corrupt", "/notes:1.0"), ["/notes", "std_msgs/msg/String",
                                                         "sensor_msgs/msg/Image"]),
             ((str(bag), "--corrupt", "/tf_static:0.5"), ["/tf_static",
                                                          "tf2_msgs/msg/TFMessage"])]
    for args, expected in cases:
        done = subprocess.run([sys.executable, "-m", "anyseg_ros.tools.play", *args,
                               "--start-delay", "0"], cwd=REPO, env=ros_env,
                              capture_output=True, text=True, timeout=60)
        err = done.stderr
        assert done.returncode == 2, (args, err)
        assert err.startswith("error:") and err.count("\n") == 1, (args, err)
        assert all(e in err for e in expected), (args, err)
        assert "played" not in done.stdout, (args, done.stdout)


# --------------------------------------------------------------------------- demo


def test_demo_end_to_end(tiny_checkpoint, ros_env, tmp_path):
    import cv2

    out = tmp_path / "demo"
    done = subprocess.run([sys.executable, "-m", "anyseg_ros.tools.demo", "--out", str(out),
                           "--seconds", "6", "--faults", "lidar:2-3.5,camera:4-5", "--size",
                           *map(str, SIZE), "--checkpoint", str(tiny_checkpoint),
                           "--domain-id", ros_env["ROS_DOMAIN_ID"]],
                          cwd=REPO, env=ros_env, capture_output=True, text=True, timeout=400)
    logs = "".join((out / f).read_text()[-3000:] for f in ("node.log", "play.log")
                   if (out / f).is_file())
    assert done.returncode == 0, done.stderr + logs
    summary = (out / "summary.md").read_text()
    assert summary in done.stdout
    rows = {}
    for line in summary.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 6 and cells[2].isdigit():
            rows[cells[0]] = cells
    assert set(rows) == {"all sensors", "lidar off", "camera off"}, summary
    for phase, cells in rows.items():
        assert int(cells[2]) > 0, (phase, summary)  # frames out
    assert "CE x" in rows["lidar off"][3], summary
    assert "CEL x" in rows["all sensors"][3], summary
    assert int(rows["all sensors"][1]) >= 20  # camera frames in
    montage = cv2.imread(str(out / "montage.png"))
    timeline = cv2.imread(str(out / "timeline.png"))
    assert montage is not None and timeline is not None
    assert montage.shape[0] >= 3 * SIZE[0] and montage.shape[1] >= 5 * SIZE[1], montage.shape
    assert timeline.shape[1] >= 600 and 100 <= timeline.shape[0] <= 1000
    assert montage.std() > 10 and timeline.std() > 10  # not blank
    assert not (out / "work").exists()
    assert {p.name for p in out.iterdir()} >= {"summary.md", "summary.json", "montage.png",
                                               "timeline.png", "node.log", "play.log"}


def test_demo_default_checkpoint_is_shipped():
    from anyseg_core.checkpoint import read_metadata
    from anyseg_ros.tools import demo
    from anyseg_ros.params import DEMO_CHECKPOINT

    assert DEMO_CHECKPOINT == REPO / "anyseg_ros" / "checkpoints" / "demo.safetensors"
    assert DEMO_CHECKPOINT.is_file(), "make demo-checkpoint writes it"
    meta = read_metadata(DEMO_CHECKPOINT)
    assert {"camera", "events", "lidar"} <= set(meta["modalities"])
    assert len(meta["palette"]) == len(meta["class_names"])
    assert demo.DEMO_CHECKPOINT == DEMO_CHECKPOINT
    # It loads and runs where the demo runs by default (the node's device auto; here CPU).
    from anyseg_core.runtime import Runtime
    from anyseg_core.sensors import RawFrame

    runtime = Runtime(DEMO_CHECKPOINT, device="cpu", input_size=(64, 96), warmup=False)
    image = np.random.default_rng(0).integers(0, 256, (*SIZE, 3), dtype=np.uint8)
    K = np.array([[100.0, 0, 79.5], [0, 100.0, 47.5], [0, 0, 1]])
    labels = runtime.predict(RawFrame(image_hw=SIZE, K=K, camera=image), output_size=SIZE).labels
    assert tuple(labels.shape) == SIZE and int(labels.max()) < len(meta["class_names"])
