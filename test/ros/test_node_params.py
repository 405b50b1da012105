"""The node's parameters through ROS 2's own parameter services, on a real node process.

One node runs for the module (torch and DDS start slowly): ``python -m anyseg_ros.node``
with the shipped config/anyseg.yaml and a tiny checkpoint trained by the project's own
command, in a namespace of its own. This process talks to it only through the standard
rcl_interfaces services (<ns>/anyseg/list_parameters, describe_parameters, get_parameters,
set_parameters), the way ``ros2 param`` does, then stops it with SIGINT.
"""
from __future__ import annotations

import math
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import yaml

rclpy = pytest.importorskip('rclpy', reason='rclpy is not installed (no ROS 2 here)')

from rcl_interfaces.srv import (DescribeParameters, GetParameters,  # noqa: E402
                                ListParameters, SetParameters)
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter, parameter_value_to_python  # noqa: E402
from rclpy.signals import SignalHandlerOptions  # noqa: E402

from anyseg_ros.node import PARAMS  # noqa: E402
from anyseg_ros.params import DEMO_CHECKPOINT  # noqa: E402
from anyseg_ros.tools.processes import interrupt  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / 'config' / 'anyseg.yaml'
START_TIMEOUT_S = 240   # torch import + warm-up of every subset on a loaded 2-core machine
CALL_TIMEOUT_S = 60
OVERRIDES = {'device': 'cpu', 'network.height': 64, 'network.width': 96}

# A pytest-timeout covering the module's setup (training a checkpoint, starting the node).
pytestmark = [pytest.mark.ros, pytest.mark.timeout(900)]


def _start_node(checkpoint, env, ns, log_path, *extra):
    cmd = [sys.executable, '-m', 'anyseg_ros.node', '--ros-args', '--params-file', str(CONFIG),
           '-p', f'checkpoint:={checkpoint}',
           *(a for k, v in OVERRIDES.items() for a in ('-p', f'{k}:={v}')),
           *extra, '-r', f'__ns:={ns}']
    with open(log_path, 'wb') as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if b'ready:' in log_path.read_bytes() or proc.poll() is not None:
            break
        time.sleep(0.2)
    else:
        proc.kill()
        proc.wait()
        raise AssertionError(f'node not ready after {START_TIMEOUT_S} s:\n{log_path.read_text()}')
    assert proc.poll() is None, f'node exited at start:\n{log_path.read_text()}'
    return proc


def _stop(proc):
    return interrupt(proc, timeout=30)


