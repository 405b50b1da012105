"""The node on a rig described by TF only, and fed a compressed camera stream.

tf_broadcaster.py (its own process) publishes the rig's /tf_static once, as tf2_ros's static
broadcaster does: velodyne and camera_link under base_link, camera_optical under
camera_link. The LiDAR cloud comes in the velodyne frame, the camera in camera_optical, and
no extrinsic parameter is set: the node must bring the cloud into the camera through the
chain velodyne -> base_link -> camera_link -> camera_optical (three transforms). The
expected transform is composed here from the broadcaster's numbers with a formula of this
test's own (Rodrigues), not with anyseg_ros.tf_tree.

Two real AnysegNodes spin in this process (tiny checkpoint, camera + LiDAR), each beside a
feeder (test/ros/live_rig.py): one takes raw images, one `camera.transport: compressed`.
Every frame waits for its outputs by stamp; no assertion depends on the machine's speed.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy', reason='rclpy is not installed (no ROS 2 here)')
cv2 = pytest.importorskip('cv2', reason='OpenCV is not installed (compressed images)')

from builtin_interfaces.msg import Time  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, PointCloud2  # noqa: E402

from anyseg_ros import conversions as conv  # noqa: E402
from anyseg_ros.tf_tree import NoTransform  # noqa: E402
from anyseg_ros.tools.processes import interrupt  # noqa: E402

from helpers import load_module  # noqa: E402
from live_rig import LiveRig  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.timeout(900)]

BROADCASTER = Path(__file__).with_name('tf_broadcaster.py')
H, W = 48, 80
K = np.array([[60.0, 0.0, W / 2], [0.0, 60.0, H / 2], [0.0, 0.0, 1.0]])
CAMERA_FRAME = 'camera_optical'
WAIT_S = 120.0  # deadline for one frame's outputs on a loaded machine


def _rotation(x, y, z, w):
    """Rotation matrix of a quaternion, by Rodrigues' formula on its axis and angle."""
    q = np.array([x, y, z, w], float)
    q /= np.linalg.norm(q)
    angle = 2 * np.arctan2(np.linalg.norm(q[:3]), q[3])
    if np.linalg.norm(q[:3]) < 1e-12:
        return np.eye(3)
    k = q[:3] / np.linalg.norm(q[:3])
    Kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * Kx + (1 - np.cos(angle)) * Kx @ Kx


def _expected_T_camera_velodyne(static):
    T = {}
    for parent, child, xyz, xyzw in static:
        m = np.eye(4)
        m[:3, :3], m[:3, 3] = _rotation(*xyzw), xyz
        T[(parent, child)] = m
    T_base_camera = T[('base_link', 'camera_link')] @ T[('camera_link', CAMERA_FRAME)]
    return np.linalg.inv(T_base_camera) @ T[('base_link', 'velodyne')]


