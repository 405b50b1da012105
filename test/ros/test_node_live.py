"""Parameters set on a running node change what it does with the next frame, and a message no
conversion expects is counted without stopping the node.

A real :class:`anyseg_ros.node.AnysegNode` (tiny checkpoint from the project's training
command) spins in this process beside a feeder node that publishes hand-made frames and a
client that sets parameters through the node's ``set_parameters`` service, as ``ros2 param
set`` does. Every frame is published reliably and the test waits for its status (a
condition, not a delay), so nothing here depends on the machine's speed. This module owns its
node: no other test sets its parameters.
"""
from __future__ import annotations

import json
import time
import uuid

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy', reason='rclpy is not installed (no ROS 2 here)')

from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from rclpy.signals import SignalHandlerOptions  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from anyseg_ros import conversions as conv  # noqa: E402

from live_rig import LiveRig  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.timeout(900)]

H, W = 48, 80
K = np.array([[60.0, 0.0, W / 2], [0.0, 60.0, H / 2], [0.0, 0.0, 1.0]])
LIDAR_LAG = 0.06       # the LiDAR sweep is stamped this much after the camera image
PACKETS = 10           # event packets of 10 ms before each image
WAIT_S = 120.0         # deadline for one frame's status on a loaded machine


@pytest.fixture(scope='module')
def live(tiny_checkpoint, module_ros_env):
    rig = LiveRig(module_ros_env, {
        'checkpoint': str(tiny_checkpoint), 'device': 'cpu',
        'network.height': 64, 'network.width': 96,
        'qos.reliability': 'reliable', 'qos.depth': 100,
        # Liveness is not under test: every sensor stays live between frames, however long
        # a loaded machine takes between them (a stale camera would let the next frame's
        # sweep pivot a frame of its own).
        'sync.stale_after': 3600.0, 'sync.max_wait': 0.2})
    rig.rng = np.random.default_rng(0)
    try:
        # The camera alone first: it makes the camera's frame known (a cloud handled before
        # would have no frame to be transformed into) and the camera live, so the first full
        # frame pivots on its image (a node that has heard nothing yet takes the first sensor
        # heard as the pivot).
        t = rig.next_stamp()
        rig.feed('info', conv.camera_info_msg(K, (H, W), conv.sec_to_stamp(t), 'cam',
                                              cls=CameraInfo))
        rig.feed('image', conv.array_to_image(np.zeros((H, W, 3), np.uint8), 'rgb8',
                                              conv.sec_to_stamp(t), 'cam', cls=Image))
        rig.wait(t, WAIT_S)
        _frame(rig)
        yield rig
    finally:
        rig.close()


def _frame(live):
    """Publish one frame (CameraInfo, a LiDAR sweep LIDAR_LAG after the image, PACKETS event
    packets of 10 ms up to the image, then the image; each taken by the node before the
    next is sent) and return its status, colour and label images once they arrived. Every
    frame must arrive, also right after a dynamic sync.* change (a synchroniser restarted
    afresh had no live sensor: the sweep pivoted a frame of its own, stamped after the
    image, which was then dropped as late)."""
    t = live.next_stamp()
    rng = live.rng
    live.feed('info', conv.camera_info_msg(K, (H, W), conv.sec_to_stamp(t), 'cam',
                                           cls=CameraInfo))
    n = 400
    xyz = np.stack([rng.uniform(-3, 3, n), rng.uniform(-1, 1, n), rng.uniform(2, 30, n)], 1)
    # lidar.T_cam_lidar is unset and the cloud is in the camera's frame: no transform.
    live.feed('lidar', conv.points_to_cloud(
        {'x': xyz[:, 0].astype(np.float32), 'y': xyz[:, 1].astype(np.float32),
         'z': xyz[:, 2].astype(np.float32), 'intensity': rng.uniform(0, 1, n).astype(np.float32)},
        conv.sec_to_stamp(t + LIDAR_LAG), 'cam', cls=PointCloud2))
    for k in range(PACKETS):
        end = t - (PACKETS - 1 - k) * 0.01
        m = 50
        live.feed('events', conv.points_to_cloud(
            {'x': rng.integers(0, W, m).astype(np.uint16),
             'y': rng.integers(0, H, m).astype(np.uint16),
             't': np.sort(rng.uniform(end - 0.01, end, m)),
             'p': rng.integers(0, 2, m).astype(np.uint8)},
            conv.sec_to_stamp(end), 'cam', cls=PointCloud2))
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    live.feed('image', conv.array_to_image(image, 'rgb8', conv.sec_to_stamp(t), 'cam',
                                           cls=Image))
    return live.wait(t, WAIT_S)


def test_sync_slop_decides_whether_a_late_lidar_joins_the_next_frame(live):
    live.set('sync.slop', 0.02)
    status, _, _ = _frame(live)
    assert status['pivot'] == 'camera' and 'lidar' not in status['modalities'], status
    live.set('sync.slop', 0.1)
    status, _, _ = _frame(live)
    assert 'lidar' in status['modalities'], status
    assert status['stamps']['lidar'] == [pytest.approx(live.t + LIDAR_LAG, abs=1e-6)]


def test_events_window_decides_which_packets_the_next_frame_takes(live):
    taken = {}
    for window in (0.03, 0.08):
        live.set('events.window', window)
        status, _, _ = _frame(live)
        stamps = status['stamps']['events']
        assert stamps and 'events' in status['modalities'], status
        # Packets end every 10 ms up to the image; a packet is taken when it overlaps the
        # window [t - window, t].
        assert min(stamps) >= live.t - window - 1e-6, (window, stamps)
        taken[window] = len(stamps)
    assert taken[0.08] > taken[0.03], taken


