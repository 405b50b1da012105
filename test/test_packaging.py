"""The installed interface of the package: wheel contents, package.xml, launch, params.

colcon and pip both install from setup.py; what ROS tools find afterwards (the ament index
marker, share/anyseg_ros/{package.xml,launch,config}, executables) is checked here on a
wheel and on a colcon-style `setup.py install`, both made from a copy of the sources so
that the tests never write into the working tree.
"""
import configparser
import importlib
import importlib.metadata
import importlib.util
import os
import re
import shutil
import site
import subprocess
import sys
import sysconfig
import xml.etree.ElementTree as ET
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
import yaml

from helpers import load_module

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = 'anyseg_ros'
PYTHON_PACKAGES = ('anyseg_core', 'anyseg_ros')
# What setup.py builds from; anything else in the tree is not part of the package.
SOURCES = ('setup.py', 'setup.cfg', 'package.xml', 'resource', 'launch', 'config',
           *PYTHON_PACKAGES)
TOOLS = ('play', 'process_bag', 'muses_to_bag', 'synthetic_bag', 'demo')
# pip puts console scripts on the environment's PATH: each name carries the prefix.
CONSOLE_SCRIPTS = {'anyseg_synthetic': 'anyseg_core.data.synthetic.__main__:main',
                   'anyseg_node': 'anyseg_ros.node:main',
                   **{f'anyseg_{tool}': f'anyseg_ros.tools.{tool}:main' for tool in TOOLS}}
# `ros2 run anyseg_ros play` etc.: only in lib/anyseg_ros of a colcon install, never on a PATH.
ROS_EXECUTABLES = TOOLS
LAUNCH_ARGUMENTS = {'params_file', 'checkpoint', 'device', 'namespace', 'use_sim_time',
                    'managed', 'fastdds_profile', 'camera_image', 'camera_info', 'lidar_points', 'events',
                    'depth_image'}
ROS_EXEC_DEPENDS = {'rclpy', 'sensor_msgs', 'std_msgs', 'diagnostic_msgs',
                    'builtin_interfaces', 'launch', 'launch_ros', 'ros2launch', 'tf2_msgs'}


def _run(cmd, **kwargs):
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, (
        f'{" ".join(map(str, cmd))} failed ({result.returncode}):\n'
        f'{result.stdout[-3000:]}\n{result.stderr[-3000:]}')
    return result


def _copy_sources(parent):
    """Copy what setup.py builds from into parent/anyseg_ros; return that folder."""
    source = parent / PACKAGE
    source.mkdir()
    ignore = shutil.ignore_patterns('__pycache__', '*.pyc', '*.egg-info')
    for name in SOURCES:
        path = REPO_ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=ignore)
        elif path.exists():
            shutil.copy2(path, source / name)
    return source


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
    """Build the wheel from a copy of the sources; return (path, ZipFile)."""
    source = _copy_sources(tmp_path_factory.mktemp('source'))
    out = tmp_path_factory.mktemp('wheelhouse')
    _run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation',
          '--use-pep517', '--no-index', '-q', '-w', str(out), str(source)], cwd=source)
    (path,) = out.glob(f'{PACKAGE}-*.whl')
    with zipfile.ZipFile(path) as zf:
        yield path, zf


def _wheel_version(zf):
    (name,) = [n for n in zf.namelist() if n.endswith('.dist-info/METADATA')]
    return Parser().parsestr(zf.read(name).decode())['Version']


def _package_xml():
    return ET.parse(REPO_ROOT / 'package.xml').getroot()


def test_wheel_has_ros_data_files(wheel):
    _, zf = wheel
    names = set(zf.namelist())
    data = f'{PACKAGE}-{_wheel_version(zf)}.data/data/'
    for installed in ('share/ament_index/resource_index/packages/anyseg_ros',
                      'share/anyseg_ros/package.xml',
                      'share/anyseg_ros/launch/anyseg.launch.py',
                      'share/anyseg_ros/config/anyseg.yaml',
                      'share/anyseg_ros/config/fastdds_large_frames.xml'):
        assert data + installed in names, f'{installed} missing from the wheel'


def test_wheel_has_the_demo_checkpoint(wheel):
    """The node's default checkpoint ships inside the package (no download needed)."""
    _, zf = wheel
    assert 'anyseg_ros/checkpoints/demo.safetensors' in set(zf.namelist())


