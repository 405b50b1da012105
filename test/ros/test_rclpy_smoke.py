"""ROS 2 works across processes here: a talker subprocess, a listener in the test process.

Both sides discover on loopback only (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST) in a domain
of their own, on topic names unique to the test.
"""
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy', reason='rclpy is not installed (no ROS 2 here)')

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from rclpy.signals import SignalHandlerOptions  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from helpers import load_module  # noqa: E402

TALKER = Path(__file__).with_name('talker.py')
WANTED = 3  # messages of each type
RECEIVE_TIMEOUT_S = 20.0  # discovery alone takes about a second
EXIT_TIMEOUT_S = 60.0  # a deadline for a loaded machine, not a speed claim


def _load_talker_module():
    return load_module('anyseg_test_talker', TALKER)


@pytest.fixture
def talker(ros_env, tmp_path):
    """Start talker.py; yield (process, topic prefix, log path); kill it if still alive."""
    prefix = f'/anyseg_test_{uuid.uuid4().hex[:8]}'
    log = tmp_path / 'talker.log'
    with open(log, 'wb') as out:
        process = subprocess.Popen([sys.executable, str(TALKER), prefix], env=ros_env,
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process, prefix, log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.ros
def test_messages_cross_processes_and_talker_stops_on_sigint(talker, ros_env):
    process, prefix, log = talker
    expected_image = _load_talker_module().expected_image
    strings, images = [], []

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(ros_env['ROS_DOMAIN_ID']),
               signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = Node('anyseg_test_listener', context=context)
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        node.create_subscription(String, f'{prefix}/chatter', strings.append, qos)
        node.create_subscription(Image, f'{prefix}/image', images.append, qos)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        deadline = time.monotonic() + RECEIVE_TIMEOUT_S
        while (len(strings) < WANTED or len(images) < WANTED) and time.monotonic() < deadline:
            assert process.poll() is None, f'talker exited early:\n{log.read_text()}'
            executor.spin_once(timeout_sec=0.1)
        executor.shutdown()
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)

    assert len(strings) >= WANTED and len(images) >= WANTED, (
        f'received {len(strings)} strings and {len(images)} images in {RECEIVE_TIMEOUT_S} s '
        f'(ROS_DOMAIN_ID={ros_env["ROS_DOMAIN_ID"]}); talker log:\n{log.read_text()}')
    for message in strings:
        assert message.data.startswith('hello ')
    for message in images:
        assert (message.height, message.width) == (480, 640)
        assert (message.encoding, message.step, message.header.frame_id) == (
            'rgb8', 640 * 3, 'camera')
        pixels = np.frombuffer(message.data, dtype=np.uint8).reshape(480, 640, 3)
        n = int(pixels[0, 0, 0])  # message number modulo 256
        np.testing.assert_array_equal(pixels, expected_image(n))

    process.send_signal(signal.SIGINT)
    try:
        code = process.wait(timeout=EXIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f'talker still running {EXIT_TIMEOUT_S} s after SIGINT')
    assert code == 0, f'talker exited with {code}:\n{log.read_text()}'
