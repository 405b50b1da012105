"""The bag tools on bags that are not what they should be, without ROS.

Real bags are written with rosbags (a synthetic drive from ``anyseg_ros.tools.synthetic_bag``,
damaged or renamed copies of it, and small hand-made ones); ``process_bag`` runs on them with
a small random-weight checkpoint (camera, events, LiDAR) through its command line, in this
process. Damaged bags are made the way they come: a file cut off (a recording killed, a copy
interrupted), a sqlite3 page overwritten, metadata.yaml missing.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from anyseg_ros.tools import bag as bags
from anyseg_ros import conversions as conv
from anyseg_ros.params import load_params_file
from anyseg_ros.tools.process_bag import main as process_main
from anyseg_ros.tools.process_bag import process_bag
from anyseg_ros.tools.synthetic_bag import write_synthetic_bag
from helpers import random_checkpoint

SEED = 3
SIZE = (48, 64)
NET_HW = (64, 96)
SECONDS = 2.3


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return random_checkpoint(tmp_path_factory.mktemp("tools_ckpt") / "random.safetensors",
                             NET_HW)


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    """A synthetic drive as mcap and as sqlite3 (camera at 0.1 k s, received 0.01 s later;
    LiDAR stamped 0.037 s after the camera, received 0.05 s after its stamp)."""
    root = tmp_path_factory.mktemp("tools_bags")
    out = {}
    for storage in bags.STORAGES:
        out[storage] = root / f"drive_{storage}"
        write_synthetic_bag(out[storage], SECONDS, "clear-day", None, SEED, SIZE,
                            storage=storage, progress=False)
    return out


def _common(checkpoint) -> list[str]:
    return ["--checkpoint", str(checkpoint), "--device", "cpu", "--network",
            *map(str, NET_HW), "--quiet"]


def _values(bag: Path) -> dict:
    values = load_params_file(bags.params_path(bag))
    values.update({"device": "cpu", "network.height": NET_HW[0],
                   "network.width": NET_HW[1]})
    return values


def _copy(bag: Path, dst: Path) -> Path:
    shutil.copytree(bag, dst)
    return dst


def _storage_file(bag: Path) -> Path:
    (path,) = [p for p in bag.iterdir() if p.suffix in (".mcap", ".db3")]
    return path


def _cut(bag: Path, dst: Path, fraction: float = 0.5) -> Path:
    """A copy of ``bag`` whose storage file is cut off at ``fraction`` of its length."""
    _copy(bag, dst)
    path = _storage_file(dst)
    os.truncate(path, int(path.stat().st_size * fraction))
    return dst


def _no_partial_left(parent: Path) -> bool:
    return not [p for p in parent.iterdir() if p.name.endswith(".partial")]


# ---------------------------------------------------------------------- damaged bags


def test_cut_off_bags_raise_bag_error_naming_the_bag(drive, tmp_path):
    for storage, reason in (("mcap", "File end magic is invalid"),
                            ("sqlite3", "database disk image is malformed")):
        cut = _cut(drive[storage], tmp_path / f"cut_{storage}")
        for read in (bags.bag_topics, bags.bag_start_ns, lambda p: list(bags.read_bag(p))):
            with pytest.raises(bags.BagError) as e:
                read(cut)
            assert str(e.value).startswith(str(cut)) and reason in str(e.value), e.value
            assert isinstance(e.value, ValueError)  # the tools' usual error path


def test_missing_metadata_suggests_reindex(drive, tmp_path):
    killed = _copy(drive["mcap"], tmp_path / "killed")
    (killed / "metadata.yaml").unlink()
    for read in (bags.bag_topics, bags.bag_start_ns, lambda p: list(bags.read_bag(p))):
        with pytest.raises(FileNotFoundError) as e:
            read(killed)
        assert f"ros2 bag reindex {killed}" in str(e.value) and "drive_mcap.mcap" in str(e.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no metadata.yaml"):
        bags.bag_topics(empty)
    with pytest.raises(FileNotFoundError, match="pass"):  # the .mcap file instead of its dir
        bags.bag_topics(_storage_file(drive["mcap"]))


def test_process_bag_damaged_bags_are_one_error_line_and_leave_no_out(drive, checkpoint,
                                                                      tmp_path, capsys):
    cut = {s: _cut(drive[s], tmp_path / f"cut_{s}") for s in bags.STORAGES}
    # A sqlite3 page overwritten in the middle: the bag opens, reading stops half-way, after
    # OUT has frames in it.
    torn = _copy(drive["sqlite3"], tmp_path / "torn")
    path = _storage_file(torn)
    data = bytearray(path.read_bytes())
    at = int(len(data) * 0.4)
    data[at:at + 5000] = b"\x5a" * 5000
    path.write_bytes(bytes(data))
    killed = _copy(drive["mcap"], tmp_path / "killed")
    (killed / "metadata.yaml").unlink()
    out = tmp_path / "outs" / "out"
    out.parent.mkdir()
    for bag, expected in ((cut["mcap"], "File end magic is invalid"),
                          (cut["sqlite3"], "database disk image is malformed"),
                          (torn, "database disk image is malformed"),
                          (killed, "ros2 bag reindex")):
        code = process_main([str(bag), str(out), *_common(checkpoint)])
        captured = capsys.readouterr()
        assert code == 2, captured.err
        assert captured.err.startswith("error:") and captured.err.count("\n") == 1, captured.err
        assert str(bag) in captured.err and expected in captured.err, captured.err
        assert not out.exists() and not Path(str(out) + ".summary.json").exists()
        assert _no_partial_left(out.parent), list(out.parent.iterdir())
    # Nothing blocks the next run.
    code = process_main([str(drive["mcap"]), str(out), *_common(checkpoint)])
    assert code == 0, capsys.readouterr().err
    assert bags.bag_topics(out)["/anyseg/labels"][1] > 10
    assert json.loads(Path(str(out) + ".summary.json").read_text())["out"] == str(out)
    assert _no_partial_left(out.parent)


# ---------------------------------------------------------------------- topics and types


def _write(path: Path, messages: list) -> Path:
    """A bag of ``(topic, msg, seconds, msgtype or None)``."""
    with bags.BagWriter(path) as w:
        for topic, msg, t, msgtype in messages:
            w.write(topic, msg, int(round(t * 1e9)), msgtype)
    return path


def _sensor_messages(t: float, skip=()) -> list:
    """One camera image, CameraInfo, LiDAR sweep, event packet and label image at ``t``."""
    rng = np.random.default_rng(0)
    K = np.array([[60.0, 0, 31.5], [0, 60.0, 23.5], [0, 0, 1]])
    image = rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)
    points = np.c_[rng.uniform(-5, 5, (200, 2)), rng.uniform(4, 20, 200),
                   rng.uniform(0, 1, 200)].astype(np.float32)
    msgs = [("/camera/image", bags.image_msg(image, "rgb8", t, "camera_optical")),
            ("/camera/camera_info", bags.camera_info_msg(K, SIZE, t, "camera_optical")),
            ("/lidar/points", bags.lidar_msg(points, t)),
            ("/events", bags.EventPacketWriter((48, 64)).msg([1, 2], [3, 4], [t - 0.001, t],
                                                             [0, 1], t)),
            ("/gt/labels", bags.image_msg(np.zeros(SIZE, np.uint8), "mono8", t,
                                          "camera_optical"))]
    return [(topic, msg, t + 0.01, None) for topic, msg in msgs if topic not in skip]


def test_process_bag_refuses_topics_of_other_types(checkpoint, tmp_path, capsys):
    t0 = 1_700_000_000.0
    ts = bags.typestore()
    String = bags.msg_class("std_msgs/msg/String")
    CompressedImage = ts.types["sensor_msgs/msg/CompressedImage"]
    compressed = CompressedImage(header=bags.image_msg(np.zeros((2, 2), np.uint8), "mono8", t0,
                                                       "camera_optical").header,
                                 format="jpeg", data=np.zeros(10, np.uint8))
    K = np.eye(3)
    cases = {
        # (a CompressedImage camera is read: test_session_rig.py)
        "lidar_image": ([("/lidar/points", compressed, t0, None)],
                        ["/lidar/points", "sensor_msgs/msg/CompressedImage",
                         "sensor_msgs/msg/PointCloud2", "--topic lidar=TOPIC"]),
        "gt_info": ([("/gt/labels", bags.camera_info_msg(K, SIZE, t0, "c"), t0, None)],
                    ["/gt/labels", "sensor_msgs/msg/CameraInfo", "sensor_msgs/msg/Image"]),
        "info_image": ([("/camera/camera_info", bags.image_msg(np.zeros(SIZE, np.uint8),
                                                               "mono8", t0, "c"), t0, None)],
                       ["/camera/camera_info", "sensor_msgs/msg/Image",
                        "sensor_msgs/msg/CameraInfo"]),
        "no_sensors": ([("/chatter", String(data="hello"), t0, None)],
                       ["none of the sensor topics", "/chatter (std_msgs/msg/String)",
                        "--topic"]),
    }
    for name, (replaced, expected) in cases.items():
        topics = {topic for topic, *_ in replaced}
        bag = _write(tmp_path / name, _sensor_messages(t0, skip=topics) + replaced
                     if name != "no_sensors" else replaced)
        out = tmp_path / f"out_{name}"
        code = process_main([str(bag), str(out), *_common(checkpoint)])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error:") and err.count("\n") == 1, (name, err)
        assert all(e in err for e in expected), (name, err)
        assert not out.exists() and _no_partial_left(tmp_path), name

    # A type this machine has no definition of (a vendor's driver message) on the LiDAR topic.
    from rosbags.rosbag2 import Writer

    odd = tmp_path / "vendor"
    with Writer(odd, version=9) as w:
        conns = {}
        for topic, msg, t, _ in _sensor_messages(t0, skip=("/lidar/points",)):
            conns[topic] = w.add_connection(topic, msg.__msgtype__, typestore=ts)
            w.write(conns[topic], int(t * 1e9), ts.serialize_cdr(msg, msg.__msgtype__))
        sweep = w.add_connection("/lidar/points", "acme_msgs/msg/Sweep", msgdef="uint8[] data",
                                 rihs01="RIHS01_" + "ab" * 32)
        w.write(sweep, int((t0 + 0.02) * 1e9), bytes([0, 1, 0, 0, 2, 0, 0, 0, 7, 9]))
    code = process_main([str(odd), str(tmp_path / "out_vendor"), *_common(checkpoint)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:"), err
    assert "/lidar/points" in err and "acme_msgs/msg/Sweep" in err and "PointCloud2" in err


def test_process_bag_topic_option_reads_other_names(drive, checkpoint, tmp_path, capsys):
    renamed = {"/camera/image": "/front/image_raw", "/camera/camera_info": "/front/camera_info",
               "/lidar/points": "/velodyne_points"}
    bag = tmp_path / "renamed"
    with bags.BagWriter(bag) as w:
        for m in bags.read_bag(drive["mcap"]):
            w.write_raw(renamed.get(m.topic, m.topic), m.data, m.time_ns, m.msgtype)
    shutil.copy(bags.params_path(drive["mcap"]), bags.params_path(bag))
    only_front = tmp_path / "front_only"
    with bags.BagWriter(only_front) as w:
        for m in bags.read_bag(bag, ["/front/image_raw", "/front/camera_info"]):
            w.write_raw(m.topic, m.data, m.time_ns, m.msgtype)
    code = process_main([str(only_front), str(tmp_path / "o1"), *_common(checkpoint)])
    err = capsys.readouterr().err
    assert code == 2 and "none of the sensor topics" in err, err
    assert "/front/image_raw (sensor_msgs/msg/Image)" in err, err

    out = tmp_path / "out"
    code = process_main([str(bag), str(out), *_common(checkpoint), "--topic",
                         "camera=/front/image_raw", "--topic", "camera_info=/front/camera_info",
                         "--topic", "lidar=velodyne_points"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads(Path(str(out) + ".summary.json").read_text())
    reference = process_bag(drive["mcap"], tmp_path / "reference", checkpoint,
                            _values(drive["mcap"]), progress=False)
    assert summary["received"] == reference["received"]
    assert summary["received"]["camera"] == 24 and summary["received"]["lidar"] == 23
    assert summary["camera_info_seen"] and summary["topics"]["lidar"] == "/velodyne_points"
    assert summary["frames_out"] == reference["frames_out"]
    assert summary["modality_sets"] == reference["modality_sets"]
    for bad in ("radar=/r", "camera", "camera="):
        code = process_main([str(bag), str(tmp_path / "o2"), *_common(checkpoint), "--topic",
                             bad])
        assert code == 2 and "--topic" in capsys.readouterr().err, bad


def test_process_bag_counts_bad_ground_truth_and_goes_on(drive, checkpoint, tmp_path):
    """A 16UC1 label image and a truncated one are rejected; the rest is scored."""
    src = drive["mcap"]
    bag = tmp_path / "bad_gt"
    labels = [m for m in bags.read_bag(src, ["/gt/labels"])]
    assert len(labels) == 24
    ts = bags.typestore()
    with bags.BagWriter(bag) as w:
        for m in bags.read_bag(src):
            data = m.data
            if m.topic == "/gt/labels" and m.time_ns == labels[3].time_ns:
                msg = m.decode()
                array = conv.image_to_array(msg)[0].astype(np.uint16)
                wide = bags.image_msg(array, "16UC1", (msg.header.stamp.sec,
                                                       msg.header.stamp.nanosec),
                                      msg.header.frame_id)
                data = ts.serialize_cdr(wide, m.msgtype)
            elif m.topic == "/gt/labels" and m.time_ns == labels[7].time_ns:
                msg = m.decode()
                msg.data = msg.data[:-5]
                data = ts.serialize_cdr(msg, m.msgtype)
            w.write_raw(m.topic, data, m.time_ns, m.msgtype)
    summary = process_bag(bag, tmp_path / "out", checkpoint, _values(src), progress=False)
    assert summary["rejected"] == {"gt:data_length": 1, "gt:unknown_encoding": 1}
    reference = process_bag(src, tmp_path / "reference", checkpoint, _values(src),
                            progress=False)
    assert summary["frames_out"] == reference["frames_out"] > 20
    assert summary["scored"] == reference["scored"] - 2


# ---------------------------------------------------------------------- phases


def test_phases_are_the_frames_that_could_use_a_silenced_message(drive, checkpoint, tmp_path):
    """--faults lidar:0.95-1.95 (receive time) silences the sweeps received 0.987 .. 1.887 s,
    stamped 0.937 .. 1.837 s: the camera frames of 0.9 .. 1.8 s have no LiDAR (0.9 would have
    taken the sweep of 0.937), nor has the one of 1.9 s (the LiDAR went stale and its sweep of
    1.937 s arrives after the frame went out); 2.0 s has it again. Named by stamp in the
    window, 0.9 would be in "all sensors"."""
    bag = drive["mcap"]
    out = tmp_path / "out"
    summary = process_bag(bag, out, checkpoint, _values(bag), {"lidar": [(0.95, 1.95)]},
                          progress=False)
    assert summary["silenced"] == {"lidar": 10}
    assert {k: v["frames"] for k, v in summary["phases"].items()} == {
        "all sensors": 13, "lidar off 0.95-1.95 s": 11}
    assert summary["fault_stamps"] == {"lidar off 0.95-1.95 s": [0.937, 1.837]}
    t0 = bags.bag_start_ns(bag) * 1e-9
    frames = [json.loads(m.decode().data) for m in bags.read_bag(out, ["/anyseg/status"])]
    without = sorted(round(f["stamp"] - t0, 3) for f in frames
                     if f["pivot"] == "camera" and "lidar" not in f["modalities"]
                     and f["stamp"] - t0 > 0.05)  # the first frame: no LiDAR yet
    # 0.9 .. 1.9, and 2.3: its sweep (2.337 s) is past the bag's end
    assert without == [round(0.1 * k, 3) for k in (*range(9, 20), 23)], without
    phases = summary["phases"]
    assert set(phases) == {"all sensors", "lidar off 0.95-1.95 s"}
    assert phases["lidar off 0.95-1.95 s"]["modalities"] == {"CE": 11}
    # Without the LiDAR in "all sensors": the first frame (no sweep yet) and the last (its
    # sweep, 2.337 s, is past the bag's end).
    assert phases["all sensors"]["modalities"] == {"C": 1, "CE": 1, "CEL": 11}


# ---------------------------------------------------------------------- writer and play


def test_bag_writer_takes_the_messages_own_type(tmp_path):
    ts = bags.typestore()
    header = bags.image_msg(np.zeros((2, 2), np.uint8), "mono8", 5.0, "cam").header
    compressed = ts.types["sensor_msgs/msg/CompressedImage"](header=header, format="png",
                                                            data=np.arange(7, dtype=np.uint8))
    String = bags.msg_class("std_msgs/msg/String")
    bag = tmp_path / "types"
    with bags.BagWriter(bag) as w:
        w.write("/camera/image", compressed, 1)   # the table says Image
        w.write("/gt/labels", String(data="x"), 2, "std_msgs/msg/String")
        w.write("/events", bags.events_msg([1], [2], [5.0], [1], 5.0), 3)
        with pytest.raises(ValueError, match="CompressedImage"):
            w.write("/camera/image", bags.image_msg(np.zeros((2, 2), np.uint8), "mono8", 5.0,
                                                    "cam"), 4)
    assert bags.bag_topics(bag) == {"/camera/image": ("sensor_msgs/msg/CompressedImage", 1),
                                    "/gt/labels": ("std_msgs/msg/String", 1),
                                    "/events": ("sensor_msgs/msg/PointCloud2", 1)}
    (m,) = bags.read_bag(bag, ["/camera/image"])
    assert m.decode().format == "png" and list(m.decode().data) == list(range(7))


def test_play_corrupt_nan_honours_big_endian_clouds(tmp_path):
    from anyseg_ros.tools.play import corrupt

    rng = np.random.default_rng(1)
    xyz = rng.uniform(1, 10, (50, 3))
    Cloud = bags.msg_class("sensor_msgs/msg/PointCloud2")
    Field = bags.msg_class("sensor_msgs/msg/PointField")
    big = bags.lidar_msg(np.c_[xyz, np.ones(50)].astype(np.float32), 7.0)
    cols = {"x": ">f4", "y": ">f4", "z": ">f4", "t": ">f8"}
    rows = np.zeros(50, dtype=[(k, v) for k, v in cols.items()])
    rows["x"], rows["y"], rows["z"], rows["t"] = xyz[:, 0], xyz[:, 1], xyz[:, 2], 7.0
    fields = [Field(name=k, offset=rows.dtype.fields[k][1], datatype=7 if v == ">f4" else 8,
                    count=1) for k, v in cols.items()]
    big = Cloud(header=big.header, height=1, width=50, fields=fields, is_bigendian=True,
                point_step=rows.dtype.itemsize, row_step=rows.dtype.itemsize * 50,
                data=np.frombuffer(rows.tobytes(), np.uint8), is_dense=True)
    bag = _write(tmp_path / "big_endian", [("/lidar/points", big, 7.0, None)])
    (m,) = bags.read_bag(bag)
    points, _ = conv.lidar_points(m.decode())  # valid as written
    assert np.allclose(points[:, :3], xyz, atol=1e-5)
    damaged = corrupt(m.decode(), "non_finite")
    with pytest.raises(conv.InvalidMessage) as e:
        conv.lidar_points(damaged)
    assert e.value.reason == "non_finite"
    assert np.isnan(conv.cloud_to_array(damaged, ("x", "y", "z"))).all()
    assert np.isnan(conv.cloud_to_array(damaged, ("t",), np.float64)).all()


# ---------------------------------------------------------------------- compressed camera


def _compressed_bag(tmp_path: Path, n: int = 6) -> tuple[Path, np.ndarray]:
    """JPEG and PNG CompressedImages on /camera/image/compressed, built with the bag
    writer's classes: a smooth picture (what JPEG keeps well)."""
    y, x = np.mgrid[0:SIZE[0], 0:SIZE[1]]
    rgb = np.stack([x * 3, y * 4, 128 + 0 * x], axis=-1).astype(np.uint8)
    t0 = 1_700_000_000.0
    topic = bags.TOPICS["camera_compressed"]
    messages = [(topic, bags.compressed_image_msg(rgb, "rgb8", t0 + 0.1 * k, "camera_optical",
                                                  codec="jpeg" if k % 2 == 0 else "png"),
                 t0 + 0.1 * k + 0.01, None) for k in range(n)]
    return _write(tmp_path / "compressed", messages), rgb


