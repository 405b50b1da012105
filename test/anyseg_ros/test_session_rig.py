"""What a real rig sends, through the session shared by the node and process_bag: extrinsics
from TF (a bag's /tf_static, chains of frames, a missing link) instead of parameters, and a
camera stream compressed by image_transport (jpeg, png).

Messages come from a real synthetic bag (rosbags' classes, rclpy's field layout); the model is
a small random-weight checkpoint. The reference every time is today's parameter path on the
same data.
"""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from anyseg_ros import conversions as conv
from anyseg_ros.params import load_params_file
from anyseg_ros.session import Session
from anyseg_ros.tf_tree import make_transform, matrix_to_quaternion
from anyseg_ros.tools import bag as bags
from anyseg_ros.tools.process_bag import process_bag
from anyseg_ros.tools.synthetic_bag import write_synthetic_bag

NET_HW = (64, 96)  # the random checkpoint's size (conftest.py)


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    bag = tmp_path_factory.mktemp("rig_bag") / "drive"
    info = write_synthetic_bag(bag, 1.2, "clear-day", None, 5, (48, 64), progress=False)
    CALIBRATION[bag] = info["calibration"]
    return bag


CALIBRATION: dict = {}  # bag -> the rig's calibration (what its /tf_static carries)


@pytest.fixture(scope="module")
def with_params(drive, checkpoint, tmp_path_factory):
    """process_bag on the bag with the extrinsic parameters: today's path, the reference."""
    out = tmp_path_factory.mktemp("rig_params") / "out"
    summary = process_bag(drive, out, checkpoint, _values(drive, checkpoint), progress=False)
    return summary, out


def _values(bag, checkpoint, extrinsics=True) -> dict:
    values = load_params_file(bags.params_path(bag))
    values.update({"device": "cpu", "network.height": NET_HW[0], "network.width": NET_HW[1],
                   "checkpoint": str(checkpoint)})
    assert "lidar.T_cam_lidar" not in values  # the bag's params leave them to /tf_static
    if extrinsics:  # today's parameter path: the same extrinsics given as parameters
        calib = CALIBRATION[bag]
        values["lidar.T_cam_lidar"] = [float(v) for v in np.reshape(calib["T_cam_lidar"], -1)]
        values["events.T_cam_events"] = [float(v) for v in
                                         np.reshape(calib["T_cam_events"], -1)]
    return values


def _outputs(out):
    labels = {round(conv.stamp_to_sec(m.decode().header.stamp), 6):
              np.array(conv.image_to_array(m.decode())[0])
              for m in bags.read_bag(out, ["/anyseg/labels"])}
    status = [json.loads(m.decode().data) for m in bags.read_bag(out, ["/anyseg/status"])]
    return labels, status


def _tf(parent, child, T, stamp=(0, 0)):
    """A TFMessage-like object with one transform (the duck type the session reads)."""
    x, y, z, w = matrix_to_quaternion(T[:3, :3])
    t = SimpleNamespace(
        header=SimpleNamespace(frame_id=parent, stamp=SimpleNamespace(sec=stamp[0],
                                                                      nanosec=stamp[1])),
        child_frame_id=child,
        transform=SimpleNamespace(
            translation=SimpleNamespace(x=T[0, 3], y=T[1, 3], z=T[2, 3]),
            rotation=SimpleNamespace(x=x, y=y, z=z, w=w)))
    return SimpleNamespace(transforms=[t])


def test_bag_tf_static_gives_the_labels_of_the_extrinsic_parameters(drive, checkpoint,
                                                                     with_params, tmp_path):
    """The synthetic bag's LiDAR and events are in their own frames, described by its
    /tf_static: without extrinsic parameters process_bag takes them from there, and makes
    the labels the parameters give."""
    reference, reference_out = with_params
    from_tf = process_bag(drive, tmp_path / "tf", checkpoint,
                          _values(drive, checkpoint, extrinsics=False), progress=False)
    assert from_tf["frames_out"] == reference["frames_out"] > 0
    assert "no_transform" not in json.dumps(from_tf["rejected"]), from_tf["rejected"]
    a, status_a = _outputs(reference_out)
    b, status_b = _outputs(tmp_path / "tf")
    assert [s["modalities"] for s in status_a] == [s["modalities"] for s in status_b]
    assert any("lidar" in s["modalities"] for s in status_b)
    assert a.keys() == b.keys()
    for stamp in a:  # the same projection up to float rounding of the composed transform
        assert (a[stamp] == b[stamp]).mean() >= 0.999, stamp


def _lidar_messages(bag, n=3):
    return [m.decode() for m in bags.read_bag(bag, [bags.TOPICS["lidar"]])][:n]


def _frame_inputs(session, bag):
    """A session fed the bag's first camera image and CameraInfo (the camera's frame)."""
    info = next(m for m in bags.read_bag(bag, [bags.TOPICS["camera_info"]])).decode()
    image = next(m for m in bags.read_bag(bag, [bags.TOPICS["camera"]])).decode()
    assert session.camera_info(info, now=0.0)
    assert session.receive("camera", image, now=0.0)
    return image.header.frame_id