class ParamClient:
    """The parameter services of ``<ns>/anyseg``, called from this process."""

    def __init__(self, context, ns):
        self.node = Node(f'params_client_{uuid.uuid4().hex[:8]}', context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.clients = {kind: self.node.create_client(srv, f'{ns}/anyseg/{kind}')
                        for kind, srv in (('list_parameters', ListParameters),
                                          ('describe_parameters', DescribeParameters),
                                          ('get_parameters', GetParameters),
                                          ('set_parameters', SetParameters))}

    def call(self, kind, request):
        client = self.clients[kind]
        assert client.wait_for_service(timeout_sec=CALL_TIMEOUT_S), f'no {client.srv_name}'
        future = client.call_async(request)
        self.executor.spin_until_future_complete(future, timeout_sec=CALL_TIMEOUT_S)
        assert future.done(), f'no answer from {client.srv_name} in {CALL_TIMEOUT_S} s'
        return future.result()

    def list(self):
        return list(self.call('list_parameters', ListParameters.Request()).result.names)

    def describe(self, names):
        return list(self.call('describe_parameters',
                              DescribeParameters.Request(names=list(names))).descriptors)

    def get(self, *names):
        values = self.call('get_parameters', GetParameters.Request(names=list(names))).values
        assert len(values) == len(names), f'get {names}: {len(values)} values'
        return [_py(parameter_value_to_python(v)) for v in values]

    def value(self, name):
        """One parameter's value; None for an array nobody set (rclpy answers no value)."""
        values = self.call('get_parameters', GetParameters.Request(names=[name])).values
        return _py(parameter_value_to_python(values[0])) if values else None

    def set(self, name, value, type_=None):
        param = Parameter(name, value=value) if type_ is None else Parameter(name, type_, value)
        results = self.call('set_parameters',
                            SetParameters.Request(parameters=[param.to_parameter_msg()])).results
        assert len(results) == 1
        return results[0]

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()


def _py(value):
    """Parameter values as plain Python (arrays arrive as array.array)."""
    return value if isinstance(value, (str, bytes, bool, int, float)) else list(value)


def _yaml_values():
    """The shipped params file, flattened to parameter names."""
    tree = yaml.safe_load(CONFIG.read_text())['/**']['ros__parameters']

    def flat(d, prefix=''):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from flat(v, f'{prefix}{k}.')
            else:
                yield f'{prefix}{k}', v
    return dict(flat(tree))


def _rigid(yaw=0.3):
    """A LiDAR (x forward, z up) to camera (z forward, y down) transform, row-major 4x4."""
    c, s = math.cos(yaw), math.sin(yaw)
    Rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    axes = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
    T = np.eye(4)
    T[:3, :3] = axes @ Rz
    T[:3, 3] = [0.1, -0.25, 0.05]
    return [float(v) for v in T.reshape(-1)]


@pytest.fixture(scope='module')
def session(tiny_checkpoint, module_ros_env, tmp_path_factory):
    tmp = tmp_path_factory.mktemp('node_params')
    ns = f'/anyseg_params_{uuid.uuid4().hex[:8]}'
    log = tmp / 'node.log'
    env = module_ros_env
    proc = _start_node(tiny_checkpoint, env, ns, log)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(env['ROS_DOMAIN_ID']),
               signal_handler_options=SignalHandlerOptions.NO)
    client = None
    try:
        client = ParamClient(context, ns)
        # The values the node started with, before any test sets one (the tests share the
        # node; test_values... reads these, so it does not depend on running first).
        initial = {p.name: client.value(p.name) for p in PARAMS}
        yield {'proc': proc, 'client': client, 'log': log, 'checkpoint': tiny_checkpoint,
               'initial': initial}
    finally:
        if client is not None:
            client.close()
        rclpy.shutdown(context=context)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _alive(session):
    assert session['proc'].poll() is None, f"node died:\n{session['log'].read_text()}"


# ------------------------------------------------------------------------------ the tests
def test_every_parameter_is_listed_and_described(session):
    client = session['client']
    names = client.list()
    missing = [p.name for p in PARAMS if p.name not in names]
    assert not missing, f'not listed: {missing} (listed: {names})'
    descriptors = client.describe([p.name for p in PARAMS])
    assert len(descriptors) == len(PARAMS)
    for p, d in zip(PARAMS, descriptors):
        assert d.name == p.name
        assert d.description == p.description, p.name
        assert d.read_only == (not p.dynamic), p.name
        if p.default is None:
            assert d.type in (Parameter.Type.DOUBLE_ARRAY.value,
                              Parameter.Type.INTEGER_ARRAY.value), p.name
        else:
            assert d.type == Parameter.Type.from_parameter_value(p.default).value, p.name
        if p.range is not None and isinstance(p.default, float):
            assert len(d.floating_point_range) == 1, p.name
            r = d.floating_point_range[0]
            assert (r.from_value, r.to_value) == tuple(map(float, p.range)), p.name
        elif p.range is not None and type(p.default) is int:  # integers carry ranges too
            assert len(d.integer_range) == 1, p.name
            r = d.integer_range[0]
            assert (r.from_value, r.to_value) == tuple(map(int, p.range)), p.name
    types = {d.name: d.type for d in descriptors}
    assert types['lidar.T_cam_lidar'] == Parameter.Type.DOUBLE_ARRAY.value
    assert types['palette'] == Parameter.Type.INTEGER_ARRAY.value


def test_an_unset_lidar_extrinsic_is_warned_about(session):
    """The shipped config leaves lidar.T_cam_lidar unset (identity): wrong for nearly every
    rig, so the node says so at start (the end-to-end test, with a calibration, does not)."""
    assert 'lidar.T_cam_lidar is unset' in session['log'].read_text()


def test_values_come_from_the_params_file_and_the_overrides(session):
    expected = {p.name: p.default for p in PARAMS}
    shipped = _yaml_values()
    assert set(shipped) <= set(expected), set(shipped) - set(expected)
    expected.update(shipped)
    expected.update(OVERRIDES, checkpoint=str(session['checkpoint']))
    got = session['initial']
    for name in (n for n, v in expected.items() if v is not None):
        assert got[name] == expected[name], (name, got[name], expected[name])
    # The arrays the params file leaves out are unset: no value, not an empty list.
    for name in (n for n, v in expected.items() if v is None):
        assert got[name] is None, name


