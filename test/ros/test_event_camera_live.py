"""A real Prophesee recording (metavision_driver's EventPacket evt3) replayed into a live node.

The shared driver bag (../shared/data/real/event_camera_bags/test_events_1: 517 packets over
2 s, 640 x 480) is restamped to a base time of our own and written with a camera (640 x 480
images and CameraInfo, the events in its pixels) into a bag that ``anyseg_ros.tools.play``
replays with /clock into ``anyseg_node`` (use_sim_time, events.type packet: the default).
The node must decode every packet (none rejected, none lost), and make frames that use the
events; each frame's status lists the packets it used, and the same packets decoded offline
by a fresh stream hold events in the frame's window.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy', reason='rclpy is not installed (no ROS 2 here)')
pytest.importorskip('event_camera_msgs.msg', reason='event_camera_msgs is not installed '
                    '(make setup generates it on a pip install; rosdep on a ROS install)')

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from rclpy.signals import SignalHandlerOptions  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from anyseg_ros.events import EventPacketStream  # noqa: E402
from anyseg_ros.tools import bag as bags  # noqa: E402
from anyseg_ros.tools.processes import interrupt  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
REAL = REPO.parent / 'shared' / 'data' / 'real' / 'event_camera_bags' / 'test_events_1'
BASE_NS = 1_800_000_000 * 10**9  # the restamped recording starts here
K = [500.0, 0.0, 319.5, 0.0, 500.0, 239.5, 0.0, 0.0, 1.0]
CAMERA_HZ = 10

pytestmark = pytest.mark.ros


def _write_bag(path: Path) -> dict:
    """The real packets restamped to BASE_NS (header stamps and receive times moved alike,
    events untouched: evt3 times are the camera's own clock), with 10 Hz camera images."""
    packets = [(m.time_ns, m.decode()) for m in bags.read_bag(REAL)]
    shift = BASE_NS - packets[0][0]
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    messages = []
    for t_ns, msg in packets:
        stamp = int(msg.header.stamp.sec) * 10**9 + int(msg.header.stamp.nanosec) + shift
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 10**9)
        msg.header.frame_id = 'camera_optical'  # the events are in the camera's pixels
        messages.append((t_ns + shift, bags.TOPICS['events'], msg))
    end = packets[-1][0] + shift
    cameras = []
    for k in range(int((end - BASE_NS) * 1e-9 * CAMERA_HZ) + 1):
        t = BASE_NS + k * 10**9 // CAMERA_HZ
        cameras.append(t)
        stamp = divmod(t, 10**9)
        messages.append((t + 10**7, bags.TOPICS['camera'],
                         bags.image_msg(image, 'rgb8', stamp, 'camera_optical')))
        messages.append((t + 10**7, bags.TOPICS['camera_info'],
                         bags.camera_info_msg(np.reshape(K, (3, 3)), (480, 640), stamp,
                                              'camera_optical')))
    messages.sort(key=lambda m: m[0])
    with bags.BagWriter(path) as writer:
        for t_ns, topic, msg in messages:
            writer.write(topic, msg, t_ns)
    return {'packets': [m for _, m in packets], 'cameras': cameras}


