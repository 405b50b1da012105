"""tf2_msgs across real processes: /tf_static reaches a subscriber that joins late.

tf_broadcaster.py (its own process) publishes the rig's static transforms once, at start,
with the QoS of tf2_ros's StaticTransformBroadcaster (reliable, transient local, depth 1),
and odom -> base_link on /tf at 20 Hz. Only after it has published does this process
create its subscriptions: the /tf_static message can reach them through durability alone
(a volatile subscription, the control, gets nothing). On the pip install tf2_msgs is the
package `make setup` generates (scripts/build_interfaces.py); the publisher's type hash on
the graph must be ROS 2's own, so real ROS nodes match the topic. Both sides discover on
loopback only in a domain of their own (test/conftest.py).
"""
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy', reason='rclpy is not installed (no ROS 2 here)')

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile,  # noqa: E402
                       ReliabilityPolicy)
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from rclpy.signals import SignalHandlerOptions  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402

from anyseg_ros.tf_tree import TfTree, stamp_to_ns  # noqa: E402

from helpers import load_module  # noqa: E402

BROADCASTER = Path(__file__).with_name('tf_broadcaster.py')
REPO = Path(__file__).resolve().parents[2]
# ROS 2's own type hash of tf2_msgs/msg/TFMessage (`ros2 topic info -v /tf` on a ROS install;
# scripts/build_interfaces.py checks the generated one against the same value).
TFMESSAGE_HASH = 'RIHS01_e369d0f05a23ae52508854b66f6aa0437f3449d652e8cbf22d5abe85d020f087'
START_TIMEOUT_S = 20.0
RECEIVE_TIMEOUT_S = 20.0  # discovery alone takes about a second
CONTROL_WAIT_S = 1.0      # what a volatile subscription is given to (wrongly) get the static
DYNAMIC_WANTED = 5
EXIT_TIMEOUT_S = 5.0

# tf2_ros's listener QoS: StaticListenerQoS (transient local, depth 100) and DynamicListenerQoS.
STATIC_LISTENER_QOS = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST,
                                 reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL)
VOLATILE_QOS = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST,
                          reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.VOLATILE)


def _load_broadcaster():
    return load_module('anyseg_test_tf_broadcaster', BROADCASTER)