def test_dynamic_parameters_are_set_and_read_back(session):
    client = session['client']
    T = _rigid()
    for name, value in (('overlay.alpha', 0.25), ('sync.slop', 0.02), ('lidar.T_cam_lidar', T),
                        ('output.resolution', 'network'), ('output.resolution', 'camera'),
                        ('palette', [10, 20, 30, 40, 50, 60]), ('events.window', 0.05),
                        ('confidence.enabled', True)):
        result = client.set(name, value)
        assert result.successful, (name, value, result.reason)
        assert client.value(name) == value, name
    assert client.get('overlay.alpha', 'sync.slop') == [0.25, 0.02]
    np.testing.assert_array_equal(client.value('lidar.T_cam_lidar'), T)
    # Lens distortion: each set is checked on its own, so a model with another number of
    # coefficients is reached through zeros (the refusal says how).
    rational = [-0.1, 0.01, 0.0, 0.0, 0.0, 0.001, 0.0, 0.0]
    for name, value in (('camera.D', [-0.1, 0.01, 0.0, 0.0, 0.0]), ('camera.D', [0.0] * 5),
                        ('camera.distortion_model', 'rational_polynomial'),
                        ('camera.D', rational)):
        result = client.set(name, value)
        assert result.successful, (name, value, result.reason)
    result = client.set('camera.distortion_model', 'equidistant')
    assert not result.successful and 'set camera.D to zeros first' in result.reason, result.reason
    assert client.value('camera.distortion_model') == 'rational_polynomial'
    assert list(client.value('camera.D')) == rational
    _alive(session)


@pytest.mark.parametrize('name, value, words', [
    ('overlay.alpha', 2.0, ['overlay.alpha', 'range']),
    ('overlay.alpha', -0.1, ['overlay.alpha', 'range']),
    ('output.resolution', 'huge', ['output.resolution', 'huge']),
    ('lidar.T_cam_lidar', _rigid()[:15], ['lidar.T_cam_lidar', '16']),
    ('lidar.T_cam_lidar', [float(v) for v in np.diag([2.0, 2.0, 2.0, 1.0]).reshape(-1)],
     ['lidar.T_cam_lidar', 'rigid']),
    ('lidar.T_cam_lidar', _rigid()[:12] + [0.0, 0.0, 1.0, 1.0], ['lidar.T_cam_lidar']),
    ('lidar.T_cam_lidar', [math.nan] + _rigid()[1:], ['lidar.T_cam_lidar']),
    ('palette', [1, 2, 3, 4], ['palette']),
    ('palette', [1, 2, 300], ['palette']),
    ('camera.K', [100.0, 0.0, 50.0, 0.0, -100.0, 40.0, 0.0, 0.0, 1.0], ['camera.K']),
    ('sync.stale_after', 0.0, ['sync.stale_after']),
    ('camera.distortion_model', 'fov', ['camera.distortion_model', 'fov']),
    ('camera.D', [0.1, 0.0, 0.0], ['camera.D', 'coefficients']),
    # Inside the declared range [0, 1], but a synchroniser needs slop > 0: refused, and the
    # node keeps running (each test checks it is alive).
    ('sync.slop', 0.0, ['sync.slop']),
])
def test_invalid_values_are_refused_with_a_reason_naming_the_parameter(session, name, value,
                                                                       words):
    client = session['client']
    before = client.value(name)
    result = client.set(name, value)
    assert not result.successful, (name, value)
    for word in words:
        assert word in result.reason, (word, result.reason)
    assert client.value(name) == before, name  # unchanged (or still unset)
    _alive(session)


def test_wrongly_typed_values_are_refused(session):
    client = session['client']
    before = [client.value(n) for n in ('overlay.alpha', 'lidar.T_cam_lidar', 'palette')]
    # Integers where doubles are declared (the params file comment warns about `1` vs `1.0`).
    assert not client.set('overlay.alpha', 1).successful
    assert not client.set('lidar.T_cam_lidar', [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]
                          ).successful
    assert not client.set('palette', [1.0, 2.0, 3.0]).successful
    assert [client.value(n) for n in ('overlay.alpha', 'lidar.T_cam_lidar', 'palette')] == before
    _alive(session)


