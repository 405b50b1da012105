"""Bags written by ``python -m anyseg_ros.tools.synthetic_bag``, read back without ROS.

Real bag files are written (mcap and sqlite3) and read with the project's own reader; every
message is compared with the drive it was made of (``anyseg_core.data.synthetic.sequence``
with the same seed and size). Fault windows start and end between sensor ticks, so the
expected counts follow from the nominal rates alone (camera and LiDAR at 10 Hz, the LiDAR
0.037 s after the camera, event packets every 0.01 s).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from anyseg_core.data.synthetic.rig import RigConfig
from anyseg_core.data.synthetic.sequence import drive, drive_calibration
from anyseg_ros.tools import bag as bags
from anyseg_ros import conversions as conv
from anyseg_ros.events import EventPacketStream
from anyseg_ros.params import defaults, geometry_from_params, load_params_file
from anyseg_ros.tools.synthetic_bag import main as synthetic_bag_main
from anyseg_ros.tools.synthetic_bag import write_synthetic_bag

REPO = Path(__file__).resolve().parents[2]
SEED = 5
SECONDS = 2.0
SIZE = (96, 160)
# Boundaries between ticks: camera at k * 0.1, LiDAR at 0.037 + k * 0.1, events at 0.01 k.
FAULTS = "lidar:0.5-1.2,camera:1.05-1.45,events:0.305-0.505"
WINDOWS = {"lidar": (0.5, 1.2), "camera": (1.05, 1.45), "events": (0.305, 0.505)}
NOMINAL = {"camera": (0.0, 0.1), "lidar": (0.037, 0.1), "events": (0.01, 0.01)}  # phase, period
DELAY = {"camera": 0.01, "lidar": 0.05, "events": 0.0}


def _nominal_times(sensor: str) -> list[float]:
    phase, period = NOMINAL[sensor]
    n = int(round((SECONDS - phase) / period)) + 1
    return [phase + k * period for k in range(n) if phase + k * period <= SECONDS + 1e-9]


def _kept(sensor: str) -> list[float]:
    a, b = WINDOWS[sensor]
    return [t for t in _nominal_times(sensor) if not a <= t < b]


@pytest.fixture(scope="module")
def drive_messages():
    """The drive the bags are made of, rendered again here."""
    return list(drive(SEED, SECONDS, "clear-day", RigConfig(image_hw=SIZE)))


@pytest.fixture(scope="module")
def mcap_bag(tmp_path_factory):
    """Written with the command line, as a user would."""
    out = tmp_path_factory.mktemp("synthetic") / "drive"
    done = subprocess.run([sys.executable, "-m", "anyseg_ros.tools.synthetic_bag", str(out),
                           "--seconds", str(SECONDS), "--seed", str(SEED), "--size",
                           *map(str, SIZE), "--faults", FAULTS, "--quiet"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "/lidar/points" in done.stdout and "left out" in done.stdout, done.stdout
    return out


@pytest.fixture(scope="module")
def sqlite_bag(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic_sqlite") / "drive"
    summary = write_synthetic_bag(out, SECONDS, "clear-day", bags.parse_windows(FAULTS), SEED,
                                  SIZE, storage="sqlite3", progress=False)
    return out, summary


@pytest.fixture(scope="module")
def mcap_messages(mcap_bag):
    return list(bags.read_bag(mcap_bag))


def test_storages_write_the_files_rosbag2_expects(mcap_bag, sqlite_bag):
    assert sorted(p.name for p in mcap_bag.iterdir()) == ["drive.mcap", "metadata.yaml"]
    assert sorted(p.name for p in sqlite_bag[0].iterdir()) == ["drive.db3", "metadata.yaml"]
    import yaml

    for bag, storage in ((mcap_bag, "mcap"), (sqlite_bag[0], "sqlite3")):
        meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
        assert meta["version"] == 9 and meta["storage_identifier"] == storage


def test_topics_types_and_counts_follow_the_faults(mcap_bag, sqlite_bag):
    expected = {
        "/camera/image": ("sensor_msgs/msg/Image", len(_kept("camera"))),
        "/camera/camera_info": ("sensor_msgs/msg/CameraInfo", len(_kept("camera"))),
        "/lidar/points": ("sensor_msgs/msg/PointCloud2", len(_kept("lidar"))),
        "/events": ("event_camera_msgs/msg/EventPacket", len(_kept("events"))),
        "/tf_static": ("tf2_msgs/msg/TFMessage", 1),
        "/gt/labels": ("sensor_msgs/msg/Image", len(_nominal_times("camera"))),
    }
    # The rates as documented, and windows that really remove something.
    assert len(_nominal_times("camera")) == 21 and len(_kept("camera")) == 17
    assert len(_nominal_times("lidar")) == 20 and len(_kept("lidar")) == 13
    assert len(_nominal_times("events")) == 200 and len(_kept("events")) == 180
    assert bags.bag_topics(mcap_bag) == expected
    assert bags.bag_topics(sqlite_bag[0]) == expected
    summary = sqlite_bag[1]
    assert summary["silenced"] == {"camera": 4, "lidar": 7, "events": 20, "depth": 0}
    assert summary["messages"] == {t: n for t, (_, n) in expected.items()}


def test_mcap_and_sqlite3_hold_the_same_messages(mcap_messages, sqlite_bag):
    other = list(bags.read_bag(sqlite_bag[0]))
    assert len(other) == len(mcap_messages)
    for a, b in zip(mcap_messages, other):
        assert (a.topic, a.msgtype, a.time_ns) == (b.topic, b.msgtype, b.time_ns)
        assert a.data == b.data, a.topic


def test_messages_in_receive_time_order_with_the_driver_delays(mcap_messages):
    times = [m.time_ns for m in mcap_messages]
    assert times == sorted(times)
    assert mcap_messages[0].topic == "/tf_static"
    for m in mcap_messages:
        if m.topic == "/tf_static":
            continue
        sensor = bags.TOPIC_SENSOR.get(m.topic, "camera")  # gt: with its camera image
        stamp = conv.stamp_to_sec(m.decode().header.stamp)
        if m.topic == "/events":  # stamped at its first event, received at its end (10 ms)
            assert 0 <= m.time_ns * 1e-9 - stamp < 0.0101, (m.topic, stamp)
            continue
        # float seconds near 1.7e9 carry ~0.25 us of rounding
        assert abs(m.time_ns * 1e-9 - stamp - DELAY[sensor]) < 1e-6, (m.topic, stamp)
    only = [(m.topic, m.time_ns) for m in mcap_messages
            if m.topic in ("/camera/image", "/camera/camera_info", "/gt/labels")]
    assert len(only) == 17 * 2 + 21


def test_every_message_equals_the_drive(mcap_messages, drive_messages):
    t_start = drive_messages[0].stamp
    assert drive_messages[0].sensor == "camera"
    by_topic: dict[str, list] = {}
    for m in mcap_messages:
        by_topic.setdefault(m.topic, []).append(m.decode())
    kept = {s: [m for m in drive_messages if m.sensor == s
                and not WINDOWS[s][0] <= m.stamp - t_start < WINDOWS[s][1]]
            for s in ("camera", "lidar", "events")}
    cameras = [m for m in drive_messages if m.sensor == "camera"]
    # Drive times as the nominal rates say (10 Hz, 10 Hz + 0.037 s, 100 Hz).
    for sensor in kept:
        assert np.allclose([m.stamp - t_start for m in kept[sensor]], _kept(sensor), atol=1e-6)

    for msg, m in zip(by_topic["/camera/image"], kept["camera"], strict=True):
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == conv.sec_to_stamp(m.stamp)
        assert msg.header.frame_id == "camera_optical"
        image, encoding = conv.image_to_array(msg)
        assert encoding == "rgb8" and np.array_equal(image, m.data["image"])
    calib = drive_calibration(RigConfig(image_hw=SIZE))
    for msg, m in zip(by_topic["/camera/camera_info"], kept["camera"], strict=True):
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == conv.sec_to_stamp(m.stamp)
        K, hw, distortion, _ = conv.camera_info(msg)
        assert hw == SIZE and np.array_equal(K, calib["K"]) and distortion is None
    for msg, m in zip(by_topic["/gt/labels"], cameras, strict=True):
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == conv.sec_to_stamp(m.stamp)
        labels, encoding = conv.image_to_array(msg)
        assert encoding == "mono8" and np.array_equal(labels, m.data["label"])
    for msg, m in zip(by_topic["/lidar/points"], kept["lidar"], strict=True):
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == conv.sec_to_stamp(m.stamp)
        assert msg.header.frame_id == "lidar"
        fields = {f.name: f.datatype for f in msg.fields}
        assert fields == {"x": 7, "y": 7, "z": 7, "intensity": 7, "t": 8}  # FLOAT32 / FLOAT64
        points, dropped = conv.lidar_points(msg)
        assert dropped == 0 and points.dtype == np.float32
        assert np.array_equal(points, m.data[:, :4].astype(np.float32))
        t = conv.cloud_to_array(msg, ("t",), np.float64)[:, 0]
        assert np.array_equal(t, m.data[:, 5])  # absolute float64 seconds, bit for bit
        assert m.stamp - 0.06 < t.min() and t.max() < m.stamp + 0.06
    events_hw = tuple(calib["events_hw"])
    stream, total = EventPacketStream(backend="numpy"), 0
    for seq, (msg, m) in enumerate(zip(by_topic["/events"], kept["events"], strict=True)):
        # as metavision_driver: evt3 on the camera's clock, stamped at the first event
        assert (msg.encoding, msg.time_base, msg.seq, msg.is_bigendian) == ("evt3", 0, seq,
                                                                            False)
        assert (msg.height, msg.width) == events_hw
        assert msg.header.frame_id == "event_camera_optical"
        ev = stream(msg, events_hw)
        order = np.argsort(m.data.t, kind="stable")
        for name in ("x", "y", "p"):
            assert np.array_equal(getattr(ev, name), np.asarray(getattr(m.data, name))[order])
        # times to the microsecond (EVT 3.0's resolution), on ROS time again
        np.testing.assert_allclose(ev.t, np.asarray(m.data.t)[order], rtol=0, atol=1e-6)
        if len(ev.t):
            assert abs(conv.stamp_to_sec(msg.header.stamp) - ev.t[0]) < 1e-6
        assert ev.t.dtype == np.float64 and ev.p.dtype == np.uint8
        total += len(ev.t)
    assert total > 1000


def _quaternion_matrix(x, y, z, w):
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def test_tf_static_reproduces_the_extrinsics(mcap_messages, drive_messages):
    calib = drive_calibration(RigConfig(image_hw=SIZE))
    tf = [m for m in mcap_messages if m.topic == "/tf_static"]
    assert len(tf) == 1 and tf[0].time_ns == int(round(drive_messages[0].stamp * 1e9))
    transforms = {t.child_frame_id: t for t in tf[0].decode().transforms}
    assert set(transforms) == {"lidar", "event_camera_optical"}
    for child, key in (("lidar", "T_cam_lidar"), ("event_camera_optical", "T_cam_events")):
        t = transforms[child]
        assert t.header.frame_id == "camera_optical"
        assert (t.header.stamp.sec, t.header.stamp.nanosec) == conv.sec_to_stamp(
            drive_messages[0].stamp)
        q, v = t.transform.rotation, t.transform.translation
        T = np.eye(4)
        T[:3, :3] = _quaternion_matrix(q.x, q.y, q.z, q.w)
        T[:3, 3] = (v.x, v.y, v.z)
        assert np.allclose(T, calib[key], atol=1e-12), (child, T, calib[key])
    assert not np.allclose(calib["T_cam_lidar"][:3, :3], np.eye(3))  # a real rotation


def _random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def test_rotation_to_quaternion_round_trip():
    rng = np.random.default_rng(0)
    rotations = [np.eye(3)] + [_random_rotation(rng) for _ in range(200)]
    axes = [np.array(a, float) for a in ((1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0),
                                         (1, -2, 3), (0, -1, 1))]
    axes += [rng.normal(size=3) for _ in range(20)]
    for u in axes:  # 180 degrees about u: trace -1, where naive formulas divide by zero
        u = u / np.linalg.norm(u)
        rotations.append(2 * np.outer(u, u) - np.eye(3))
    for angle in (1e-9, 0.5, np.pi - 1e-6, np.pi - 1e-9):  # near the identity and near 180
        u = rng.normal(size=3)
        u /= np.linalg.norm(u)
        Kx = np.array([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]])
        rotations.append(np.eye(3) + np.sin(angle) * Kx + (1 - np.cos(angle)) * Kx @ Kx)
    for R in rotations:
        q = bags.rotation_to_quaternion(R)
        assert len(q) == 4 and all(isinstance(v, float) for v in q)
        assert abs(np.linalg.norm(q) - 1) < 1e-12 and q[3] >= 0
        assert np.allclose(_quaternion_matrix(*q), R, atol=1e-9), (R, q)
    assert bags.rotation_to_quaternion(np.diag([1.0, -1.0, -1.0])) == pytest.approx(
        (1.0, 0.0, 0.0, 0.0))


def test_params_file_beside_the_bag_matches_the_calibration(mcap_bag):
    path = bags.params_path(mcap_bag)
    assert path == mcap_bag.parent / "drive.params.yaml" and path.is_file()
    calib = drive_calibration(RigConfig(image_hw=SIZE))
    values = load_params_file(path)
    # The extrinsics are in the bag's /tf_static (test_tf_static_reproduces_the_extrinsics):
    # the params file holds what TF cannot carry.
    assert set(values) == {"events.type", "events.K", "events.height", "events.width"}
    assert values["events.type"] == "packet"  # how the bag holds its events
    assert np.array_equal(np.reshape(values["events.K"], (3, 3)), calib["events_K"])
    assert (values["events.height"], values["events.width"]) == tuple(calib["events_hw"])
    v = defaults()
    v.update(values)
    geometry = geometry_from_params(v)
    assert geometry.events_hw == tuple(calib["events_hw"])
    # Asked for, the extrinsics are written as parameters too (they then override TF).
    tree = bags.node_params(calib, extrinsics=True)["/**"]["ros__parameters"]
    assert np.array_equal(np.reshape(tree["lidar"]["T_cam_lidar"], (4, 4)), calib["T_cam_lidar"])
    assert np.array_equal(np.reshape(tree["events"]["T_cam_events"], (4, 4)),
                          calib["T_cam_events"])


def test_depth_topic_and_its_fault(tmp_path):
    out = tmp_path / "depth_drive"
    summary = write_synthetic_bag(out, 0.3, "clear-day", {"depth": [(0.15, 0.25)]}, SEED,
                                  (48, 64), depth=True, progress=False)
    topics = bags.bag_topics(out)
    assert topics["/depth/image"] == ("sensor_msgs/msg/Image", 3)  # 0.0-0.3 but 0.2
    assert topics["/camera/image"][1] == 4 and summary["silenced"]["depth"] == 1
    cameras = [m for m in drive(SEED, 0.3, "clear-day", RigConfig(image_hw=(48, 64)))
               if m.sensor == "camera"]
    depth = [m.decode() for m in bags.read_bag(out, ["/depth/image"])]
    for msg, m in zip(depth, [cameras[0], cameras[1], cameras[3]], strict=True):
        assert conv.stamp_to_sec(msg.header.stamp) == pytest.approx(m.stamp, abs=1e-6)
        array, encoding = conv.image_to_array(msg)
        assert encoding == "32FC1" and np.array_equal(array, m.data["depth"])


def test_command_line_errors_exit_2_with_a_message(mcap_bag, tmp_path, capsys):
    before = sorted(p.name for p in mcap_bag.iterdir())
    done = subprocess.run([sys.executable, "-m", "anyseg_ros.tools.synthetic_bag", str(mcap_bag),
                           "--seconds", "0.2", "--quiet"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "exists" in done.stderr and str(mcap_bag) in done.stderr
    assert sorted(p.name for p in mcap_bag.iterdir()) == before

    cases = [("lidar:5-3", "lidar:5-3"), ("lidar", "NAME:START-END"),
             ("lidar:a-b", "lidar:a-b"), ("lidar:1-2-3", "lidar:1-2-3"),
             ("radar:1-2", "radar"), ("depth:1-2", "depth")]  # no --depth: no depth sensor
    for faults, expected in cases:
        out = tmp_path / f"bad_{len(list(tmp_path.iterdir()))}"
        code = synthetic_bag_main([str(out), "--seconds", "0.2", "--faults", faults, "--quiet"])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error:") and expected in err, (faults, err)
        assert not out.exists() and not bags.params_path(out).exists(), faults
    code = synthetic_bag_main([str(tmp_path / "bad_cond"), "--seconds", "0.2", "--condition",
                               "lava-noon", "--quiet"])
    assert code == 2 and "lava" in capsys.readouterr().err
    assert not (tmp_path / "bad_cond").exists()


def test_windows_on_sensor_ticks_include_the_start_and_exclude_the_end(tmp_path):
    """START <= t < END in drive seconds, also when a window starts or ends on a tick (the
    stamps are float seconds near 1.7e9, 0.1 s of which is not exact)."""
    out = tmp_path / "ticks"
    write_synthetic_bag(out, 0.5, "clear-day", bags.parse_windows(
        "camera:0.1-0.3,lidar:0.137-0.337,events:0.05-0.1"), SEED, (48, 64), progress=False)
    stamps: dict[str, list] = {}
    t_start = None
    for m in bags.read_bag(out):
        if m.topic == "/tf_static":
            t_start = conv.stamp_to_sec(m.decode().transforms[0].header.stamp)
            continue
        # an event packet is stamped at its first event and received at its end: its tick
        at = m.time_ns * 1e-9 if m.topic == "/events" else conv.stamp_to_sec(
            m.decode().header.stamp)
        stamps.setdefault(m.topic, []).append(round(at - t_start, 3))
    assert stamps["/gt/labels"] == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    assert stamps["/camera/image"] == [0.0, 0.3, 0.4, 0.5]
    assert stamps["/camera/camera_info"] == [0.0, 0.3, 0.4, 0.5]
    assert stamps["/lidar/points"] == [0.037, 0.337, 0.437]
    assert stamps["/events"] == [round(0.01 * k, 3) for k in (1, 2, 3, 4, *range(10, 51))]


def test_demo_phases_agree_with_the_silenced_messages(tmp_path):
    """The demo replays its drive with ``play --drop`` and names a frame's phase with
    anyseg_ros.scoring, as process_bag does (test_scoring.py): a camera tick whose image the
    drop silenced is in a "camera off" phase, and only those; likewise LiDAR sweeps."""
    from anyseg_ros.tools.demo import node_values, phases_of
    from anyseg_ros.tools.shipped import shipped_config

    out = tmp_path / "ticks"
    # receive time: camera 0.01 s after its stamp, LiDAR 0.05 s
    faults = bags.parse_windows("camera:0.1-0.3,lidar:0.137-0.337")
    info = write_synthetic_bag(out, 0.5, "clear-day", None, SEED, (48, 64), progress=False)
    spans, gt = phases_of(out, faults, node_values([shipped_config(), info["params"]]))
    start = bags.bag_start_ns(out)
    dropped = {}
    for topic, sensor in (("/camera/image", "camera"), ("/lidar/points", "lidar")):
        dropped[sensor] = {conv.stamp_to_sec(m.decode().header.stamp): bags.in_windows(
            faults, sensor, (m.time_ns - start) * 1e-9) for m in bags.read_bag(out, [topic])}
    assert len(gt.stamps) == 6 and sum(dropped["camera"].values()) == 2
    assert sum(dropped["lidar"].values()) == 2
    for stamp in gt.stamps:
        assert ("camera off" in spans.phase(stamp).split(" + ")) == dropped["camera"][stamp]
    for stamp, off in dropped["lidar"].items():
        assert ("lidar off" in spans.phase(stamp).split(" + ")) == off, stamp


def test_read_bag_with_topics_none_of_which_is_there_reads_nothing(mcap_bag):
    assert list(bags.read_bag(mcap_bag, [])) == []
    assert list(bags.read_bag(mcap_bag, ["/not/in/the/bag"])) == []
    assert {m.topic for m in bags.read_bag(mcap_bag, ["/camera/image", "/nope"])} == {
        "/camera/image"}
    assert bags.bag_start_ns(mcap_bag) == next(bags.read_bag(mcap_bag)).time_ns