def test_wheel_has_every_module(wheel):
    """Every .py file under the two packages ships; a folder without __init__.py would not."""
    _, zf = wheel
    names = set(zf.namelist())
    for package in PYTHON_PACKAGES:
        assert f'{package}/__init__.py' in names
        for path in sorted((REPO_ROOT / package).rglob('*.py')):
            relative = path.relative_to(REPO_ROOT)
            if '__pycache__' in relative.parts:
                continue
            missing_init = [
                str(Path(*relative.parts[:i]))
                for i in range(1, len(relative.parts))
                if not (REPO_ROOT.joinpath(*relative.parts[:i]) / '__init__.py').exists()
            ]
            assert not missing_init, (
                f'{relative} is not packaged: add __init__.py to {missing_init}')
            assert relative.as_posix() in names, f'{relative} missing from the wheel'
        for pattern in ('checkpoints/*.safetensors', 'checkpoints/*.json'):
            for path in (REPO_ROOT / package).glob(pattern):
                assert path.relative_to(REPO_ROOT).as_posix() in names


def test_wheel_declares_console_scripts(wheel):
    _, zf = wheel
    (name,) = [n for n in zf.namelist() if n.endswith('.dist-info/entry_points.txt')]
    entry_points = configparser.ConfigParser()
    entry_points.read_string(zf.read(name).decode())
    assert dict(entry_points['console_scripts']) == CONSOLE_SCRIPTS


@pytest.fixture(scope='module')
def pip_venv(wheel, tmp_path_factory):
    """The wheel installed into a new empty venv (pip --python; `pip install --prefix` would
    first uninstall the project from the environment running the tests); return the venv.

    The venv has no dependencies of its own: a .pth file adds this environment's site
    directories after its own site-packages, so that its scripts run (`--help`) with the
    wheel's copy of the package."""
    path, _ = wheel
    tmp = tmp_path_factory.mktemp('pip')
    venv = tmp / 'venv'
    _run([sys.executable, '-m', 'venv', '--without-pip', str(venv)])
    _run([sys.executable, '-m', 'pip', '--python', str(venv / 'bin' / 'python'), 'install',
          '--no-deps', '--no-index', '-q', str(path)], cwd=tmp)
    own, = venv.glob('lib/python*/site-packages')
    borrowed = {sysconfig.get_path('purelib'), sysconfig.get_path('platlib'),
                *site.getsitepackages()}
    (own / 'zz_anyseg_test_dependencies.pth').write_text('import site; ' + '; '.join(
        f'site.addsitedir({d!r})' for d in sorted(borrowed) if os.path.isdir(d)) + '\n')
    return venv


@pytest.fixture(scope='module')
def colcon_prefix(tmp_path_factory):
    """What colcon's ament_python build runs (setup.py install) from a copy of the sources;
    return the install prefix."""
    tmp = tmp_path_factory.mktemp('colcon')
    source = _copy_sources(tmp)
    prefix, build = tmp / 'install', tmp / 'build'
    build.mkdir()
    _run([sys.executable, 'setup.py', '-q', 'egg_info', '--egg-base', str(build),
          'build', '--build-base', str(build), 'install', '--prefix', str(prefix),
          '--record', str(tmp / 'record.txt'), '--single-version-externally-managed'],
         cwd=source)
    return prefix


def test_pip_puts_console_scripts_on_path(pip_venv):
    """setup.cfg sends scripts to lib/anyseg_ros for colcon; a pip install still uses bin/,
    and only the prefixed names: `play`, `demo`... would shadow other programs on PATH."""
    venv = pip_venv
    for script in CONSOLE_SCRIPTS:
        assert (venv / 'bin' / script).is_file(), f'{script} not in {venv / "bin"}'
        assert not (venv / 'lib' / PACKAGE / script).exists()
    for name in ROS_EXECUTABLES:
        assert not (venv / 'bin' / name).exists(), f'{name} would be on the PATH'
        assert not (venv / 'lib' / PACKAGE / name).exists()
    assert (venv / 'share' / PACKAGE / 'package.xml').is_file()