def test_read_only_parameters_are_refused(session):
    client = session['client']
    for name, value in (('checkpoint', '/tmp/other.safetensors'), ('device', 'cuda')):
        result = client.set(name, value)
        assert not result.successful and name in result.reason, (name, result.reason)
    # Every read-only parameter, even to its current value.
    read_only = [p.name for p in PARAMS if not p.dynamic and p.default is not None]
    for name, value in zip(read_only, client.get(*read_only)):
        result = client.set(name, value)
        assert not result.successful and name in result.reason, (name, result.reason)
    assert client.get('checkpoint', 'device') == [str(session['checkpoint']), 'cpu']
    _alive(session)


def test_undeclared_parameter_is_refused(session):
    client = session['client']
    result = client.set('sync.slopp', 0.1)
    # rclpy's reason says "undeclared" but lists no name (ParameterNotDeclaredException of
    # rclpy 9 formats an empty list), so only the word is checked.
    assert not result.successful and 'undeclared' in result.reason, result.reason
    assert 'sync.slopp' not in client.list()
    _alive(session)


def test_sigint_stops_the_node_cleanly(tiny_checkpoint, module_ros_env, tmp_path):
    """A node of its own (the shared one stays up for the other tests, in any order): a
    parameter change, then SIGINT, and the node exits 0 with no error in its log."""
    log = tmp_path / 'node.log'
    ns = f'/anyseg_sigint_{uuid.uuid4().hex[:8]}'
    proc = _start_node(tiny_checkpoint, module_ros_env, ns, log)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(module_ros_env['ROS_DOMAIN_ID']),
               signal_handler_options=SignalHandlerOptions.NO)
    client = ParamClient(context, ns)
    try:
        assert client.set('sync.slop', 0.07).successful
        assert proc.poll() is None, log.read_text()
    finally:
        client.close()
        rclpy.shutdown(context=context)
        code = _stop(proc)
    assert code == 0, log.read_text()
    text = log.read_text()
    assert 'Traceback' not in text and '[anyseg] error' not in text, text


@pytest.mark.parametrize('gap_s', [0.0, 0.3])
def test_two_sigints_as_a_launch_ctrl_c_sends_stop_the_node_cleanly(tiny_checkpoint,
                                                                     module_ros_env, tmp_path,
                                                                     gap_s):
    """Ctrl-C of `ros2 launch` signals the whole process group, so the node gets SIGINT from
    the terminal and again from launch: it must still exit 0 without a traceback, whether the
    second comes at once or while the node is stopping."""
    import signal

    log = tmp_path / 'node.log'
    ns = f'/anyseg_sigint2_{uuid.uuid4().hex[:8]}'
    proc = _start_node(tiny_checkpoint, module_ros_env, ns, log)
    proc.send_signal(signal.SIGINT)
    time.sleep(gap_s)
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert code == 0, text
    assert 'Traceback' not in text and 'KeyboardInterrupt' not in text, text


def test_without_a_checkpoint_parameter_the_bundled_demo_checkpoint_runs(module_ros_env,
                                                                         tmp_path):
    """`checkpoint` empty (the shipped config's value): the node loads the demo checkpoint
    installed with the package and gets ready on it."""
    log = tmp_path / 'node.log'
    cmd = [sys.executable, '-m', 'anyseg_ros.node', '--ros-args', '--params-file', str(CONFIG),
           *(a for k, v in OVERRIDES.items() for a in ('-p', f'{k}:={v}')),
           '-r', f'__ns:=/anyseg_demo_ckpt_{uuid.uuid4().hex[:8]}']
    with open(log, 'wb') as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=module_ros_env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while b'ready:' not in log.read_bytes() and proc.poll() is None:
            assert time.monotonic() < deadline, f'not ready:\n{log.read_text()}'
            time.sleep(0.2)
        text = log.read_text()
        assert 'ready:' in text, text
        assert str(DEMO_CHECKPOINT) in text, text
        # Told loudly: a robot must not run the synthetic-world model by accident.
        assert '[WARN]' in text and 'bundled DEMO model' in text, text
    finally:
        assert _stop(proc) == 0, log.read_text()