@pytest.fixture(scope='module')
def rig(tiny_checkpoint, module_ros_env):
    broadcaster_module = load_module('anyseg_test_tf_broadcaster', BROADCASTER)
    broadcaster = subprocess.Popen([sys.executable, str(BROADCASTER)], env=module_ros_env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rigs = {}
    try:
        assert broadcaster.stdout.readline().strip() == broadcaster_module.STATIC_DONE, \
            broadcaster.stderr.read()
        base = {'checkpoint': str(tiny_checkpoint), 'device': 'cpu',
                'network.height': 64, 'network.width': 96, 'modalities': ['camera', 'lidar'],
                'qos.reliability': 'reliable', 'qos.depth': 100,
                # Each frame's messages are fed one by one (LiveRig.feed), the image last: its
                # cloud is in the synchroniser before it, however loaded the machine.
                # Liveness is not under test: a sensor stays live however long the other
                # rig's tests take (60 s once let the LiDAR go stale on a loaded machine, and
                # the camera made its frame alone).
                'sync.stale_after': 3600.0, 'sync.max_wait': 5.0, 'diagnostics.period': 0.5}
        rigs['raw'] = LiveRig(module_ros_env, base, 'tf_raw')
        rigs['compressed'] = LiveRig(module_ros_env, {**base, 'camera.transport': 'compressed'},
                                     'tf_compressed')
        T = _expected_T_camera_velodyne(broadcaster_module.STATIC)
        for r in rigs.values():
            r.rng = np.random.default_rng(0)
            r.compressed = r is rigs['compressed']
            _wait_for_tf(r)
            # The camera alone first: its frame becomes known to the node, and it is live
            # so the first full frame pivots on its image (a node that has heard nothing yet
            # takes the first sensor heard as the pivot).
            _frame(r, _image(r.rng), None, CAMERA_FRAME)
            _frame(r, _image(r.rng), _points(r.rng), CAMERA_FRAME)
        yield {'T': T, **rigs}
    finally:
        for r in rigs.values():
            r.close()
        interrupt(broadcaster, timeout=30)


def _wait_for_tf(r):
    deadline = time.monotonic() + 60
    while True:
        try:
            return r.node.session.tf.lookup(CAMERA_FRAME, 'velodyne', None)
        except NoTransform:
            assert time.monotonic() < deadline, '/tf_static never reached the node'
            time.sleep(0.05)


def _image(rng):
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


def _points(rng, n=600):
    """Points in the camera's optical frame, in front of it (x right, y down, z ahead)."""
    return np.stack([rng.uniform(-3, 3, n), rng.uniform(-1, 1.5, n), rng.uniform(2, 30, n)], 1)


def _frame(r, image, xyz, cloud_frame, compressed=None):
    """Feed CameraInfo, a LiDAR cloud (``xyz`` in ``cloud_frame``; none when ``xyz`` is
    None) and the image (raw, or the CompressedImage ``compressed``; png of ``image`` on the
    compressed rig when not given) with one new stamp; return (status, labels as an array,
    camera_info) once the node published them."""
    t = r.next_stamp()
    stamp = conv.sec_to_stamp(t)
    r.feed('info', conv.camera_info_msg(K, (H, W), stamp, CAMERA_FRAME, cls=CameraInfo))
    if xyz is not None:
        n = len(xyz)
        r.feed('lidar', conv.points_to_cloud(
            {'x': xyz[:, 0].astype(np.float32), 'y': xyz[:, 1].astype(np.float32),
             'z': xyz[:, 2].astype(np.float32), 'intensity': np.full(n, 100, np.float32)},
            stamp, cloud_frame, cls=PointCloud2))
    if compressed is None and r.compressed:  # lossless, encoded here
        compressed = CompressedImage(format='rgb8; png compressed bgr8',
                                     data=cv2.imencode('.png', image[:, :, ::-1])[1].tobytes())
    if compressed is None:
        r.feed('image', conv.array_to_image(image, 'rgb8', stamp, CAMERA_FRAME))
    else:
        compressed.header.stamp = Time(sec=stamp[0], nanosec=stamp[1])
        compressed.header.frame_id = CAMERA_FRAME
        r.feed('image', compressed)
    status, labels, info = r.wait(t, WAIT_S, kinds=('status', 'labels', 'camera_info'))
    ids = np.frombuffer(bytes(labels.data), np.uint8).reshape(labels.height, labels.width)
    return status, ids.copy(), info


def _in_frame(T, xyz_camera):
    """The points as given in the frame T maps into the camera's (p_camera = T p)."""
    homogeneous = np.c_[xyz_camera, np.ones(len(xyz_camera))]
    return (homogeneous @ np.linalg.inv(T).T)[:, :3]


def test_a_cloud_in_its_own_frame_takes_the_tf_chain_and_equals_the_parameter_path(rig):
    r, T = rig['raw'], rig['T']
    np.testing.assert_allclose(_wait_for_tf(r), T, atol=1e-9)
    image, xyz = _image(r.rng), _points(r.rng)
    in_velodyne = _in_frame(T, xyz)
    status, by_tf, _ = _frame(r, image, in_velodyne, 'velodyne')
    assert status['modalities'] == ['camera', 'lidar'], status
    # The control: the same numbers taken as already in the camera's frame give other labels
    # (the labels depend on where the points land), so equal labels below mean something.
    # (Points given in the camera's frame directly would not do: the LiDAR channels are
    # range, intensity and height in the LiDAR's own frame.)
    status, unplaced, _ = _frame(r, image, in_velodyne, CAMERA_FRAME)
    assert 'lidar' in status['modalities'], status
    assert (unplaced != by_tf).any(), 'the LiDAR does not change the labels: no evidence'
    # The parameter path (lidar.T_cam_lidar, row-major) on the same data.
    r.set('lidar.T_cam_lidar', [float(v) for v in T.reshape(-1)])
    try:
        _, by_parameter, _ = _frame(r, image, in_velodyne, 'velodyne')
    finally:
        r.set('lidar.T_cam_lidar', [], Parameter.Type.DOUBLE_ARRAY)  # unset: TF again
    np.testing.assert_array_equal(by_parameter, by_tf)


def test_a_cloud_whose_frame_has_no_transform_is_counted_reported_and_left_out(rig):
    r = rig['raw']
    before = r.node.session.counts()['inputs']['lidar']['rejected'].get('no_transform', 0)
    status, labels, _ = _frame(r, _image(r.rng), _points(r.rng), 'radar_link')
    assert status['modalities'] == ['camera'], status  # the frame came, without the LiDAR
    assert r.node.session.counts()['inputs']['lidar']['rejected']['no_transform'] == before + 1
    name = f'{r.node.get_fully_qualified_name()}: lidar'

    def reports_it(array):
        for s in array.status:
            values = {kv.key: kv.value for kv in s.values}
            if s.name == name and values.get('rejected.no_transform') == str(before + 1):
                return True
        return False
    r.wait_diagnostic(reports_it, WAIT_S)


@pytest.mark.parametrize('codec', ['jpeg', 'png'])
def test_a_compressed_camera_stream_is_segmented_as_its_decoded_pixels(rig, codec):
    """The compressed node's labels equal the raw node's on the pixels OpenCV decodes from
    the same payload (lossless png: the original image)."""
    raw, comp = rig['raw'], rig['compressed']
    image, xyz = _image(raw.rng), _points(raw.rng)
    ok, payload = cv2.imencode('.jpg' if codec == 'jpeg' else '.png', image[:, :, ::-1])
    assert ok
    decoded = cv2.imdecode(payload, cv2.IMREAD_COLOR)[:, :, ::-1]
    if codec == 'png':
        np.testing.assert_array_equal(decoded, image)
    msg = CompressedImage(format=f'rgb8; {codec} compressed bgr8', data=payload.tobytes())
    status, from_compressed, info = _frame(comp, None, xyz, CAMERA_FRAME, compressed=msg)
    assert status['modalities'] == ['camera', 'lidar'], status
    assert (info.height, info.width) == from_compressed.shape
    _, from_raw, _ = _frame(raw, np.ascontiguousarray(decoded), xyz, CAMERA_FRAME)
    np.testing.assert_array_equal(from_compressed, from_raw)


def test_a_corrupt_compressed_image_is_counted_and_the_node_goes_on(rig):
    comp = rig['compressed']
    counts = comp.node.session.counts()['inputs']['camera']['rejected']
    before = sum(counts.values())
    t = comp.next_stamp()
    corrupt = CompressedImage(format='rgb8; jpeg compressed bgr8', data=b'\xff\xd8 not a jpeg')
    sec, nanosec = conv.sec_to_stamp(t)
    corrupt.header.stamp, corrupt.header.frame_id = Time(sec=sec, nanosec=nanosec), CAMERA_FRAME
    comp.feed('image', corrupt)  # returns once the node took it
    assert sum(comp.node.session.counts()['inputs']['camera']['rejected'].values()) == before + 1
    status, _, _ = _frame(comp, _image(comp.rng), _points(comp.rng), CAMERA_FRAME)
    assert 'camera' in status['modalities'], status