def test_palette_colours_the_next_frame(live):
    classes = len(live.node.runtime.class_names)
    for seed in (1, 2):  # two palettes in turn: each frame takes the one set before it
        palette = [int(v) for v in np.random.default_rng(seed).integers(0, 256, 3 * classes)]
        live.set('palette', palette)
        _, color, labels = _frame(live)
        lut = np.array(palette, np.uint8).reshape(-1, 3)
        ids = np.frombuffer(bytes(labels.data), np.uint8).reshape(labels.height, labels.width)
        rgb = np.frombuffer(bytes(color.data), np.uint8).reshape(color.height, color.width, 3)
        assert ids.max() < len(lut), ids.max()
        np.testing.assert_array_equal(rgb, lut[ids])


def test_an_unexpected_message_is_a_conversion_error_and_the_node_goes_on(live):
    """No valid ROS message reaches this path (conversions turn every malformed one into a
    named reason); an object no conversion expects, handed to the node's subscription
    callback, must still be counted as conversion_error and leave the node running."""
    node = live.node
    before = node.session.counts()['inputs']['lidar']
    node._receive('lidar', object())
    after = node.session.counts()['inputs']['lidar']
    assert after['received'] == before['received'] + 1
    assert after['rejected'].get('conversion_error', 0) == \
        before['rejected'].get('conversion_error', 0) + 1
    status, _, _ = _frame(live)  # and the next frame still comes, with the LiDAR
    assert status['modalities'], status


def test_class_names_and_colours_are_latched_and_follow_the_palette(live):
    """anyseg/classes (transient local) reaches a subscriber that joins late, and a palette
    set later is published there too; the names are also a read-only parameter."""
    from rclpy.qos import DurabilityPolicy

    node = live.node
    got = []
    late = Node(f'classes_{uuid.uuid4().hex[:6]}', context=node.context)
    late.create_subscription(String, f'{node.get_namespace()}/anyseg/classes',
                             lambda m: got.append(json.loads(m.data)), QoSProfile(
                                 depth=5, reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL))
    from rclpy.executors import SingleThreadedExecutor
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(late)

    def spin_until(predicate):
        deadline = time.monotonic() + 60
        while not predicate():
            assert time.monotonic() < deadline, got
            executor.spin_once(timeout_sec=0.05)
    try:
        spin_until(lambda: got)
        names = list(node.runtime.class_names)
        first = got[-1]
        assert [c['name'] for c in first['classes']] == names
        assert [c['id'] for c in first['classes']] == list(range(len(names)))
        assert first['ignore_id'] == 255
        assert node.get_parameter('class_names').value == names
        palette = [7] * (3 * len(names))
        live.set('palette', palette)
        spin_until(lambda: got[-1]['classes'][0]['color'] == [7, 7, 7])
        assert all(c['color'] == [7, 7, 7] for c in got[-1]['classes'])
    finally:
        executor.shutdown()
        late.destroy_node()


def test_qos_overrides_are_applied_per_topic_or_refused(tiny_checkpoint, module_ros_env):
    """qos_overrides.<topic>.<publisher|subscription>.<policy> (ROS 2's per-topic QoS
    parameters) reach the node's endpoints; one naming no endpoint of the node stops it."""
    from anyseg_ros.node import AnysegNode
    from anyseg_ros.params import ConfigError
    from rclpy.qos import ReliabilityPolicy as RP

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(module_ros_env['ROS_DOMAIN_ID']),
               signal_handler_options=SignalHandlerOptions.NO)
    ns = f'/anyseg_qos_{uuid.uuid4().hex[:8]}'
    base = {'checkpoint': str(tiny_checkpoint), 'device': 'cpu', 'network.height': 64,
            'network.width': 96}
    try:
        node = AnysegNode(context=context, namespace=ns, parameter_overrides=[
            Parameter(k, value=v) for k, v in {
                **base,
                f'qos_overrides.{ns}/anyseg/confidence.publisher.reliability': 'best_effort',
                f'qos_overrides.{ns}/camera/image.subscription.reliability': 'reliable'}.items()])
        try:
            (pub,) = node.get_publishers_info_by_topic(f'{ns}/anyseg/confidence')
            assert pub.qos_profile.reliability == RP.BEST_EFFORT
            (other,) = node.get_publishers_info_by_topic(f'{ns}/anyseg/labels')
            assert other.qos_profile.reliability == RP.RELIABLE  # the qos.* default
            (sub,) = node.get_subscriptions_info_by_topic(f'{ns}/camera/image')
            assert sub.qos_profile.reliability == RP.RELIABLE
            (sub,) = node.get_subscriptions_info_by_topic(f'{ns}/lidar/points')
            assert sub.qos_profile.reliability == RP.BEST_EFFORT  # the qos.* default
        finally:
            node.close()
            node.destroy_node()
        typo = f'qos_overrides.{ns}/camera/imag.subscription.reliability'
        with pytest.raises(ConfigError, match='camera/imag'):
            AnysegNode(context=context, namespace=ns, parameter_overrides=[
                Parameter(k, value=v) for k, v in {**base, typo: 'reliable'}.items()])
    finally:
        rclpy.shutdown(context=context)