def _placed_T(session):
    frame, _ = session.poll(0.5)  # past max_wait: the frame goes with what it has
    return frame.items["lidar"][-1].payload.T_cam_lidar


def test_a_chain_of_three_transforms_resolves_the_lidar(drive, checkpoint):
    """velodyne -> base_link -> camera_link -> camera_optical, published as separate
    /tf_static and /tf transforms, composes into the LiDAR's transform to the camera."""
    values = _values(drive, checkpoint, extrinsics=False)
    session = Session(values, warmup=False)
    camera = _frame_inputs(session, drive)
    lidar = _lidar_messages(drive, 1)[0]
    rng = np.random.default_rng(0)

    def rigid():
        axis = rng.normal(size=3)
        angle = rng.uniform(-np.pi, np.pi)
        k = axis / np.linalg.norm(axis)
        Kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
        T = np.eye(4)
        T[:3, :3] = np.eye(3) + np.sin(angle) * Kx + (1 - np.cos(angle)) * Kx @ Kx
        T[:3, 3] = rng.uniform(-2, 2, 3)
        return T

    T_cam_link, T_link_base, T_base_velo = rigid(), rigid(), rigid()
    stamp = (lidar.header.stamp.sec, lidar.header.stamp.nanosec)
    assert session.transforms(_tf(camera, "camera_link", T_cam_link), static=True) == 1
    assert session.transforms(_tf("camera_link", "base_link", T_link_base), static=True) == 1
    assert session.transforms(_tf("base_link", "velodyne", T_base_velo, stamp), static=False)
    lidar.header.frame_id = "velodyne"
    assert session.receive("lidar", lidar, now=0.01)
    expected = T_cam_link @ T_link_base @ T_base_velo
    np.testing.assert_allclose(_placed_T(session), expected, atol=1e-9)


def test_a_missing_transform_is_counted_and_reported(drive, checkpoint):
    session = Session(_values(drive, checkpoint, extrinsics=False), warmup=False)
    lidar = _lidar_messages(drive, 1)[0]
    lidar.header.frame_id = "velodyne"
    # Before the camera's frame is known, and then with no transform to it.
    assert not session.receive("lidar", lidar, now=0.0)
    _frame_inputs(session, drive)
    assert not session.receive("lidar", lidar, now=0.01)
    counts = session.counts()["inputs"]["lidar"]
    assert counts["rejected"] == {"no_transform": 2}, counts
    lidar_diag = next(d for d in session.diagnostics(now=0.02) if d.name == "lidar")
    assert lidar_diag.values["rejected.no_transform"] == "2"
    assert lidar_diag.level == 2 and "malformed" in lidar_diag.message, lidar_diag
    # The explicit parameter overrides TF: the same cloud is then taken.
    session.update({"lidar.T_cam_lidar": [float(v) for v in np.eye(4).reshape(-1)]})
    assert session.receive("lidar", lidar, now=0.03)
    # A /tf transform too old for the cloud's stamp (tf.max_age) is no transform either.
    session.update({"lidar.T_cam_lidar": []})
    camera = session.geometry.frame_id
    old = lidar.header.stamp.sec - 5
    session.transforms(_tf(camera, "velodyne", np.eye(4), (old, 0)), static=False)
    assert not session.receive("lidar", lidar, now=0.04)
    assert session.counts()["inputs"]["lidar"]["rejected"] == {"no_transform": 3}


def test_malformed_transforms_are_counted_not_stored(drive, checkpoint):
    session = Session(_values(drive, checkpoint, extrinsics=False), warmup=False)
    bad = _tf("a", "b", np.eye(4))
    bad.transforms[0].transform.rotation = SimpleNamespace(x=0.0, y=0.0, z=0.0, w=0.0)
    assert session.transforms(bad, static=True) == 0
    assert session.transforms(object(), static=False) == 0  # not a TFMessage at all
    assert session.tf_rejected == {"static": 1, "dynamic": 1}


@pytest.mark.parametrize("codec", ["png", "jpeg"])
def test_a_compressed_camera_bag_is_segmented(drive, checkpoint, with_params, tmp_path, codec):
    """The bag's camera re-encoded as image_transport's compressed stream on
    /camera/image/compressed: process_bag decodes it (taking that topic when the bag has no
    raw one); png gives exactly the raw labels, jpeg nearly."""
    compressed = tmp_path / f"drive_{codec}"
    raw_topic = bags.TOPICS["camera"]
    with bags.BagWriter(compressed) as out:
        for m in bags.read_bag(drive):
            msg = m.decode()
            if m.topic == raw_topic:
                array, encoding = conv.image_to_array(msg)
                out.write(bags.TOPICS["camera_compressed"], bags.compressed_image_msg(
                    np.array(array), encoding, (msg.header.stamp.sec, msg.header.stamp.nanosec),
                    msg.header.frame_id, codec=codec, quality=95), m.time_ns)
            else:
                out.write(m.topic, msg, m.time_ns)
    bags.params_path(compressed).write_text(bags.params_path(drive).read_text())
    raw, raw_out = with_params
    got = process_bag(compressed, tmp_path / "c_out", checkpoint, _values(drive, checkpoint),
                      progress=False)
    assert got["frames_out"] == raw["frames_out"] > 0
    assert got["received"]["camera"] == raw["received"]["camera"] and not got["rejected"]
    a, _ = _outputs(raw_out)
    b, _ = _outputs(tmp_path / "c_out")
    assert a.keys() == b.keys()
    agreement = np.mean([(a[t] == b[t]).mean() for t in a])
    assert agreement == 1.0 if codec == "png" else agreement >= 0.9, agreement