def test_colcon_style_install_puts_executables_in_lib_package(colcon_prefix, tmp_path):
    """Executables go where `ros2 run anyseg_ros ...` looks (the tools also under their short
    names), share/ gets the launch and config files."""
    prefix = colcon_prefix
    for script in (*CONSOLE_SCRIPTS, *ROS_EXECUTABLES):
        assert (prefix / 'lib' / PACKAGE / script).is_file(), script
        assert os.access(prefix / 'lib' / PACKAGE / script, os.X_OK), script
        assert not (prefix / 'bin' / script).exists()
    share = prefix / 'share' / PACKAGE
    for installed in ('package.xml', 'launch/anyseg.launch.py', 'config/anyseg.yaml',
                      'config/fastdds_large_frames.xml'):
        assert (share / installed).is_file(), installed
    assert (prefix / 'share/ament_index/resource_index/packages' / PACKAGE).is_file()
    # the installed demo finds its config through the ament index (install/ of a workspace)
    demo, = prefix.glob('lib/python*/site-packages/anyseg_ros/tools/demo.py')
    env = dict(os.environ, AMENT_PREFIX_PATH=str(prefix),
               PYTHONPATH=str(demo.parents[2]))
    found = subprocess.run([sys.executable, '-c', 'import anyseg_ros.tools.demo as d; '
                            'print(d.__file__); print(d.shipped_config())'],
                           capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert found.returncode == 0, found.stderr[-2000:]
    assert found.stdout.split() == [str(demo), str(share / 'config' / 'anyseg.yaml')]


@pytest.mark.slow
def test_installed_tools_answer_help(pip_venv, colcon_prefix, tmp_path):
    """Every tool's installed executable runs: `--help` exits 0 with a usage line, without
    ROS (the tools import rclpy only to publish). In the colcon install, the short names that
    `ros2 run anyseg_ros <tool>` starts, with the workspace's site-packages on PYTHONPATH as a
    sourced workspace has it; in the pip venv, the prefixed console scripts."""
    site_packages, = colcon_prefix.glob('lib/python*/site-packages')
    colcon_env = dict(os.environ, AMENT_PREFIX_PATH=str(colcon_prefix),
                      PYTHONPATH=os.pathsep.join(filter(None, [
                          str(site_packages), os.environ.get('PYTHONPATH')])))
    pip_env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    runs = [(colcon_prefix / 'lib' / PACKAGE / tool, colcon_env) for tool in ROS_EXECUTABLES]
    runs += [(pip_venv / 'bin' / f'anyseg_{tool}', pip_env) for tool in TOOLS]
    started = [(path, subprocess.Popen([str(path), '--help'], cwd=tmp_path, env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True))
               for path, env in runs]
    for path, process in started:
        out, err = process.communicate(timeout=240)
        assert process.returncode == 0, f'{path} --help: exit {process.returncode}\n{err[-2000:]}'
        tool = path.name.removeprefix('anyseg_')
        assert out.startswith('usage: ') and f'anyseg_ros.tools.{tool} ' in out.splitlines()[0], (
            f'{path} --help:\n{out[:500]}')
    # the pip venv runs the wheel's copy of the package, not this environment's
    where = _run([str(pip_venv / 'bin' / 'python'), '-c',
                  'import anyseg_ros.tools.play as m; print(m.__file__)'], cwd=tmp_path,
                 env=pip_env).stdout.strip()
    assert Path(where).is_relative_to(pip_venv), where


def test_installed_console_scripts_are_beside_python():
    """In the environment running the tests (make setup: pip install -e .), if installed."""
    # Look in site-packages only: the source tree on sys.path may hold a build's egg-info.
    site_packages = [sysconfig.get_path('purelib'), sysconfig.get_path('platlib')]
    if not list(importlib.metadata.distributions(name=PACKAGE, path=site_packages)):
        pytest.skip(f'{PACKAGE} is not pip-installed in this environment')
    scripts = Path(sysconfig.get_path('scripts'))
    for script in CONSOLE_SCRIPTS:
        assert (scripts / script).is_file(), f'{script} not in {scripts}'


def test_package_xml_is_format_3_and_matches_setup_py(wheel):
    _, zf = wheel
    root = _package_xml()
    assert root.tag == 'package' and root.get('format') == '3'
    assert root.findtext('name') == PACKAGE
    assert root.findtext('license') == 'Apache-2.0'
    assert root.findtext('buildtool_depend') == 'ament_python'
    assert root.findtext('export/build_type') == 'ament_python'
    version = root.findtext('version')
    assert version == _wheel_version(zf), 'package.xml and setup.py versions differ'
    import anyseg_core
    assert anyseg_core.__version__ == version


def test_package_xml_declares_ros_dependencies():
    root = _package_xml()
    exec_depends = {e.text for e in root.findall('exec_depend')}
    assert ROS_EXEC_DEPENDS <= exec_depends, ROS_EXEC_DEPENDS - exec_depends
    # every ROS interface package the node and the bag tools import is declared
    imported = set()
    for source in (REPO_ROOT / 'anyseg_ros').glob('**/*.py'):
        imported |= set(re.findall(r'^\s*(?:from|import)\s+(\w+_(?:msgs|interfaces))\b',
                                   source.read_text(), flags=re.M))
    assert {'sensor_msgs', 'rcl_interfaces', 'rosgraph_msgs'} <= imported  # the scan works
    assert imported <= exec_depends, imported - exec_depends
    test_depends = {e.text for e in root.findall('test_depend')}
    assert {'python3-pytest', 'python3-hypothesis', 'python3-h5py'} <= test_depends


def test_launch_description_declares_arguments():
    if importlib.util.find_spec('launch_ros') is None:
        pytest.skip('launch_ros is not installed (no ROS 2 launch on this machine); '
                    'runs on a ROS machine')
    module = load_module('anyseg_launch', REPO_ROOT / 'launch' / 'anyseg.launch.py')
    description = module.generate_launch_description()
    names = {argument.name for argument in description.get_launch_arguments()}
    assert names == LAUNCH_ARGUMENTS


class _Recorded:
    """Stand-in for a launch / launch_ros class: keeps what it was built with."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class _Substitution(_Recorded):
    def perform(self, context):
        return context.perform(self)


def _launch_stubs():
    """Modules standing in for launch and launch_ros, enough to run the launch file's Python
    (launch_ros is only on a ROS machine; the ROS test above runs the real one)."""
    import types

    names = {
        'launch': ['LaunchDescription'],
        'launch.actions': ['DeclareLaunchArgument', 'GroupAction', 'OpaqueFunction',
                           'SetEnvironmentVariable', 'UnsetEnvironmentVariable'],
        'launch.substitutions': ['LaunchConfiguration', 'PathJoinSubstitution'],
        'launch_ros': [],
        'launch_ros.actions': ['Node'],
        'launch_ros.parameter_descriptions': ['ParameterValue'],
        'launch_ros.substitutions': ['FindPackageShare'],
    }
    modules = {}
    for module, classes in names.items():
        modules[module] = types.ModuleType(module)
        for name in classes:
            base = _Substitution if module.endswith('substitutions') else _Recorded
            setattr(modules[module], name, type(name, (base,), {}))
    return modules


class _LaunchContext:
    """What the launch file reads from launch's LaunchContext: argument values and the
    environment; FindPackageShare('anyseg_ros') resolves to ``share``."""

    def __init__(self, share, environment, **arguments):
        self.share, self.environment = share, environment
        self.launch_configurations = {'params_file': 'anyseg.yaml', 'checkpoint': '',
                                      'device': '', 'namespace': '', 'use_sim_time': '',
                                      'managed': 'false', 'fastdds_profile': 'auto',
                                      **arguments}

    def perform(self, substitution):
        kind = type(substitution).__name__
        if kind == 'LaunchConfiguration':
            return self.launch_configurations[substitution.args[0]]
        assert kind == 'FindPackageShare' and substitution.args == ('anyseg_ros',), kind
        return str(self.share)


@pytest.fixture
def launch_file(monkeypatch, tmp_path):
    """launch/anyseg.launch.py imported against the stand-ins; yields (module, share) with
    share a package share folder holding the shipped Fast DDS profile."""
    for name, module in _launch_stubs().items():
        monkeypatch.setitem(sys.modules, name, module)
    module = load_module('anyseg_launch_stubbed', REPO_ROOT / 'launch' / 'anyseg.launch.py')
    share = tmp_path / 'share' / PACKAGE
    (share / 'config').mkdir(parents=True)
    shutil.copy2(REPO_ROOT / 'config' / 'fastdds_large_frames.xml', share / 'config')
    return module, share


def _node_actions(module, context):
    """(environment changes as (action, name[, value]), the Node) the launch file returns."""
    for argument, topic, _ in module.INPUT_TOPICS:  # the topic arguments' defaults
        context.launch_configurations.setdefault(argument, topic)
    (entity,) = module._anyseg_node(context)
    if type(entity).__name__ == 'Node':
        return [], entity
    assert type(entity).__name__ == 'GroupAction'
    # scoped: the variables reach the node only, not what an including launch file starts
    assert entity.kwargs == {'scoped': True, 'forwarding': True}
    *changes, node = entity.args[0]
    assert type(node).__name__ == 'Node'
    return [(type(a).__name__, *a.args) for a in changes], node


@pytest.mark.parametrize('managed, arguments', [('false', []), ('true', ['--managed']),
                                                ('True', ['--managed'])])
def test_launch_managed_argument_starts_the_lifecycle_node(launch_file, managed, arguments):
    module, share = launch_file
    _, node = _node_actions(module, _LaunchContext(share, {}, managed=managed))
    assert node.kwargs['arguments'] == arguments
    with pytest.raises(ValueError, match='managed'):
        _node_actions(module, _LaunchContext(share, {}, managed='maybe'))


def test_launch_file_declares_the_fastdds_profile_argument(launch_file):
    module, _ = launch_file
    description = module.generate_launch_description()
    declared = {a.args[0]: a.kwargs for a in description.args[0]
                if type(a).__name__ == 'DeclareLaunchArgument'}
    assert set(declared) == LAUNCH_ARGUMENTS
    assert declared['fastdds_profile']['default_value'] == 'auto'
    assert 'fastdds_large_frames.xml' in declared['fastdds_profile']['description']


@pytest.mark.parametrize('distro, names', [
    ('jazzy', ['FASTRTPS_DEFAULT_PROFILES_FILE']),  # Fast DDS 2.x reads only this name
    ('humble', ['FASTRTPS_DEFAULT_PROFILES_FILE']),
    ('kilted', ['FASTDDS_DEFAULT_PROFILES_FILE']),  # Fast DDS 3
    ('rolling', ['FASTDDS_DEFAULT_PROFILES_FILE']),
    (None, ['FASTDDS_DEFAULT_PROFILES_FILE', 'FASTRTPS_DEFAULT_PROFILES_FILE']),
])
def test_launch_gives_the_node_the_shipped_profile(launch_file, distro, names):
    module, share = launch_file
    environment = {'ROS_DISTRO': distro} if distro else {}
    changes, node = _node_actions(module, _LaunchContext(share, environment))
    profile = str(share / 'config' / 'fastdds_large_frames.xml')
    assert changes == [('SetEnvironmentVariable', name, profile) for name in names]
    assert node.kwargs['executable'] == 'anyseg_node'


@pytest.mark.parametrize('distro, variable, kept', [
    ('kilted', 'FASTDDS_DEFAULT_PROFILES_FILE', True),
    ('kilted', 'FASTRTPS_DEFAULT_PROFILES_FILE', True),  # Kilted's RMW reads it too
    ('jazzy', 'FASTRTPS_DEFAULT_PROFILES_FILE', True),
    ('jazzy', 'FASTDDS_DEFAULT_PROFILES_FILE', False),  # Fast DDS 2 ignores that name
])
def test_launch_keeps_a_profile_the_user_set(launch_file, distro, variable, kept):
    module, share = launch_file
    environment = {'ROS_DISTRO': distro, variable: '/etc/my_fastdds.xml'}
    changes, _ = _node_actions(module, _LaunchContext(share, environment))
    assert (changes == []) == kept, changes


def test_launch_fastdds_profile_argument_overrides_or_disables(launch_file, tmp_path):
    module, share = launch_file
    mine = tmp_path / 'mine.xml'
    mine.write_text('<dds/>')
    user = {'ROS_DISTRO': 'kilted', 'FASTRTPS_DEFAULT_PROFILES_FILE': '/etc/old.xml'}
    for off in ('', ' ', 'none'):
        assert _node_actions(module, _LaunchContext(share, {'ROS_DISTRO': 'kilted'},
                                                    fastdds_profile=off))[0] == []
    # a path wins over the environment; the other name goes, or Kilted's RMW loads it too
    changes, _ = _node_actions(module, _LaunchContext(share, user, fastdds_profile=str(mine)))
    assert changes == [('SetEnvironmentVariable', 'FASTDDS_DEFAULT_PROFILES_FILE', str(mine)),
                       ('UnsetEnvironmentVariable', 'FASTRTPS_DEFAULT_PROFILES_FILE')]
    with pytest.raises(ValueError, match='fastdds_profile.*no such file'):
        _node_actions(module, _LaunchContext(share, {}, fastdds_profile=str(tmp_path / 'no.xml')))


PARAMS_FILE = REPO_ROOT / 'config' / 'anyseg.yaml'
# Parameters whose type the node relies on; a value written as 1 instead of 1.0 would change
# a double into an integer and the node would reject it.
EXPECTED_PARAMETER_TYPES = {
    'checkpoint': str, 'device': str, 'precision': str, 'backend': str, 'threads': int,
    'onnxruntime.spinning': bool,
    'modalities': list,
    'network.height': int, 'network.width': int, 'output.resolution': str,
    'sync.slop': float, 'sync.max_wait': float, 'sync.stale_after': float,
    'sync.max_future': float, 'tf.listener': str, 'tf.max_age': float, 'camera.transport': str,
    'sync.offset.camera': float, 'sync.offset.lidar': float, 'sync.offset.events': float,
    'sync.offset.depth': float,
    'qos.reliability': str, 'qos.depth': int, 'events.type': str, 'events.decoder': str,
    'events.window': float, 'events.height': int, 'events.width': int,
    'lidar.min_range': float, 'camera.height': int, 'camera.width': int,
    'camera.distortion_model': str, 'camera.rectified': bool,
    'lidar.intensity_field': str, 'lidar.intensity_scale': float,
    'overlay.alpha': float, 'confidence.enabled': bool, 'diagnostics.period': float,
}
# Declared by the node without a default; the file documents them in comments only.
UNSET_ARRAY_PARAMETERS = {'events.K', 'events.T_cam_events', 'lidar.T_cam_lidar', 'camera.K',
                          'camera.D', 'palette'}


def _flatten(tree, prefix=''):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flatten(value, f'{prefix}{key}.')
        else:
            yield f'{prefix}{key}', value


def test_params_file_parses_as_yaml():
    params = yaml.safe_load(PARAMS_FILE.read_text())
    assert list(params) == ['/**']
    values = dict(_flatten(params['/**']['ros__parameters']))
    assert set(values) == set(EXPECTED_PARAMETER_TYPES)
    for name, value in values.items():
        assert type(value) is EXPECTED_PARAMETER_TYPES[name], (name, value)
        # rcl cannot type an empty list: it would become a parameter with no value.
        assert value != [], f'{name}: leave the key out instead of writing []'


def test_params_file_loads_with_rclpy():
    """rclpy's YAML reader agrees with the file."""
    parameter = pytest.importorskip('rclpy.parameter', reason='rclpy is not installed')
    messages = parameter.parameter_dict_from_yaml_file(str(PARAMS_FILE), use_wildcard=True)
    values = {name: parameter.parameter_value_to_python(msg.value)
              for name, msg in messages.items()}
    assert set(values) == set(EXPECTED_PARAMETER_TYPES)
    assert values['network.height'] == 0  # the checkpoint's training size
    assert values['modalities'] == ['camera', 'events', 'lidar']


def test_params_file_documents_every_node_parameter():
    """The shipped file and the node's declarations agree: every value in the file is a
    declared parameter with the same default, and the unset arrays are documented in
    comments."""
    pytest.importorskip('rclpy', reason='rclpy is not installed (the node needs it)')
    from anyseg_ros.node import PARAMS

    declared = {p.name: p.default for p in PARAMS}
    values = dict(_flatten(yaml.safe_load(PARAMS_FILE.read_text())['/**']['ros__parameters']))
    assert set(values) | UNSET_ARRAY_PARAMETERS == set(declared)
    for name, value in values.items():
        assert value == declared[name], (name, value, declared[name])
    text = PARAMS_FILE.read_text()
    for name in UNSET_ARRAY_PARAMETERS:
        assert declared[name] is None
        assert f"# {name.split('.')[-1]}: [" in text, f'{name} is not documented'


@pytest.mark.ros
def test_params_file_loads_as_node_overrides(ros_env):
    """rcl's own C parser (what `--params-file` and launch use) types every parameter."""
    rclpy = pytest.importorskip('rclpy', reason='rclpy is not installed')
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rclpy.signals import SignalHandlerOptions

    context = rclpy.Context()
    rclpy.init(args=['--ros-args', '--params-file', str(PARAMS_FILE)], context=context,
               domain_id=int(ros_env['ROS_DOMAIN_ID']),
               signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = Node('anyseg', namespace='/robot1', context=context,
                    automatically_declare_parameters_from_overrides=True)
        try:
            for name, expected in EXPECTED_PARAMETER_TYPES.items():
                value = node.get_parameter(name)
                assert value.type_ != Parameter.Type.NOT_SET, name
                assert type(value.value) is expected, (name, value.value)
            assert node.get_parameter('checkpoint').value == ''
            assert node.get_parameter('sync.slop').value == pytest.approx(0.05)
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def test_a_broken_ros_fails_the_run_instead_of_skipping(tmp_path):
    """Where ROS is meant to be (here: ANYSEG_REQUIRE_ROS=1), an rclpy that does not import
    (a missing RMW, a wheel change) stops the run with one line naming the error, instead of
    turning every ROS test into a skip that CI would pass."""
    broken = tmp_path / 'broken' / 'rclpy'
    broken.mkdir(parents=True)
    (broken / '__init__.py').write_text('raise ImportError("librmw_fastrtps_cpp.so: cannot '
                                        'open shared object file")\n')
    env = dict(os.environ, ANYSEG_REQUIRE_ROS='1',
               PYTHONPATH=os.pathsep.join([str(tmp_path / 'broken'),
                                           os.environ.get('PYTHONPATH', '')]))
    done = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
                           'test/ros/test_diagnostics.py'], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode == 1, out[-2000:]
    assert 'ROS 2 is meant to be here (' in out and ') but rclpy does not import' in out
    assert 'librmw_fastrtps_cpp.so' in out and ' passed' not in out and ' skipped' not in out


@pytest.mark.parametrize('environment, expected', [
    ({'ROS_DISTRO': 'humble'}, {'FASTRTPS_DEFAULT_PROFILES_FILE': 'P'}),
    ({'ROS_DISTRO': 'jazzy', 'FASTDDS_DEFAULT_PROFILES_FILE': '/u.xml'},  # unread by Fast DDS 2
     {'FASTRTPS_DEFAULT_PROFILES_FILE': 'P'}),
    ({'ROS_DISTRO': 'kilted'}, {'FASTDDS_DEFAULT_PROFILES_FILE': 'P'}),
    ({}, {'FASTDDS_DEFAULT_PROFILES_FILE': 'P', 'FASTRTPS_DEFAULT_PROFILES_FILE': 'P'}),
    ({'ROS_DISTRO': 'kilted', 'FASTRTPS_DEFAULT_PROFILES_FILE': '/u.xml'},  # the user's: kept
     {'FASTRTPS_DEFAULT_PROFILES_FILE': '/u.xml'}),
])
def test_demo_and_benchmark_name_the_profile_as_the_distribution_reads_it(environment, expected,
                                                                        monkeypatch):
    """The demo and bench_node give their processes the large-frames profile under the name
    the distribution's Fast DDS reads (Humble and Jazzy: FASTRTPS_...; Kilted on: FASTDDS_...)."""
    from anyseg_ros.tools import fastdds
    monkeypatch.setattr(fastdds, 'rclpy_from_pip_wheels', lambda: False)  # a sourced ROS
    env = fastdds.with_profile(dict(environment), 'P')
    assert {k: v for k, v in env.items() if k.endswith('PROFILES_FILE')} == expected


def test_on_the_pip_wheels_the_profile_gets_fast_dds_3_s_name_only():
    """PyPI's ROS 2 wheels (Kilted) set no ROS_DISTRO; their Fast DDS 3 reads the new name
    and warns on the old one."""
    from anyseg_ros.tools import fastdds
    if not fastdds.rclpy_from_pip_wheels():
        pytest.skip('rclpy here is not the ros-rclpy wheel (a sourced ROS 2)')
    env = fastdds.with_profile({}, 'P')
    assert {k: v for k, v in env.items() if k.endswith('PROFILES_FILE')} == \
        {'FASTDDS_DEFAULT_PROFILES_FILE': 'P'}
