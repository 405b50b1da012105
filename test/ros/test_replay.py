"""A live node fed by ``anyseg_ros.tools.play`` agrees with ``process_bag`` on the same bag, and
the faults play injects show up in the node's diagnostics as they should.

Real processes throughout: the bag from ``anyseg_ros.tools.synthetic_bag``, ``anyseg_node`` on the
bag's params with use_sim_time, ``anyseg_ros.tools.play --clock --drop lidar:... --corrupt
events:...``, and a listener in this process; then ``process_bag`` on the same bag with the
same LiDAR window offline.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy', reason='rclpy is not installed (no ROS 2 here)')

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from rclpy.signals import SignalHandlerOptions  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from anyseg_ros.tools import bag as bags  # noqa: E402
from anyseg_ros import conversions as conv  # noqa: E402
from anyseg_ros.tools.processes import interrupt  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SECONDS = 6.0
LIDAR_OFF = (1.0, 3.5)
CORRUPT_EVENTS = 0.3
# What each corruption of an event packet becomes in the node (anyseg_ros.tools.play.corrupt).
EVENT_REASONS = {'data_length', 'bad_size', 'bad_event_data'}

pytestmark = pytest.mark.ros


@pytest.fixture(scope='module')
def replay(tiny_checkpoint, module_ros_env, tmp_path_factory):
    from anyseg_ros.tools.synthetic_bag import write_synthetic_bag

    tmp = tmp_path_factory.mktemp('replay')
    bag = tmp / 'drive'
    info = write_synthetic_bag(bag, SECONDS, 'clear-day', None, 5, (96, 160), progress=False)
    env = module_ros_env
    ns = f'/anyseg_replay_{uuid.uuid4().hex[:8]}'
    node_log = tmp / 'node.log'
    node = _start_node(info, tiny_checkpoint, env, ns, node_log)
    rec = {'labels': [], 'status': [], 'diagnostics': [], 'diagnostics_rx': []}
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(env['ROS_DOMAIN_ID']),
               signal_handler_options=SignalHandlerOptions.NO)
    player = None
    try:
        _wait_ready(node, node_log)
        listener = rclpy.create_node('anyseg_replay_listener', context=context)
        qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        listener.create_subscription(Image, f'{ns}/anyseg/labels', rec['labels'].append, qos)
        listener.create_subscription(String, f'{ns}/anyseg/status',
                                     lambda m: rec['status'].append(json.loads(m.data)), qos)
        def on_diagnostics(m):
            if any(s.hardware_id == f'{ns}/anyseg' for s in m.status):
                rec['diagnostics'].append(m)
                rec['diagnostics_rx'].append(time.monotonic())

        listener.create_subscription(DiagnosticArray, '/diagnostics', on_diagnostics, qos)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(listener)
        # The node's outputs matched before anything plays (volatile: a frame published
        # before the match would never reach this listener, and the counts would not add up).
        deadline = time.monotonic() + 60
        while not all(listener.count_publishers(f'{ns}/anyseg/{t}') for t in ('labels',
                                                                               'status')):
            assert time.monotonic() < deadline, 'the node\'s outputs were never discovered'
            executor.spin_once(timeout_sec=0.05)
        for _ in range(20):
            executor.spin_once(timeout_sec=0.05)
        play_log = tmp / 'play.log'
        with open(play_log, 'wb') as out:
            player = subprocess.Popen(
                [sys.executable, '-m', 'anyseg_ros.tools.play', str(bag), '--clock',
                 '--namespace', ns, '--depth', '1000', '--ack-timeout', '300',
                 '--wait-for', '/camera/image', '/camera/camera_info', '/lidar/points',
                 '/events', '--start-delay', '0',
                 '--drop', f'lidar:{LIDAR_OFF[0]}-{LIDAR_OFF[1]}',
                 '--corrupt', f'events:{CORRUPT_EVENTS}', '--seed', '3'],
                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + SECONDS + 180
        while player.poll() is None and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        rec['play_end'] = time.monotonic()  # /clock stops here
        assert player.returncode == 0, play_log.read_text()
        played = [line for line in play_log.read_text().splitlines()
                  if line.startswith('played ')][0].split('time(s): ')[1]
        published = {topic: int(n) for topic, n in re.findall(r'(/[\w/]+) (\d+)', played)}
        after = len(rec['diagnostics'])
        deadline = time.monotonic() + 120
        # Until the node took in every message play sent and published its last frame (two
        # reports after the end with the same frames out): a condition, not a fixed wait.
        while not _settled(rec, after, published):
            assert time.monotonic() < deadline, _unsettled(rec, after, published)
            executor.spin_once(timeout_sec=0.05)
        # /clock stopped with the bag: the node must notice and call its sensors stale.
        while not (rec['diagnostics_rx'][-1] > rec['play_end'] + 1.0 and all(
                _diag(rec['diagnostics'][-1], sensor)[0] == 3
                for sensor in ('camera', 'lidar', 'events'))):
            if time.monotonic() > deadline:
                break  # test_injected_faults_show_in_diagnostics says what it got
            executor.spin_once(timeout_sec=0.05)
        executor.shutdown()
        listener.destroy_node()
    finally:
        rclpy.shutdown(context=context)
        _stop(node, player)
    corrupted = Counter()
    for topic_kind, n in re.findall(r'(/events:\w+) (\d+)', play_log.read_text()):
        corrupted[topic_kind.split(':')[1]] += int(n)
    # The same bag, the same LiDAR window, offline.
    from anyseg_ros.params import load_params_file
    from anyseg_ros.tools.process_bag import process_bag

    values = load_params_file(info['params'])
    values['device'] = 'cpu'
    offline = process_bag(bag, tmp / 'offline', tiny_checkpoint, values,
                          faults={'lidar': [LIDAR_OFF]}, progress=False)
    off_status = {round(json.loads(m.decode().data)['stamp'], 6): json.loads(m.decode().data)
                  for m in bags.read_bag(tmp / 'offline', ['/anyseg/status'])}
    off_labels = {round(conv.stamp_to_sec(m.decode().header.stamp), 6):
                  np.array(conv.image_to_array(m.decode())[0])
                  for m in bags.read_bag(tmp / 'offline', ['/anyseg/labels'])}
    return {'rec': rec, 't0': bags.bag_start_ns(bag) * 1e-9, 'offline': offline,
            'off_status': off_status, 'off_labels': off_labels, 'corrupted': corrupted,
            'log': node_log.read_text()}


def _start_node(info, checkpoint, env, ns, log):
    """The node on the shipped config and the bag's params file, sim time, in namespace
    ``ns``; reliable with deep histories, so every message arrives however loaded the machine
    is and the counts are exact."""
    with open(log, 'wb') as out:
        return subprocess.Popen(
            [sys.executable, '-m', 'anyseg_ros.node', '--ros-args',
             '--params-file', str(REPO / 'config' / 'anyseg.yaml'),
             '--params-file', info['params'], '-p', f'checkpoint:={checkpoint}',
             '-p', 'device:=cpu', '-p', 'use_sim_time:=true',
             '-p', 'qos.reliability:=reliable', '-p', 'qos.depth:=1000',
             '-r', f'__ns:={ns}'], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


def _wait_ready(node, log, timeout=180):
    """Until the node logged that it is ready (it exiting first fails the test)."""
    deadline = time.monotonic() + timeout
    while b'ready:' not in log.read_bytes():
        assert node.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)


def _stop(*procs):
    """SIGINT each process still running (the node, the player); kill after 10 s."""
    for proc in procs:
        interrupt(proc, timeout=10)


def _settled(rec, after, published):
    reports = rec['diagnostics'][after:]
    if len(reports) < 2:
        return False
    last, before = (_diag(d, 'inference')[2] for d in reports[-2:])
    if last['frames_out'] != before['frames_out'] or len(rec['status']) < int(
            last['frames_out']):
        return False
    topics = {'camera': '/camera/image', 'camera_info': '/camera/camera_info',
              'lidar': '/lidar/points', 'events': '/events'}
    return all(int(_diag(reports[-1], sensor)[2]['received']) == published.get(topic, 0)
               for sensor, topic in topics.items())


def _unsettled(rec, after, published):
    """What the node had taken in and put out when it did not settle (the failure's text)."""
    last = rec['diagnostics'][-1] if rec['diagnostics'] else None
    got = {} if last is None else {
        name: _diag(last, name)[2].get('received') for name in
        ('camera', 'camera_info', 'lidar', 'events')}
    return {'published': published, 'received': got, 'reports_after_end':
            len(rec['diagnostics']) - after, 'status': len(rec['status']),
            'inference': None if last is None else _diag(last, 'inference')[2]}


def _diag(array, name):
    for s in array.status:
        if s.name == f'{s.hardware_id}: {name}':  # the node's full name: its namespace too
            level = s.level if isinstance(s.level, int) else ord(s.level)
            return level, s.message, {kv.key: kv.value for kv in s.values}
    raise AssertionError(name)


def test_live_node_matches_process_bag(replay):
    live = {round(s['stamp'], 6): s for s in replay['rec']['status']}
    labels = {round(conv.stamp_to_sec(m.header.stamp), 6): m for m in replay['rec']['labels']}
    assert live and set(labels) == set(live), replay['log'][-2000:]
    # Offline every pivot is processed; live, a frame may be dropped as backlog, a late
    # sensor left out after max_wait, and the first frames depend on arrival timing: how
    # many frames match depends on the machine's load. What must hold for every frame made
    # of the same messages as offline: the same modalities and the same labels.
    same = [t for t in live if t in replay['off_status']]
    assert same, (sorted(live)[:5], sorted(replay['off_status'])[:5])
    equal_inputs = 0
    for t in same:
        a, b = live[t], replay['off_status'][t]
        b_stamps = {k: [round(x, 6) for x in v] for k, v in b['stamps'].items()}
        if a['stamps'] == b_stamps:
            equal_inputs += 1
            assert sorted(a['modalities']) == sorted(b['modalities']), (a, b)
            got = np.frombuffer(bytes(labels[t].data), np.uint8).reshape(
                labels[t].height, labels[t].width)
            assert (got == replay['off_labels'][t]).mean() >= 0.995, t
    # The event packets differ where play corrupted one (process_bag reads the bag undamaged)
    assert equal_inputs >= 1, [(live[t]['stamps'], replay['off_status'][t]['stamps'])
                               for t in same[:3]]
    # The LiDAR window shows in both, by the stamps of the frames.
    t0 = replay['t0']
    inside = [s for s in live.values() if LIDAR_OFF[0] + 0.7 < s['stamp'] - t0 < LIDAR_OFF[1]]
    assert inside and all('lidar' not in s['modalities'] for s in inside)
    assert replay['offline']['silenced']['lidar'] >= 10


def test_injected_faults_show_in_diagnostics(replay):
    t0 = replay['t0']
    diags = replay['rec']['diagnostics']
    assert diags, 'no diagnostics received'
    stale = [d for d in diags
             if LIDAR_OFF[0] + 0.6 < conv.stamp_to_sec(d.header.stamp) - t0 < LIDAR_OFF[1]]
    assert stale, 'no diagnostics during the dropped window'
    assert all(_diag(d, 'lidar')[0] == 3 for d in stale)  # STALE
    after = [d for d in diags
             if LIDAR_OFF[1] + 1.0 < conv.stamp_to_sec(d.header.stamp) - t0 < SECONDS - 0.2]
    assert after and _diag(after[-1], 'lidar')[0] == 0  # OK again
    # The bag is over and /clock stopped with it (sim time stands still at its end): the
    # liveness clock runs on at the steady rate once no tick came for a moment, so a later
    # report calls every sensor stale instead of freezing their last ages.
    rx, play_end = replay['rec']['diagnostics_rx'], replay['rec']['play_end']
    ended = [d for d, t in zip(diags, rx) if t > play_end + 1.0]
    assert ended, 'no diagnostics after the bag ended'
    assert all(_diag(ended[-1], sensor)[0] == 3 for sensor in ('camera', 'lidar', 'events'))
    _, _, values = _diag(diags[-1], 'events')
    rejected = {k.split('.', 1)[1]: int(v) for k, v in values.items()
                if k.startswith('rejected.')}
    sent = sum(replay['corrupted'].values())
    assert sent >= 10, replay['corrupted']
    assert set(rejected) <= EVENT_REASONS and 'bad_event_data' in rejected, rejected
    # Reliable transport: every corrupted message arrived and was rejected.
    assert sum(rejected.values()) == sent, (rejected, sent)
    assert int(values['rejected']) == sum(rejected.values())


def test_slow_replay_with_sim_time_keeps_every_sensor_live(tiny_checkpoint, module_ros_env,
                                                            tmp_path):
    """`play --rate 0.2 --clock`: a 10 Hz sensor arrives every 0.5 s of wall time, but every
    0.1 s of ROS time, which liveness runs on under use_sim_time: no sensor goes stale, every
    frame has all three. (On the steady clock, stale_after 0.5 s would call them stale.)"""
    from anyseg_ros.tools.synthetic_bag import write_synthetic_bag

    bag = tmp_path / 'slow'
    info = write_synthetic_bag(bag, 1.2, 'clear-day', None, 7, (96, 160), progress=False)
    ns = f'/anyseg_slow_{uuid.uuid4().hex[:8]}'
    node_log = tmp_path / 'node.log'
    env = module_ros_env
    node = _start_node(info, tiny_checkpoint, env, ns, node_log)
    status, diagnostics = [], []
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(env['ROS_DOMAIN_ID']),
               signal_handler_options=SignalHandlerOptions.NO)
    player = None
    try:
        _wait_ready(node, node_log)
        listener = rclpy.create_node('anyseg_slow_listener', context=context)
        qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        listener.create_subscription(String, f'{ns}/anyseg/status',
                                     lambda m: status.append(json.loads(m.data)), qos)
        listener.create_subscription(
            DiagnosticArray, '/diagnostics',
            lambda m: diagnostics.append(m) if any(s.hardware_id == f'{ns}/anyseg'
                                                   for s in m.status) else None, qos)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(listener)
        with open(tmp_path / 'play.log', 'wb') as out:
            player = subprocess.Popen(
                [sys.executable, '-m', 'anyseg_ros.tools.play', str(bag), '--clock',
                 '--rate', '0.2', '--namespace', ns, '--depth', '1000',
                 '--ack-timeout', '300',
                 '--wait-for', '/camera/image', '/lidar/points', '/events',
                 '--start-delay', '0'],
                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 240
        while player.poll() is None and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        assert player.returncode == 0, (tmp_path / 'play.log').read_text()
        played = len(diagnostics)
        while len(diagnostics) < played + 1 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)  # one report more: the last frames are in
        executor.shutdown()
        listener.destroy_node()
    finally:
        rclpy.shutdown(context=context)
        _stop(node, player)
    t0 = bags.bag_start_ns(bag) * 1e-9
    settled = [s for s in status if s['stamp'] - t0 > 0.3]  # every sensor has spoken
    assert settled, node_log.read_text()[-2000:]
    for s in settled:
        assert all(s['live'][m] for m in ('camera', 'lidar', 'events')), s
    assert any(sorted(s['modalities']) == ['camera', 'events', 'lidar'] for s in settled)
    # Not one report called a sensor stale while the bag played (reports are stamped with
    # ROS time: bag time; /clock stops at the bag's end, after which they may).
    end = max(s['stamp'] for s in status)
    playing = [d for d in diagnostics
               if t0 + 0.3 < conv.stamp_to_sec(d.header.stamp) < end - 0.1]
    for d in playing:
        for st in d.status:
            # camera_info too: its arrivals are on the same (ROS) clock as every input's
            if st.name.endswith((': camera', ': lidar', ': events', ': camera_info')):
                assert 'stale' not in st.message, (conv.stamp_to_sec(d.header.stamp) - t0,
                                                   st.name, st.message)
    for s in settled:  # ages of the status record alike: bag seconds, not 1.7e9
        assert 0 <= s['sensor_age_s']['camera_info'] < 1.0, s['sensor_age_s']
