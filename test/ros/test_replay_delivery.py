"""docs/ros.md's replay command, followed as written, delivers every camera frame.

A 20 s synthetic drive at the default camera size (288 x 512 rgb8, 442 KB a frame: too large
for Fast DDS's default shared-memory segment, so without a profile the frames go over UDP
fragments and are lost under load, silently for a best-effort subscriber) is played with
``python -m anyseg_ros.tools.play BAG --clock`` at rates 1.0 and 0.2 (no profile in the
environment: the player takes the package's own, as it says on stdout). A subscriber with
the node's default input QoS (best effort, depth 5, no profile of its own) counts the images.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

rclpy = pytest.importorskip('rclpy', reason='rclpy is not installed (no ROS 2 here)')

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from rclpy.signals import SignalHandlerOptions  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from anyseg_ros.tools.fastdds import PROFILE_VARIABLES  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SECONDS = 20.0

pytestmark = [pytest.mark.ros, pytest.mark.slow]


@pytest.fixture(scope='module')
def drive(tmp_path_factory):
    from anyseg_ros.tools.synthetic_bag import write_synthetic_bag

    bag = tmp_path_factory.mktemp('delivery') / 'drive_bag'
    info = write_synthetic_bag(bag, SECONDS, 'clear-day', None, 0, progress=False)
    return bag, info['messages']['/camera/image']


@pytest.mark.parametrize('rate', [1.0, 0.2])
def test_every_camera_frame_reaches_a_best_effort_subscriber(drive, module_ros_env, rate,
                                                             tmp_path):
    bag, sent = drive
    assert sent == 201
    env = {k: v for k, v in module_ros_env.items() if k not in PROFILE_VARIABLES}
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(env['ROS_DOMAIN_ID']),
               signal_handler_options=SignalHandlerOptions.NO)
    got = []
    try:
        node = rclpy.create_node('delivery_listener', context=context)
        node.create_subscription(Image, '/camera/image', lambda m: got.append(m.header.stamp),
                                 QoSProfile(depth=5, history=HistoryPolicy.KEEP_LAST,
                                            reliability=ReliabilityPolicy.BEST_EFFORT))
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        log = tmp_path / 'play.log'
        with open(log, 'wb') as out:  # as docs/ros.md writes it, plus --rate and a wait
            player = subprocess.Popen(
                [sys.executable, '-m', 'anyseg_ros.tools.play', str(bag), '--clock',
                 '--rate', str(rate), '--wait-for', '/camera/image', '--start-delay', '1'],
                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + SECONDS / rate + 120
        while player.poll() is None and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.02)
        for _ in range(50):  # the last frames in flight
            executor.spin_once(timeout_sec=0.02)
        executor.shutdown()
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
        if player.poll() is None:
            player.kill()
            player.wait()
    text = log.read_text()
    assert player.returncode == 0, text
    assert 'Fast DDS profile:' in text and 'fastdds_large_frames.xml' in text, text
    assert len(got) == sent, f'{len(got)} of {sent} camera frames arrived at rate {rate}'