@pytest.fixture
def broadcaster(ros_env, tmp_path):
    """Start tf_broadcaster.py and wait until it has published /tf_static; yield (process,
    log path); stop it if still alive."""
    log = tmp_path / 'tf_broadcaster.log'
    expected = _load_broadcaster().STATIC_DONE
    with open(log, 'wb') as out:
        process = subprocess.Popen([sys.executable, str(BROADCASTER)], env=ros_env,
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while expected not in log.read_text(errors='replace'):
            assert process.poll() is None, f'broadcaster exited early:\n{log.read_text()}'
            assert time.monotonic() < deadline, (
                f'broadcaster did not publish within {START_TIMEOUT_S} s:\n{log.read_text()}')
            time.sleep(0.05)
        yield process, log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.ros
def test_tf_static_reaches_a_late_subscriber_with_ros_type_hash(broadcaster, ros_env):
    process, log = broadcaster
    rig = _load_broadcaster()
    static, static_volatile, dynamic, publishers = [], [], [], []

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(ros_env['ROS_DOMAIN_ID']),
               signal_handler_options=SignalHandlerOptions.NO)
    try:
        # Created only now: the broadcaster published /tf_static before this node existed.
        node = Node('anyseg_test_tf_listener', context=context)
        node.create_subscription(TFMessage, '/tf_static', static.append, STATIC_LISTENER_QOS)
        node.create_subscription(TFMessage, '/tf_static', static_volatile.append, VOLATILE_QOS)
        node.create_subscription(TFMessage, '/tf', dynamic.append, VOLATILE_QOS)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        deadline = time.monotonic() + RECEIVE_TIMEOUT_S
        while (not static or len(dynamic) < DYNAMIC_WANTED) and time.monotonic() < deadline:
            assert process.poll() is None, f'broadcaster exited early:\n{log.read_text()}'
            executor.spin_once(timeout_sec=0.1)
        control_end = time.monotonic() + CONTROL_WAIT_S
        while time.monotonic() < control_end:
            executor.spin_once(timeout_sec=0.1)
        publishers = node.get_publishers_info_by_topic('/tf_static')
        executor.shutdown()
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)

    assert static, (f'no /tf_static message in {RECEIVE_TIMEOUT_S} s '
                    f'(ROS_DOMAIN_ID={ros_env["ROS_DOMAIN_ID"]}); broadcaster log:\n'
                    f'{log.read_text()}')
    assert len(static) == 1, f'{len(static)} /tf_static messages, the broadcaster sent one'
    assert static_volatile == [], 'a volatile subscription got the message sent before it'
    assert len(dynamic) >= DYNAMIC_WANTED, f'{len(dynamic)} /tf messages'

    # What went on the wire is what was published.
    (message,) = static
    got = [(t.header.frame_id, t.child_frame_id,
            (t.header.stamp.sec, t.header.stamp.nanosec),
            (t.transform.translation.x, t.transform.translation.y, t.transform.translation.z),
            (t.transform.rotation.x, t.transform.rotation.y, t.transform.rotation.z,
             t.transform.rotation.w)) for t in message.transforms]
    assert got == [(parent, child, rig.STAMP, xyz, xyzw)
                   for parent, child, xyz, xyzw in rig.STATIC]
    xs = [m.transforms[0].transform.translation.x for m in dynamic]
    stamps = [stamp_to_ns(m.transforms[0].header.stamp) for m in dynamic]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    for x, stamp in zip(xs, stamps):
        n = round((stamp - rig.DYNAMIC_T0[0] * 10**9) / 50_000_000)
        assert x == pytest.approx(rig.DYNAMIC_STEP_M * n)

    # The type the publisher announced is ROS 2's tf2_msgs/msg/TFMessage, hash included.
    assert [(p.node_name, p.topic_type, str(p.topic_type_hash)) for p in publishers] == [
        ('anyseg_test_tf_broadcaster', 'tf2_msgs/msg/TFMessage', TFMESSAGE_HASH)]

    # The messages feed the ROS-free tree: velodyne into the optical frame, and the robot
    # in odom at a stamp between two /tf samples (the sample before it).
    tree = TfTree()
    assert tree.add_message(message, static=True) == []
    for m in dynamic:
        assert tree.add_message(m, static=False) == []
    T = tree.lookup('camera_optical', 'velodyne', stamp_to_ns(message.transforms[0].header.stamp))
    # velodyne's origin, 1.2 m ahead of base_link at 1.9 m, is 0.3 m behind camera_link's
    # origin and 0.5 m above it, the camera pitched down by 10 degrees (about +y).
    p = np.array([1.2 - 1.5, 0.0 - 0.1, 1.9 - 1.4])
    c, s = np.cos(np.radians(10)), np.sin(np.radians(10))
    p_link = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]).T @ p
    expected_optical = np.array([-p_link[1], -p_link[2], p_link[0]])
    np.testing.assert_allclose(T[:3, 3], expected_optical, atol=1e-9)
    between = (stamps[1] + stamps[2]) // 2
    assert tree.lookup('odom', 'base_link', between)[0, 3] == xs[1]

    # The bag writers' CDR (rosbags, Jazzy definitions) and rclpy's read each other (not
    # byte for byte: alignment padding is unspecified, and rclpy's is not always zero).
    typesys = pytest.importorskip('rosbags.typesys')
    store = typesys.get_typestore(typesys.Stores.ROS2_JAZZY)
    raw = bytes(serialize_message(message))
    from_rclpy = store.deserialize_cdr(raw, 'tf2_msgs/msg/TFMessage')
    assert [t.child_frame_id for t in from_rclpy.transforms] == [c for _, c, _, _ in rig.STATIC]
    assert [t.transform.rotation.w for t in from_rclpy.transforms] == [
        xyzw[3] for _, _, _, xyzw in rig.STATIC]
    from_bag = bytes(store.serialize_cdr(from_rclpy, 'tf2_msgs/msg/TFMessage'))
    assert len(from_bag) == len(raw)
    assert deserialize_message(from_bag, TFMessage) == message

    process.send_signal(signal.SIGINT)
    try:
        code = process.wait(timeout=EXIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f'broadcaster still running {EXIT_TIMEOUT_S} s after SIGINT')
    assert code == 0, f'broadcaster exited with {code}:\n{log.read_text()}'


def test_generated_type_hashes_are_ros_2s():
    """What rosidl wrote beside the type (share/tf2_msgs/msg/*.json) on this install, where
    there is one (ROS installs ship it too since Iron)."""
    import json

    import tf2_msgs

    module = Path(tf2_msgs.__file__).resolve()
    found = [parent / 'share' / 'tf2_msgs' / 'msg' / 'TFMessage.json'
             for parent in module.parents]
    found = [path for path in found if path.is_file()]
    if not found:
        pytest.skip(f'no share/tf2_msgs/msg/TFMessage.json above {module} (a ROS 2 older '
                    'than Iron)')
    description = found[0]
    hashes = {e['type_name']: e['hash_string']
              for e in json.loads(description.read_text())['type_hashes']}
    assert hashes['tf2_msgs/msg/TFMessage'] == TFMESSAGE_HASH
    assert hashes['geometry_msgs/msg/TransformStamped'] == (
        'RIHS01_0a241f87d04668d94099cbb5ba11691d5ad32c2f29682e4eb5653424bd275206')


def test_interface_sources_are_no_workspace_packages():
    """In a ROS workspace holding this repository, colcon and rosdep find anyseg_ros only:
    interfaces/tf2_msgs must never shadow ROS's tf2_msgs."""
    packages = pytest.importorskip('catkin_pkg.packages')
    assert [p.name for p in packages.find_packages(str(REPO)).values()] == ['anyseg_ros']
    assert packages.find_packages(str(REPO / 'interfaces')) == {}
