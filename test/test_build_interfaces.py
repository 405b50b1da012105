"""scripts/build_interfaces.py (tf2_msgs and event_camera_msgs for a pip-only venv) and its sources, without a build.

The build itself runs in `make setup`; test/ros/test_tf2_msgs.py checks what it produced
across processes. Here: the message definitions in interfaces/ hash like ROS 2's own (with
rosbags' implementation of the type hash, independent of rosidl), the container path
rewrite, the refusals, and that a second run does nothing.
"""
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from helpers import load_module

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / 'scripts' / 'build_interfaces.py'
# ROS 2's type hashes (`ros2 topic info -v /tf` on a ROS install; Humble to Kilted alike).
ROS2_HASHES = {
    'tf2_msgs/msg/TFMessage':
        'RIHS01_e369d0f05a23ae52508854b66f6aa0437f3449d652e8cbf22d5abe85d020f087',
    'tf2_msgs/msg/TF2Error':
        'RIHS01_db2485e7d6a0ec75bf087e058ee45df682acc3a621ca7780503d10aac141809a',
    # The released event_camera_msgs, as the real driver bags in shared/data/real record it.
    'event_camera_msgs/msg/EventPacket':
        'RIHS01_d6fa176260b1f37e5a40845305315e150a0f18191241eb64f407442aa29844aa',
}
REAL_EVENT_BAGS = REPO.parent / 'shared' / 'data' / 'real' / 'event_camera_bags'


@pytest.fixture(scope='module')
def script():
    return load_module('build_interfaces', SCRIPT)


def test_expected_hashes_are_ros_2s(script):
    assert script.EXPECTED_HASHES == ROS2_HASHES


@pytest.mark.parametrize('package', ['tf2_msgs', 'event_camera_msgs'])
def test_message_definitions_hash_like_ros_2s(package):
    """Parse interfaces/<package>/msg/*.msg into a typestore that has the Jazzy definitions of
    everything but that package, and hash them as rosidl does (REP 2011, RIHS01)."""
    typesys = pytest.importorskip('rosbags.typesys')
    jazzy = typesys.get_typestore(typesys.Stores.ROS2_JAZZY)
    store = typesys.get_typestore(typesys.Stores.EMPTY)
    store.register({name: definition for name, definition in jazzy.fielddefs.items()
                    if not name.startswith(f'{package}/')})
    ours = {}
    for path in sorted((REPO / 'interfaces' / package / 'msg').glob('*.msg')):
        ours.update(typesys.get_types_from_msg(path.read_text(), f'{package}/msg/{path.stem}'))
    expected = {name: h for name, h in ROS2_HASHES.items() if name.startswith(f'{package}/')}
    assert set(ours) == set(expected)
    store.register(ours)
    assert {name: store.hash_rihs01(name) for name in ours} == expected
    if package == 'tf2_msgs':
        assert store.fielddefs['tf2_msgs/msg/TF2Error'] == jazzy.fielddefs['tf2_msgs/msg/TF2Error']


def test_event_packet_hash_is_the_one_real_driver_bags_record():
    """The expected hash is not only our copy: a bag recorded from metavision_driver states it."""
    if not REAL_EVENT_BAGS.is_dir():
        pytest.skip(f'{REAL_EVENT_BAGS} is not on this machine (the shared real data)')
    metadata = (REAL_EVENT_BAGS / 'test_events_1' / 'metadata.yaml').read_text()
    assert ROS2_HASHES['event_camera_msgs/msg/EventPacket'] in metadata


def test_container_include_dirs_are_rewritten(script, tmp_path):
    numpy = pytest.importorskip('numpy')
    export = tmp_path / 'share' / 'geometry_msgs' / 'cmake' / 'export_pyExport.cmake'
    export.parent.mkdir(parents=True)
    export.write_text(
        'set_target_properties(x PROPERTIES INTERFACE_INCLUDE_DIRECTORIES '
        '"/opt/python/cp311-cp311/include/python3.11;'
        '/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include")\n')
    untouched = tmp_path / 'share' / 'std_msgs' / 'cmake' / 'other.cmake'
    untouched.parent.mkdir(parents=True)
    untouched.write_text('set(x "${_IMPORT_PREFIX}/include")\n')
    assert script.fix_container_include_dirs(tmp_path) == 1
    assert export.read_text() == (
        'set_target_properties(x PROPERTIES INTERFACE_INCLUDE_DIRECTORIES '
        f'"{sysconfig.get_paths()["include"]};{numpy.get_include()}")\n')
    assert script.fix_container_include_dirs(tmp_path) == 0       # idempotent

    export.write_text('set(y "/opt/python/cp311-cp311/lib/libpython3.11.so")\n')
    with pytest.raises(script.BuildError, match='/opt/python'):
        script.fix_container_include_dirs(tmp_path)


def test_refuses_to_install_outside_a_venv(script, monkeypatch):
    monkeypatch.setattr(sys, 'prefix', sys.base_prefix)
    with pytest.raises(script.BuildError, match='not a virtual environment'):
        script.check_environment(Path(sys.prefix))


def test_source_checksum_follows_the_sources(script, tmp_path):
    (tmp_path / 'msg').mkdir()
    (tmp_path / 'msg' / 'A.msg').write_text('int32 a\n')
    first = script.sources_sum(tmp_path)
    assert script.sources_sum(tmp_path) == first
    (tmp_path / 'msg' / 'A.msg').write_text('int32 b\n')
    assert script.sources_sum(tmp_path) != first


def test_second_run_does_nothing():
    """Where tf2_msgs imports already (built by `make setup`, or a ROS install), the script
    leaves it alone, quickly, without pip or cmake."""
    done = subprocess.run([sys.executable, '-c', 'import tf2_msgs.msg'], capture_output=True)
    if done.returncode != 0:
        pytest.skip('tf2_msgs does not import here (no ROS 2, or `make setup` not run)')
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert 'sources are unchanged' in done.stdout or 'not built here' in done.stdout, done.stdout
    assert 'pip install' not in done.stdout and 'building' not in done.stdout
