"""The node end to end: real processes, real topics, a synthetic drive with sensor outages.

One scenario runs once for the module (starting torch and DDS is the slow part):
- a tiny checkpoint trained by ``python -m anyseg_core.train`` (config/train_tiny.yaml);
- ``python -m anyseg_ros.node`` with the shipped config/anyseg.yaml plus a calibration file
  and a few overrides, in a namespace of its own;
- sensor_driver.py publishing a 14 s drive at its real pace: all sensors (0-4 s), LiDAR
  silent (4-7 s), all (7-9 s), camera silent (9-12 s), all (12-14 s), with 1000 malformed
  messages of every kind mixed in;
- this process listening to every output, then stopping the node with SIGINT.
The tests below each check one part of what was recorded.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

rclpy = pytest.importorskip('rclpy', reason='rclpy is not installed (no ROS 2 here)')

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from rclpy.signals import SignalHandlerOptions  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from anyseg_ros.tools.processes import interrupt  # noqa: E402

from helpers import load_module  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name('sensor_driver.py')
SECONDS = 14.0
LIDAR_OFF = (4.0, 7.0)
CAMERA_OFF = (9.0, 12.0)
MALFORMED = 1000
STALE_AFTER = 0.5
TOPICS = {'camera/image': 'camera', 'lidar/points': 'lidar', 'events': 'events',
          'camera/camera_info': 'camera_info'}  # the driver's topics -> the node's inputs

pytestmark = pytest.mark.ros


def _load_driver():
    return load_module('anyseg_test_driver', DRIVER)


def _wait_for(predicate, timeout, spin=None, what='condition'):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if spin is not None:
            spin()
        else:
            time.sleep(0.1)
    raise AssertionError(f'timed out after {timeout} s waiting for {what}')


def _flat(m):
    return [float(v) for v in np.asarray(m, dtype=np.float64).reshape(-1)]


@pytest.fixture(scope='module')
def scenario(tiny_checkpoint, module_ros_env, tmp_path_factory):
    return _drive(tmp_path_factory.mktemp('node_scenario'), tiny_checkpoint, module_ros_env,
                  SECONDS, f'lidar:{LIDAR_OFF[0]}-{LIDAR_OFF[1]},'
                           f'camera:{CAMERA_OFF[0]}-{CAMERA_OFF[1]}', MALFORMED)


def _drive(tmp, tiny_checkpoint, env, seconds, silence, malformed, node_args=(),
           reliable=True):
    """Run the node (config/anyseg.yaml, the drive's calibration, ``node_args``) while
    sensor_driver.py publishes a ``seconds`` drive with ``silence`` windows and
    ``malformed`` broken messages; record every output until the node has settled (see
    :func:`_settled`), then stop the node with SIGINT.

    ``reliable``: the driver publishes and the node subscribes reliably, with histories deep
    enough for the whole drive, so every message arrives however loaded the machine is and
    the counts can be checked exactly; otherwise both are best effort (the node's default)."""
    driver = _load_driver()
    calib = driver.drive_calibration(driver.RIG)
    calib_file = tmp / 'calibration.yaml'
    calib_file.write_text(yaml.safe_dump({'/**': {'ros__parameters': {
        'lidar': {'T_cam_lidar': _flat(calib['T_cam_lidar'])},
        # sensor_driver.py publishes events in this project's PointCloud2 layout
        'events': {'type': 'pointcloud', 'K': _flat(calib['events_K']),
                   'T_cam_events': _flat(calib['T_cam_events']),
                   'height': int(calib['events_hw'][0]), 'width': int(calib['events_hw'][1])},
    }}}))
    ns = f'/anyseg_e2e_{uuid.uuid4().hex[:8]}'
    node_log = tmp / 'node.log'
    node_cmd = [sys.executable, '-m', 'anyseg_ros.node', '--ros-args',
                '--params-file', str(REPO / 'config' / 'anyseg.yaml'),
                '--params-file', str(calib_file),
                '-p', f'checkpoint:={tiny_checkpoint}', '-p', 'device:=cpu',
                '-p', 'network.height:=64', '-p', 'network.width:=96',
                '-p', f"qos.reliability:={'reliable' if reliable else 'best_effort'}",
                '-p', 'qos.depth:=1000', *node_args, '-r', f'__ns:={ns}']
    with open(node_log, 'wb') as out:
        node = subprocess.Popen(node_cmd, cwd=REPO, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    driver_proc = None
    rec = {k: [] for k in ('labels', 'color', 'overlay', 'status', 'diagnostics',
                           'camera_info')}
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(env['ROS_DOMAIN_ID']),
               signal_handler_options=SignalHandlerOptions.NO)
    try:
        _wait_for(lambda: b'ready:' in node_log.read_bytes() or node.poll() is not None, 180,
                  what='the node to start')
        assert node.poll() is None, f'node exited at start:\n{node_log.read_text()}'
        listener = Node('anyseg_e2e_listener', context=context)
        qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        for topic, kind in (('labels', Image), ('color', Image), ('overlay', Image),
                            ('status', String)):
            listener.create_subscription(kind, f'{ns}/anyseg/{topic}',
                                         lambda m, k=topic: rec[k].append(m), qos)
        listener.create_subscription(CameraInfo, f'{ns}/anyseg/camera_info',
                                     rec['camera_info'].append, qos)
        listener.create_subscription(
            DiagnosticArray, '/diagnostics',
            lambda m: rec['diagnostics'].append(m)
            if any(s.hardware_id == f'{ns}/anyseg' for s in m.status) else None, qos)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(listener)
        info_file = tmp / 'driver.json'
        with open(tmp / 'driver.log', 'wb') as out:
            driver_proc = subprocess.Popen(
                [sys.executable, str(DRIVER), ns, '--seconds', str(seconds),
                 '--silence', silence, '--malformed', str(malformed), '--info', str(info_file),
                 *(() if reliable else ('--best-effort',))],
                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        spin = lambda: executor.spin_once(timeout_sec=0.05)  # noqa: E731
        _wait_for(lambda: driver_proc.poll() is not None, seconds + 180, spin=spin,
                  what='the driver')
        assert driver_proc.returncode == 0, (tmp / 'driver.log').read_text()
        info = json.loads(info_file.read_text())
        after = len(rec['diagnostics'])
        _wait_for(lambda: _settled(rec, after, info if reliable else None), 120, spin=spin,
                  what='the node to take in every message and publish its last frame')
        alive_at_end = node.poll() is None
        start = time.monotonic()
        interrupt(node, timeout=30)
        exit_s = time.monotonic() - start
        executor.shutdown()
        listener.destroy_node()
    finally:
        rclpy.shutdown(context=context)
        for proc in (node, driver_proc):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    status = [json.loads(m.data) for m in rec['status']]
    return {'rec': rec, 'status': status, 'info': info, 'offset': info['offset'],
            'log': node_log.read_text(), 'alive_at_end': alive_at_end, 'exit_s': exit_s,
            'returncode': node.returncode, 'checkpoint': tiny_checkpoint, 'driver': driver,
            'calib': calib}


def _settled(rec, after, info=None):
    """Whether the node is done with the drive: two diagnostics reports received after the
    driver ended (``after``: how many had come before) count the same frames out, every
    frame's status has arrived, and, with ``info`` (the driver's, reliable transport), every
    message the driver sent has been received."""
    reports = rec['diagnostics'][after:]
    if len(reports) < 2:
        return False
    last, before = (_diag_values(d, 'inference')[2] for d in reports[-2:])
    frames = int(last['frames_out'])
    if frames != int(before['frames_out']) or len(rec['status']) < frames:
        return False
    if info is None:
        return True
    sent = Counter({sensor: info['sent'].get(topic, 0) for topic, sensor in TOPICS.items()})
    for key, n in info['broken'].items():
        sent[TOPICS[key.split(':')[0]]] += n
    return all(int(_diag_values(reports[-1], sensor)[2]['received']) == n
               for sensor, n in sent.items())


def _stamp(header):
    return header.stamp.sec + header.stamp.nanosec * 1e-9


def _in(status, offset, lo, hi):
    return [s for s in status if lo <= s['stamp'] - offset < hi]


def _diag_values(array, name):
    for s in array.status:
        if s.name == f'{s.hardware_id}: {name}':  # the node's full name: its namespace too
            level = s.level if isinstance(s.level, int) else ord(s.level)  # a byte in rclpy
            return level, s.message, {kv.key: kv.value for kv in s.values}
    raise AssertionError(f'no status {name!r} in {[s.name for s in array.status]}')


def test_all_sensors_outputs_and_agreement_with_offline_runtime(scenario):
    from anyseg_core.runtime import Runtime
    from anyseg_core.sensors import Events, RawFrame

    rec, status, offset = scenario['rec'], scenario['status'], scenario['offset']
    driver = scenario['driver']
    H, W = driver.RIG.image_hw
    # Every frame published arrived (reliable, and the drive waited for the node to settle).
    assert len(rec['labels']) == len(rec['color']) == len(status), scenario['log'][-2000:]
    assert status, scenario['log'][-2000:]
    for topic, encoding, channels in (('labels', 'mono8', 1), ('color', 'rgb8', 3),
                                      ('overlay', 'rgb8', 3)):
        msgs = rec[topic]
        assert msgs, topic
        for m in msgs:
            assert (m.encoding, m.height, m.width, m.step) == (encoding, H, W, W * channels)
            assert len(m.data) == H * W * channels
            assert m.header.frame_id == driver.CAMERA_FRAME
    # Labels are stamped with their camera image (drive times are multiples of 0.1 s).
    by_stamp = {round(s['stamp'], 6): s for s in status}
    camera_frames = [m for m in rec['labels']
                     if 'camera' in by_stamp[round(_stamp(m.header), 6)]['modalities']]
    for lo, hi in ((0.0, CAMERA_OFF[0]), (CAMERA_OFF[1] + 0.2, SECONDS)):  # camera phases
        assert any(lo <= _stamp(m.header) - offset < hi for m in camera_frames), (lo, hi)
    for m in camera_frames:
        t = _stamp(m.header) - offset
        assert abs(t * 10 - round(t * 10)) < 1e-4, t
    # The labels equal what anyseg_core.runtime gives offline on the same inputs.
    messages = driver.render(SECONDS)
    calib = scenario['calib']
    runtime = Runtime(scenario['checkpoint'], device='cpu', input_size=(64, 96), warmup=False)
    full = [s for s in status if s['pivot'] == 'camera'
            and sorted(s['modalities']) == ['camera', 'events', 'lidar']]
    # Three all-sensor frames from the middle of the first phase (however many there are).
    middle = [s for s in full if 1.0 <= s['stamp'] - offset < LIDAR_OFF[0]]
    picked = middle[len(middle) // 2:][:3]
    assert picked, [round(s['stamp'] - offset, 2) for s in full]
    labels_at = {round(_stamp(m.header), 6): m for m in rec['labels']}
    checked = 0
    for s in picked:
        drive_t = {sensor: [round(t - offset, 6) for t in stamps]
                   for sensor, stamps in s['stamps'].items()}
        pick = {(m.sensor, round(m.stamp, 6)): m for m in messages
                if round(m.stamp, 6) in drive_t.get(m.sensor, ())}
        cam = pick[('camera', drive_t['camera'][-1])].data['image']
        lidar = pick[('lidar', drive_t['lidar'][-1])].data
        packets = [pick[('events', t)].data for t in drive_t['events']]
        events = Events(x=np.concatenate([np.asarray(p.x, np.uint16) for p in packets]),
                        y=np.concatenate([np.asarray(p.y, np.uint16) for p in packets]),
                        t=np.concatenate([np.asarray(p.t, np.float64) + offset
                                          for p in packets]),
                        p=np.concatenate([np.asarray(p.p, np.uint8) for p in packets]))
        raw = RawFrame(image_hw=(H, W), K=np.asarray(calib['K']), t_cam=s['stamp'],
                       camera=cam, lidar=lidar[:, :4].astype(np.float32),
                       T_cam_lidar=np.asarray(calib['T_cam_lidar']), events=events,
                       events_K=np.asarray(calib['events_K']),
                       events_hw=tuple(calib['events_hw']),
                       T_cam_events=np.asarray(calib['T_cam_events']))
        expected = runtime.predict(runtime.prepare(raw), output_size=(H, W)).labels.numpy()
        got = np.frombuffer(bytes(labels_at[round(s['stamp'], 6)].data),
                            np.uint8).reshape(H, W)
        # Same code, same weights; only thread scheduling may flip a near-tie pixel.
        assert (got == expected).mean() >= 0.995, (got == expected).mean()
        checked += 1
    assert checked == len(picked)


def test_lidar_outage_and_return(scenario):
    status, offset = scenario['status'], scenario['offset']
    lo, hi = LIDAR_OFF
    during = _in(status, offset, lo + STALE_AFTER + 0.2, hi)
    # Frames kept coming without the dead sensor (at least one once it was stale: how many
    # depends on the machine's speed, which a test must not assume).
    assert during, [round(s['stamp'] - offset, 2) for s in status]
    for s in during:
        # The camera leads; events join unless they came later than max_wait (a loaded
        # machine), never the dead LiDAR.
        assert 'camera' in s['modalities'] and 'lidar' not in s['modalities'], s
        assert s['live']['lidar'] is False
    assert any('events' in s['modalities'] for s in during), during
    after = _in(status, offset, hi + 0.1, CAMERA_OFF[0])
    assert after, [round(s['stamp'] - offset, 2) for s in status]
    assert all('lidar' in s['modalities'] for s in after), after[:3]
    stale = [d for d in scenario['rec']['diagnostics']
             if lo + STALE_AFTER + 0.5 < _stamp(d.header) - offset < hi]
    assert stale, 'no diagnostics during the outage'
    for d in stale:
        level, message, _ = _diag_values(d, 'lidar')
        # STALE, or ERROR when the only lidar messages of the period were malformed ones.
        assert 'stale' in message, message
        assert level == (2 if 'malformed' in message else 3), (level, message)
        assert _diag_values(d, 'camera')[0] in (0, 1)  # OK, or WARN for malformed ones


def test_camera_outage_keeps_camera_geometry(scenario):
    status, offset, driver = scenario['status'], scenario['offset'], scenario['driver']
    lo, hi = CAMERA_OFF
    during = _in(status, offset, lo + STALE_AFTER + 0.2, hi)
    # Frames kept coming without the dead sensor (at least one once it was stale: how many
    # depends on the machine's speed, which a test must not assume).
    assert during, [round(s['stamp'] - offset, 2) for s in status]
    for s in during:
        # The LiDAR leads; events join unless they came later than max_wait.
        assert 'lidar' in s['modalities'] and 'camera' not in s['modalities'], s
        assert s['pivot'] == 'lidar'
        newest = max(t for stamps in s['stamps'].values() for t in stamps)
        assert s['stamp'] == pytest.approx(newest, abs=1e-6)
        assert s['frame_id'] == driver.CAMERA_FRAME
    stamps = {round(s['stamp'], 6) for s in during}
    labels = [m for m in scenario['rec']['labels'] if round(_stamp(m.header), 6) in stamps]
    assert len(labels) == len(during)
    H, W = driver.RIG.image_hw
    assert all((m.height, m.width) == (H, W) for m in labels)
    assert any('events' in s['modalities'] for s in during), during
    back = _in(status, offset, hi + 0.2, SECONDS)
    assert back and all(s['pivot'] == 'camera' for s in back)


def test_every_label_image_has_its_camera_info_also_during_the_camera_outage(scenario):
    """anyseg/camera_info goes with every label image (same stamp, frame and size, the
    camera's K): consumers that pair the two (image_transport's CameraSubscriber) keep
    working while the camera is out and its own camera_info has stopped."""
    infos = {round(_stamp(m.header), 6): m for m in scenario['rec']['camera_info']}
    labels = scenario['rec']['labels']
    stamps = [round(_stamp(m.header), 6) for m in labels]
    assert infos and set(infos) <= set(stamps)
    # Only labels made before the node had any intrinsics (its first CameraInfo) go without.
    assert all(t < min(infos) for t in stamps if t not in infos)
    K = np.asarray(scenario['calib']['K'], dtype=np.float64).reshape(-1)
    outage = 0
    for m in labels:
        info = infos.get(round(_stamp(m.header), 6))
        if info is None:
            continue
        assert (info.height, info.width) == (m.height, m.width)
        assert info.header.frame_id == m.header.frame_id
        np.testing.assert_allclose(np.asarray(info.k), K, rtol=1e-9)
        outage += CAMERA_OFF[0] + STALE_AFTER < _stamp(m.header) - scenario['offset'] \
            < CAMERA_OFF[1]
    assert outage, 'no label image during the camera outage'


def test_malformed_messages_are_counted_by_reason_and_frames_keep_coming(scenario):
    assert scenario['alive_at_end'], scenario['log']
    info = scenario['info']
    sent = Counter()
    for key, n in info['broken'].items():
        topic, reason = key.split(':')
        sent[(TOPICS[topic], reason)] += n
    assert sum(sent.values()) == MALFORMED
    last = scenario['rec']['diagnostics'][-1]
    counted = Counter()
    for topic, sensor in TOPICS.items():
        _, _, values = _diag_values(last, sensor)
        assert int(values['received']) == int(values['accepted']) + int(values['rejected'])
        # Reliable transport: every valid message was accepted, every broken one rejected.
        assert int(values['accepted']) == info['sent'][topic], (sensor, values)
        for key, value in values.items():
            if key.startswith('rejected.'):
                counted[(sensor, key.split('.', 1)[1])] += int(value)
    assert counted == sent, (counted, sent)
    # Logged with throttling per (sensor, reason), so each kind shows at least once (rclpy's
    # throttle, per call site, would let the first kind hide the others for 5 s).
    for sensor, reason in counted:
        assert f'{sensor}: rejected a message ({reason})' in scenario['log'], (sensor, reason)
    # Valid frames kept coming: none failed, every one was published, in every phase.
    _, _, inference = _diag_values(last, 'inference')
    assert int(inference['frames_failed']) == 0, inference
    assert int(inference['frames_out']) == len(scenario['status']), inference
    status, offset = scenario['status'], scenario['offset']
    for lo, hi in ((0.0, LIDAR_OFF[0]), (LIDAR_OFF[1], CAMERA_OFF[0]), (CAMERA_OFF[1], SECONDS)):
        assert _in(status, offset, lo, hi), f'no frame in [{lo}, {hi}) s'
    assert 'Traceback' not in scenario['log']


def test_status_reports_ages_and_latency(scenario):
    s = scenario['status'][len(scenario['status']) // 4]
    # the same record as process_bag's /anyseg/status (test_bags.py)
    assert set(s) == {'stamp', 'frame_id', 'modalities', 'pivot', 'sensor_age_s', 'stamps',
                      'live', 'dropped_backlog', 'left_out', 'latency_ms', 'inference_ms'}
    assert set(s['sensor_age_s']) == {'camera', 'events', 'lidar', 'camera_info'}
    assert 0 < s['latency_ms'] and 0 < s['inference_ms'] <= s['latency_ms'] + 1


def test_sigint_stops_the_node_cleanly(scenario):
    assert scenario['returncode'] == 0, scenario['log']
    assert '[anyseg] stopped' in scenario['log'], scenario['log'][-2000:]
    assert 'lidar.T_cam_lidar is unset' not in scenario['log']  # calibrated: no warning
    assert 'Traceback' not in scenario['log']


def _run_node(args, env, timeout=120):
    return subprocess.run([sys.executable, '-m', 'anyseg_ros.node', '--ros-args', *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_bad_configuration_stops_with_a_message_naming_it(tiny_checkpoint, ros_env):
    done = _run_node(['-p', f'checkpoint:={tiny_checkpoint}', '-p', 'device:=cpu',
                      '-p', 'sync.slopp:=0.1'], ros_env)
    assert done.returncode == 1 and 'sync.slopp' in done.stderr, done.stderr
    done = _run_node(['-p', 'checkpoint:=/nonexistent/model.safetensors'], ros_env)
    assert done.returncode == 1 and '/nonexistent/model.safetensors' in done.stderr
    done = _run_node(['-p', f'checkpoint:={tiny_checkpoint}', '-p', 'device:=cpu',
                      '-p', 'modalities:=[camera, depth]'], ros_env)
    assert done.returncode == 1 and 'depth' in done.stderr, done.stderr
    # A checkpoint trained on inputs normalised otherwise than raw sensors (DELIVER's LiDAR
    # images): refused at start, not a stream of wrong labels.
    from anyseg_core.checkpoint import read_metadata, save_model
    from anyseg_core.runtime import Runtime
    meta = read_metadata(tiny_checkpoint)
    meta['normalization']['lidar'] = {'mean': [0.0] * 3, 'std': [1.0] * 3}
    foreign = tiny_checkpoint.parent / 'foreign_norm.safetensors'
    save_model(foreign, Runtime(tiny_checkpoint, device='cpu', warmup=False).model, meta)
    done = _run_node(['-p', f'checkpoint:={foreign}', '-p', 'device:=cpu'], ros_env)
    assert done.returncode == 1 and 'normalised otherwise' in done.stderr, done.stderr
    assert "['lidar']" in done.stderr, done.stderr
    # A whole number for a floating-point parameter (a common params-file slip): one clear
    # line naming it, not an rclpy traceback.
    done = _run_node(['-p', f'checkpoint:={tiny_checkpoint}', '-p', 'device:=cpu',
                      '-p', 'sync.max_wait:=0'], ros_env)
    assert done.returncode == 1 and '[anyseg] error: parameter sync.max_wait' in done.stderr, \
        done.stderr
    assert 'decimal point' in done.stderr and 'Traceback' not in done.stderr, done.stderr
    done = _run_node(['-p', f'checkpoint:={tiny_checkpoint}', '-p', 'device:=cpu',
                      '-p', 'overlay.alpha:=1.5'], ros_env)  # out of range: no such hint
    assert done.returncode == 1 and 'parameter overlay.alpha' in done.stderr, done.stderr
    assert 'decimal point' not in done.stderr, done.stderr
    done = _run_node(['-p', f'checkpoint:={tiny_checkpoint}', '-p', 'device:=cpu',
                      '-p', 'tf.listener:=tf3'], ros_env)
    assert done.returncode == 1 and 'tf.listener' in done.stderr, done.stderr
    # A bad qos_overrides value (rclpy raises a RuntimeError): one line too.
    done = _run_node(['-p', f'checkpoint:={tiny_checkpoint}', '-p', 'device:=cpu',
                      '-p', 'qos_overrides./anyseg/labels.publisher.reliability:=foo'], ros_env)
    assert done.returncode == 1 and '[anyseg] error: qos_overrides' in done.stderr, done.stderr
    assert '`foo`' in done.stderr and 'Traceback' not in done.stderr, done.stderr


def test_tf2_ros_listener_asked_for_where_it_does_not_import_stops_the_node(tiny_checkpoint,
                                                                            ros_env):
    import importlib.util
    if importlib.util.find_spec('tf2_ros') is not None:
        pytest.skip('tf2_ros imports here (a ROS install): nothing to refuse')
    done = _run_node(['-p', f'checkpoint:={tiny_checkpoint}', '-p', 'device:=cpu',
                      '-p', 'tf.listener:=tf2_ros'], ros_env)
    assert done.returncode == 1 and 'tf.listener is tf2_ros but tf2_ros does not import' in \
        done.stderr, done.stderr


def test_sim_time_without_clock_a_dead_sensor_does_not_stop_output(tiny_checkpoint, ros_env,
                                                                   tmp_path):
    """use_sim_time with no /clock (a bag played without --clock): ROS time stays 0. Liveness
    and max_wait run on the steady clock, so the LiDAR going silent is noticed and the camera
    frames go on without it (they used to wait for it forever)."""
    off = 1.5
    # Best effort end to end (the node's default, as a driver's data reaches it).
    run = _drive(tmp_path, tiny_checkpoint, ros_env, 4.0, f'lidar:{off}-4.0', 0,
                 node_args=('-p', 'use_sim_time:=true'), reliable=False)
    assert run['alive_at_end'], run['log'][-2000:]
    status, offset = run['status'], run['offset']
    before = [s for s in status if s['stamp'] - offset < off - 0.2]
    after = [s for s in status if s['stamp'] - offset > off + STALE_AFTER + 0.3]
    assert any('lidar' in s['modalities'] for s in before), before
    assert after, [round(s['stamp'] - offset, 2) for s in status]
    assert all(s['modalities'] and 'lidar' not in s['modalities'] and not s['live']['lidar']
               for s in after)
    assert all(s['latency_ms'] is None for s in status)  # no ROS time to measure by