@pytest.fixture(scope='module')
def live(tiny_checkpoint, module_ros_env, tmp_path_factory):
    if not REAL.is_dir():
        pytest.skip(f'{REAL} is not on this machine (the shared real data)')
    tmp = tmp_path_factory.mktemp('event_camera')
    bag = tmp / 'prophesee'
    info = _write_bag(bag)
    env = module_ros_env
    ns = f'/anyseg_evt3_{uuid.uuid4().hex[:8]}'
    node_log, play_log = tmp / 'node.log', tmp / 'play.log'
    with open(node_log, 'wb') as out:
        node = subprocess.Popen(
            [sys.executable, '-m', 'anyseg_ros.node', '--ros-args',
             '--params-file', str(REPO / 'config' / 'anyseg.yaml'),
             '-p', f'checkpoint:={tiny_checkpoint}', '-p', 'device:=cpu',
             '-p', 'use_sim_time:=true', '-p', 'modalities:=[camera, events]',
             '-p', f'camera.K:={K}', '-p', 'qos.reliability:=reliable',
             '-p', 'qos.depth:=1000', '-p', 'sync.stale_after:=3600.0',
             '-r', f'__ns:={ns}'], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    rec = {'status': [], 'diagnostics': []}
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(env['ROS_DOMAIN_ID']),
               signal_handler_options=SignalHandlerOptions.NO)
    player = None
    try:
        deadline = time.monotonic() + 180
        while b'ready:' not in node_log.read_bytes():
            assert node.poll() is None and time.monotonic() < deadline, node_log.read_text()
            time.sleep(0.1)
        listener = rclpy.create_node('anyseg_evt3_listener', context=context)
        qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        listener.create_subscription(String, f'{ns}/anyseg/status',
                                     lambda m: rec['status'].append(json.loads(m.data)), qos)
        listener.create_subscription(
            DiagnosticArray, '/diagnostics',
            lambda m: rec['diagnostics'].append(m) if any(
                s.hardware_id == f'{ns}/anyseg' for s in m.status) else None, qos)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(listener)
        with open(play_log, 'wb') as out:
            player = subprocess.Popen(
                [sys.executable, '-m', 'anyseg_ros.tools.play', str(bag), '--clock',
                 '--namespace', ns, '--depth', '1000', '--ack-timeout', '300',
                 '--wait-for', '/camera/image', '/events', '--start-delay', '0'],
                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 240
        while player.poll() is None and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        assert player.returncode == 0, play_log.read_text()
        # until the node has taken every packet and reported it
        deadline = time.monotonic() + 120
        while not (rec['diagnostics'] and int(_values(rec['diagnostics'][-1], 'events').get(
                'received', 0)) >= len(info['packets'])):
            assert time.monotonic() < deadline, node_log.read_text()[-3000:]
            executor.spin_once(timeout_sec=0.05)
        for _ in range(40):  # the last frames
            executor.spin_once(timeout_sec=0.05)
        executor.shutdown()
        listener.destroy_node()
    finally:
        rclpy.shutdown(context=context)
        for proc in (node, player):
            interrupt(proc, timeout=10)
    return {**info, **rec, 'node_log': node_log}


def _values(report, sensor: str) -> dict:
    for s in report.status:
        if s.name.endswith(f': {sensor}'):
            return {kv.key: kv.value for kv in s.values}
    return {}


def test_every_packet_of_the_recording_is_decoded_and_none_lost(live):
    values = _values(live['diagnostics'][-1], 'events')
    assert int(values['received']) == int(values['accepted']) == len(live['packets']), values
    assert int(values['rejected']) == 0, values
    assert int(values.get('lost_packets', 0)) == 0, values
    assert int(values['removed.trigger_words']) == 4157  # the recording's trigger edges


def test_frames_use_the_real_events_of_their_window(live):
    # most camera frames find packets in their window (the recording has quiet spells, and a
    # loaded node may drop a frame as backlog)
    with_events = [s for s in live['status'] if 'events' in s['modalities']]
    assert len(with_events) >= len(live['cameras']) // 2, [
        (s['stamp'], s['modalities'], s['dropped_backlog']) for s in live['status']]
    # offline: the same (restamped) packets decoded by a fresh stream; the node matches a
    # packet by its last event's time, which the status lists
    stream, by_end = EventPacketStream(), {}
    for msg in live['packets']:
        events = stream(msg)
        if len(events):
            by_end[round(float(events.t.max()), 6)] = events
    for s in with_events:
        used = [by_end[round(t, 6)] for t in s['stamps']['events']]
        inside = sum(int(np.count_nonzero((e.t > s['stamp'] - 0.03) & (e.t <= s['stamp'])))
                     for e in used)
        assert inside > 100, s