def test_a_corrupt_compressed_image_is_a_counted_rejection(drive, checkpoint):
    session = Session(_values(drive, checkpoint), warmup=False)
    image = next(m for m in bags.read_bag(drive, [bags.TOPICS["camera"]])).decode()
    array, encoding = conv.image_to_array(image)
    msg = bags.compressed_image_msg(np.array(array), encoding, (image.header.stamp.sec,
                                                                image.header.stamp.nanosec),
                                    image.header.frame_id, codec="jpeg", quality=90)
    assert session.receive("camera", msg, now=0.0)
    msg.data = msg.data[: len(msg.data) // 2]
    assert not session.receive("camera", msg, now=0.1)
    assert session.counts()["inputs"]["camera"]["rejected"] == {"bad_compressed": 1}


class _Clocks:
    """A steady clock and a ROS clock the test moves by hand."""

    def __init__(self) -> None:
        self.steady, self.ros_ns = 100.0, 0

    def clock(self, sim: bool, grace: float = 0.5):
        from anyseg_ros.session import LivenessClock
        return LivenessClock(sim, lambda: self.ros_ns, grace, steady=lambda: self.steady)


def test_liveness_clock_follows_sim_time_and_runs_on_when_clock_stops():
    c = _Clocks()
    assert c.clock(False)() == 100.0  # no sim time: the steady clock
    live = c.clock(True)
    assert live() == 0.0  # sim time, no /clock yet: steady seconds from the start
    c.steady += 2.0
    assert live() == 2.0
    c.ros_ns = 1_700_000_000 * 10**9  # /clock arrives
    assert live() == 1_700_000_000.0
    # Slow replay (rate 0.2): ROS time moves 0.02 s per 0.1 s of steady time; the liveness
    # clock follows ROS time, so a sensor publishing every 0.1 s of bag time stays live.
    for _ in range(20):
        c.steady += 0.1
        c.ros_ns += 20_000_000
        assert live() == pytest.approx(c.ros_ns * 1e-9)
    # /clock stops (the bag ended): after the grace it runs on at the steady rate.
    stopped = c.ros_ns * 1e-9
    c.steady += 0.4
    assert live() == pytest.approx(stopped)
    c.steady += 1.6
    assert live() == pytest.approx(stopped + 1.5)
    # A /clock that jumps back (play --loop) never moves it backwards.
    before = live()
    c.ros_ns -= 5 * 10**9
    c.steady += 0.01
    assert live() == pytest.approx(before)


def test_a_sensor_offset_moves_its_stamps_before_matching(drive, checkpoint):
    """A LiDAR stamped 0.2 s late is left out of the camera's frames (beyond sync.slop) until
    sync.offset.lidar takes the 0.2 s off (set at run time, between two frames); the output
    keeps the camera's own stamp."""
    session = Session(_values(drive, checkpoint), warmup=False)
    info = next(m for m in bags.read_bag(drive, [bags.TOPICS["camera_info"]])).decode()
    image = next(m for m in bags.read_bag(drive, [bags.TOPICS["camera"]])).decode()
    lidar = _lidar_messages(drive, 1)[0]
    t0 = conv.stamp_to_sec(image.header.stamp)
    for k, (offset, joins) in enumerate(((0.0, False), (-0.2, True))):
        t_cam, late = conv.sec_to_stamp(t0 + k), conv.sec_to_stamp(t0 + k + 0.2)  # frame k
        image.header.stamp.sec, image.header.stamp.nanosec = t_cam
        lidar.header.stamp.sec, lidar.header.stamp.nanosec = late
        session.update({"sync.offset.lidar": offset})
        assert session.camera_info(info, now=k)
        assert session.receive("lidar", lidar, now=k)
        assert session.receive("camera", image, now=k)
        frame, _ = session.poll(k + 0.3)  # past max_wait, the sensors still live
        assert ("lidar" in frame.items) == joins, (offset, sorted(frame.items))
        assert frame.stamp == pytest.approx(t0 + k)
        if joins:
            assert frame.items["lidar"][-1].stamp == pytest.approx(t0 + k, abs=1e-6)
            assert tuple(frame.items["lidar"][-1].exact) == tuple(late)  # its own header
