"""A real AnysegNode spinning in the test's own process beside a feeder node, frame by frame.

Shared by test_node_live.py and test_node_tf.py. The feeder publishes reliably (depth 100)
on the node's input topics and records what the node publishes; a test publishes one frame
and waits for its outputs by stamp (a condition, not a delay), so nothing depends on the
machine's speed. Each :class:`LiveRig` has its own rclpy context and namespace.
"""
from __future__ import annotations

import json
import threading
import time
import uuid

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.srv import SetParameters
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import String

from anyseg_ros import conversions as conv

START_TIMEOUT_S = 60.0


class LiveRig:
    """``overrides``: the node's parameters. ``pubs``: the feeder's publishers ``image``
    (CompressedImage on camera/image/compressed when camera.transport is compressed),
    ``info``, ``lidar``, ``events``. ``outputs[kind][stamp]``: status (parsed JSON),
    color, labels and camera_info by the stamp of their header, rounded to the microsecond;
    ``diagnostics``: the arrays of /diagnostics, in arrival order."""

    def __init__(self, ros_env, overrides: dict, name: str = 'live'):
        from anyseg_ros.node import AnysegNode

        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=int(ros_env['ROS_DOMAIN_ID']),
                   signal_handler_options=SignalHandlerOptions.NO)
        self.ns = f'/anyseg_{name}_{uuid.uuid4().hex[:8]}'
        # The feeder publishes events in this project's PointCloud2 layout (events.type
        # pointcloud); EventPackets are fed by test_event_camera_live and the bag tests.
        overrides = {'events.type': 'pointcloud', **overrides}
        try:
            self.node = AnysegNode(context=self.context, namespace=self.ns,
                                   parameter_overrides=[Parameter(k, value=v)
                                                        for k, v in overrides.items()])
        except BaseException:
            rclpy.shutdown(context=self.context)
            raise
        self.feeder = Node(f'anyseg_{name}_feeder', namespace=self.ns, context=self.context)
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        compressed = overrides.get('camera.transport') == 'compressed'
        self.pubs = {
            'image': (self.feeder.create_publisher(CompressedImage, 'camera/image/compressed', qos)
                      if compressed else self.feeder.create_publisher(Image, 'camera/image', qos)),
            'info': self.feeder.create_publisher(CameraInfo, 'camera/camera_info', qos),
            'lidar': self.feeder.create_publisher(PointCloud2, 'lidar/points', qos),
            'events': self.feeder.create_publisher(PointCloud2, 'events', qos)}
        self.outputs = {'status': {}, 'color': {}, 'labels': {}, 'camera_info': {}}
        self.diagnostics: list = []
        self.lock = threading.Lock()
        self.feeder.create_subscription(String, 'anyseg/status', lambda m: self._keep(
            'status', json.loads(m.data)['stamp'], json.loads(m.data)), qos)
        for kind, cls in (('color', Image), ('labels', Image), ('camera_info', CameraInfo)):
            self.feeder.create_subscription(cls, f'anyseg/{kind}', lambda m, k=kind: self._keep(
                k, conv.stamp_to_sec(m.header.stamp), m), qos)
        self.feeder.create_subscription(DiagnosticArray, '/diagnostics', self._diagnostic, qos)
        self.setter = self.feeder.create_client(SetParameters,
                                                f'{self.ns}/anyseg/set_parameters')
        self.executor = MultiThreadedExecutor(num_threads=3, context=self.context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.feeder)
        threading.Thread(target=self.executor.spin, daemon=True).start()
        self.t = 0.0
        deadline = time.monotonic() + START_TIMEOUT_S
        wanted = [p for k, p in self.pubs.items()
                  if k in ('image', 'info') or k in self.node.modalities]
        while not all(p.get_subscription_count() for p in wanted):
            assert time.monotonic() < deadline, 'the node never subscribed'
            time.sleep(0.05)
        assert self.setter.wait_for_service(timeout_sec=START_TIMEOUT_S)

    def _keep(self, kind, stamp, msg):
        with self.lock:
            self.outputs[kind][round(stamp, 6)] = msg

    def _diagnostic(self, array):
        if any(s.hardware_id == self.node.get_fully_qualified_name() for s in array.status):
            with self.lock:
                self.diagnostics.append(array)

    def close(self):
        self.executor.shutdown()
        self.node.close()
        self.node.destroy_node()
        self.feeder.destroy_node()
        rclpy.shutdown(context=self.context)

    def set(self, name, value, type_=None):
        """Set one parameter through the node's set_parameters service (as ``ros2 param
        set`` does); fails the test when the node refuses it. ``type_`` (a
        ``Parameter.Type``) where the value does not tell it (an empty array)."""
        future = self.setter.call_async(SetParameters.Request(
            parameters=[Parameter(name, type_, value).to_parameter_msg()]))
        deadline = time.monotonic() + START_TIMEOUT_S
        while not future.done():
            assert time.monotonic() < deadline, f'no answer setting {name}'
            time.sleep(0.02)
        (result,) = future.result().results
        assert result.successful, (name, value, result.reason)

    HEALTH = {'image': 'camera', 'info': 'camera_info', 'lidar': 'lidar', 'events': 'events'}

    def _handled(self, kind: str) -> int:
        got = self.node.session.counts()['inputs'][self.HEALTH[kind]]
        return got['accepted'] + sum(got['rejected'].values())

    def feed(self, kind: str, msg) -> None:
        """Publish ``msg`` on the feeder's publisher ``kind`` and return once the node has
        taken it (accepted and handed to the synchroniser, or rejected). Messages fed one
        by one reach the synchroniser in this order, whatever the executor's threads do: a
        frame's other sensors before its camera image, as the test means it, and no frame
        waits on ``sync.max_wait`` for a message still in flight on a slow machine."""
        before = self._handled(kind)
        self.pubs[kind].publish(msg)
        deadline = time.monotonic() + START_TIMEOUT_S
        while self._handled(kind) == before:
            assert time.monotonic() < deadline, f'the node never took the {kind} message'
            time.sleep(0.005)

    def next_stamp(self, step: float = 0.2) -> float:
        """A stamp of now (the node refuses stamps more than sync.max_future ahead), at least
        ``step`` after the last one; returns once the wall clock has reached it."""
        self.t = t = round(max(time.time(), self.t + step), 3)
        while time.time() < t:
            time.sleep(0.01)
        return t

    def wait(self, t: float, wait_s: float, kinds=('status', 'color', 'labels')):
        """The outputs ``kinds`` stamped ``t``, once all arrived; TimeoutError after
        ``wait_s`` seconds."""
        key = round(t, 6)
        deadline = time.monotonic() + wait_s
        while True:
            with self.lock:
                got = [self.outputs[k].get(key) for k in kinds]
            if all(g is not None for g in got):
                return got
            if time.monotonic() > deadline:
                raise TimeoutError(f'no frame for stamp {t} after {wait_s} s')
            time.sleep(0.02)

    def wait_diagnostic(self, predicate, wait_s: float):
        """The first /diagnostics array of this node, arrived from now on, for which
        ``predicate(array)`` is true."""
        with self.lock:
            seen = len(self.diagnostics)
        deadline = time.monotonic() + wait_s
        while True:
            with self.lock:
                new = self.diagnostics[seen:]
                seen = len(self.diagnostics)
            for array in new:
                if predicate(array):
                    return array
            assert time.monotonic() < deadline, 'no /diagnostics array as expected'
            time.sleep(0.05)