def test_bags_hold_compressed_images(tmp_path):
    bag, rgb = _compressed_bag(tmp_path)
    topic = bags.TOPICS["camera_compressed"]
    assert bags.bag_topics(bag) == {topic: ("sensor_msgs/msg/CompressedImage", 6)}
    assert bags.MSGTYPES[topic] == "sensor_msgs/msg/CompressedImage"
    assert bags.TOPIC_SENSOR[topic] == "camera"  # --drop camera / --corrupt camera take it
    formats = []
    for m in bags.read_bag(bag):
        msg = m.decode()
        formats.append(msg.format)
        image, encoding = conv.compressed_to_array(msg)
        assert encoding == "rgb8" and image.shape == (*SIZE, 3)
        if "png" in msg.format:
            np.testing.assert_array_equal(image, rgb)
        else:
            assert np.abs(image.astype(np.int16) - rgb).mean() < 2.0
    assert formats[:2] == ["rgb8; jpeg compressed bgr8", "rgb8; png compressed bgr8"]


def test_play_corrupts_compressed_images_so_that_they_are_rejected(tmp_path):
    """Each kind, on a JPEG and on a PNG, serialised as play publishes it: a payload cut in
    half and garbage bytes are bad_compressed, a header saying 65535 x 65535 is bad_size."""
    from anyseg_ros.tools.play import CORRUPTIBLE, CORRUPTIONS, corrupt

    assert "sensor_msgs/msg/CompressedImage" in CORRUPTIBLE
    bag, _ = _compressed_bag(tmp_path, 2)
    ts = bags.typestore()
    expected = {"truncated": "bad_compressed", "wrong_size": "bad_size",
                "non_finite": "bad_compressed"}
    rng = np.random.default_rng(0)
    for m in bags.read_bag(bag):
        original = m.decode()
        conv.compressed_to_array(original)  # valid as written
        for kind in CORRUPTIONS:
            damaged = corrupt(m.decode(), kind, rng)
            sent = ts.deserialize_cdr(ts.serialize_cdr(damaged, m.msgtype), m.msgtype)
            assert sent.format == original.format and sent.header == original.header
            with pytest.raises(conv.InvalidMessage) as e:
                conv.compressed_to_array(sent)
            assert e.value.reason == expected[kind], (original.format, kind, str(e.value))
            if kind == "wrong_size":
                header = conv.compressed_header(sent.data)
                assert (header.height, header.width) == (65535, 65535)
                assert len(sent.data) == len(original.data)
            elif kind == "truncated":
                assert bytes(sent.data) == bytes(original.data)[:len(original.data) // 2]
            else:
                assert len(sent.data) == len(original.data)
                assert bytes(sent.data[:3]) != bytes(original.data[:3])


def test_player_corrupts_a_compressed_topic(tmp_path):
    """Player with --corrupt camera:1 on a compressed camera bag, publishing into a stand-in
    node: every message damaged in turn, counted as truncated, wrong_size and garbage."""
    pytest.importorskip("rclpy.qos", reason="rclpy is not installed")
    pytest.importorskip("sensor_msgs.msg", reason="sensor_msgs is not installed")
    from anyseg_ros.tools.play import Player

    class Publisher:
        def __init__(self):
            self.sent = []

        def publish(self, data):
            self.sent.append(data)

    class Node:
        def __init__(self):
            self.publishers = {}

        def create_publisher(self, cls, name, qos):
            assert cls.__name__ == "CompressedImage"
            return self.publishers.setdefault(name, Publisher())

    bag, _ = _compressed_bag(tmp_path)
    node = Node()
    player = Player(node, bag, corrupt_fraction=["camera:1.0"], seed=4)
    player.play_once(rate=1000.0)
    topic = bags.TOPICS["camera_compressed"]
    assert player.stats["corrupted"] == {f"{topic}:truncated": 2, f"{topic}:wrong_size": 2,
                                         f"{topic}:garbage": 2}
    ts = bags.typestore()
    reasons = []
    for data in node.publishers[topic].sent:
        with pytest.raises(conv.InvalidMessage) as e:
            conv.compressed_to_array(ts.deserialize_cdr(data, "sensor_msgs/msg/CompressedImage"))
        reasons.append(e.value.reason)
    assert reasons == ["bad_compressed", "bad_size", "bad_compressed"] * 2
