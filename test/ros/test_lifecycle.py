"""The managed node (``anyseg_node --managed``) through every lifecycle transition, driven with
the lifecycle_msgs services of a live node in its own process, as a lifecycle manager does:
nothing subscribed or published until activate, nothing while inactive, frames again after
a second activate, the model released on cleanup, a clean exit after shutdown."""
from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy', reason='rclpy is not installed (no ROS 2 here)')
lifecycle_msgs = pytest.importorskip('lifecycle_msgs.srv',
                                     reason='lifecycle_msgs is not installed')

from lifecycle_msgs.msg import State, Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from rclpy.signals import SignalHandlerOptions  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from anyseg_ros import conversions as conv  # noqa: E402
from anyseg_ros.tools.processes import interrupt  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
K = [60.0, 0.0, 47.5, 0.0, 60.0, 31.5, 0.0, 0.0, 1.0]

pytestmark = pytest.mark.ros


class Manager:
    """A lifecycle manager's side: the node's services, a camera publisher, a labels
    subscription, in this process."""

    def __init__(self, env, ns):
        self.ns = ns
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=int(env['ROS_DOMAIN_ID']),
                   signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node('lifecycle_manager', context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.change = self.node.create_client(ChangeState, f'{ns}/anyseg/change_state')
        self.get = self.node.create_client(GetState, f'{ns}/anyseg/get_state')
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.camera = self.node.create_publisher(Image, f'{ns}/camera/image', qos)
        self.labels = []
        self.node.create_subscription(Image, f'{ns}/anyseg/labels', self.labels.append, qos)

    def spin_until(self, condition, timeout=120.0):
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, 'timed out'
            self.executor.spin_once(timeout_sec=0.05)

    def call(self, client, request):
        self.spin_until(lambda: client.service_is_ready())
        future = client.call_async(request)
        self.spin_until(future.done, timeout=300)
        return future.result()

    def state(self) -> int:
        return self.call(self.get, GetState.Request()).current_state.id

    def transition(self, transition_id) -> bool:
        return self.call(self.change, ChangeState.Request(
            transition=Transition(id=transition_id))).success

    def endpoints(self):
        """(subscribers of camera/image, publishers of anyseg/labels) on the graph."""
        self.executor.spin_once(timeout_sec=0.05)
        return (self.node.count_subscribers(f'{self.ns}/camera/image'),
                self.node.count_publishers(f'{self.ns}/anyseg/labels'))

    def frames(self, count=3, timeout=60.0) -> int:
        """Publish ``count`` images a second apart; the labels that came back."""
        before = len(self.labels)
        image = np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8)
        for _ in range(count):
            self.camera.publish(conv.array_to_image(image, 'rgb8', time.time(), 'camera',
                                                    cls=Image))
            end = time.monotonic() + 1.0
            while time.monotonic() < end:
                self.executor.spin_once(timeout_sec=0.05)
        end = time.monotonic() + (timeout if count else 0)
        while len(self.labels) == before and time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.05)
        return len(self.labels) - before

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def _settle_graph(manager, want, timeout=30.0):
    deadline = time.monotonic() + timeout
    while manager.endpoints() != want and time.monotonic() < deadline:
        pass
    return manager.endpoints()


def test_every_transition_of_the_managed_node(tiny_checkpoint, ros_env, tmp_path):
    ns = f'/anyseg_lc_{uuid.uuid4().hex[:8]}'
    log = tmp_path / 'node.log'
    with open(log, 'wb') as out:
        proc = subprocess.Popen(
            [sys.executable, '-m', 'anyseg_ros.node', '--managed', '--ros-args',
             '--params-file', str(REPO / 'config' / 'anyseg.yaml'),
             '-p', f'checkpoint:={tiny_checkpoint}', '-p', 'device:=cpu',
             '-p', 'modalities:=[camera]', '-p', f'camera.K:={K}',
             '-p', 'qos.reliability:=reliable', '-r', f'__ns:={ns}'],
            cwd=REPO, env=ros_env, stdout=out, stderr=subprocess.STDOUT)
    manager = Manager(ros_env, ns)
    try:
        assert manager.state() == State.PRIMARY_STATE_UNCONFIGURED, log.read_text()
        assert b'ready:' not in log.read_bytes()  # no model, no topics yet
        assert manager.endpoints() == (0, 0)
        assert manager.transition(Transition.TRANSITION_CONFIGURE), log.read_text()
        assert manager.state() == State.PRIMARY_STATE_INACTIVE
        assert 'configured' in log.read_text()
        assert manager.endpoints() == (0, 0)  # loaded, not open
        assert manager.transition(Transition.TRANSITION_ACTIVATE), log.read_text()
        assert manager.state() == State.PRIMARY_STATE_ACTIVE
        assert _settle_graph(manager, (1, 1)) == (1, 1)
        assert manager.frames() > 0, log.read_text()[-3000:]
        assert manager.transition(Transition.TRANSITION_DEACTIVATE)
        assert manager.state() == State.PRIMARY_STATE_INACTIVE
        assert _settle_graph(manager, (0, 0)) == (0, 0)
        assert manager.frames(timeout=3.0) == 0  # inactive: nothing taken, nothing out
        assert manager.transition(Transition.TRANSITION_ACTIVATE)
        assert _settle_graph(manager, (1, 1)) == (1, 1)
        assert manager.frames() > 0, log.read_text()[-3000:]  # resumed
        assert manager.transition(Transition.TRANSITION_DEACTIVATE)
        assert manager.transition(Transition.TRANSITION_CLEANUP)
        assert manager.state() == State.PRIMARY_STATE_UNCONFIGURED
        assert 'the model is released' in log.read_text()
        # a second configure loads it again
        assert manager.transition(Transition.TRANSITION_CONFIGURE)
        assert manager.transition(Transition.TRANSITION_INACTIVE_SHUTDOWN)
        assert manager.state() == State.PRIMARY_STATE_FINALIZED
    finally:
        manager.close()
        code = interrupt(proc, timeout=30)
    text = log.read_text()
    assert code == 0 and 'Traceback' not in text, text


def test_a_failed_configure_leaves_the_node_unconfigured(ros_env, tmp_path):
    ns = f'/anyseg_lc_{uuid.uuid4().hex[:8]}'
    log = tmp_path / 'node.log'
    with open(log, 'wb') as out:
        proc = subprocess.Popen(
            [sys.executable, '-m', 'anyseg_ros.node', '--managed', '--ros-args',
             '-p', 'checkpoint:=/nonexistent/model.safetensors', '-r', f'__ns:={ns}'],
            cwd=REPO, env=ros_env, stdout=out, stderr=subprocess.STDOUT)
    manager = Manager(ros_env, ns)
    try:
        assert not manager.transition(Transition.TRANSITION_CONFIGURE)
        assert manager.state() == State.PRIMARY_STATE_UNCONFIGURED
        assert 'configure failed' in log.read_text() and '/nonexistent/model.safetensors' in \
            log.read_text()
    finally:
        manager.close()
        code = interrupt(proc, timeout=30)
    assert code == 0, log.read_text()
