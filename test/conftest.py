"""Settings and fixtures shared by every test.

ROS 2 discovery stays on this machine: ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST is set for
the whole session, before any test imports rclpy, and every subprocess started with the
`ros_env` fixture also gets its own ROS_DOMAIN_ID, so concurrent tests do not see each
other's topics.
"""
import importlib
import itertools
import os
import sys
from pathlib import Path

import pytest

os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
# The Fast DDS profile the project ships for large sensor frames (config/): with Fast DDS's
# default 512 KiB shared-memory segment, best-effort messages published together are lost
# under load (docs/benchmarks.md, "ROS node"). Set before any test imports rclpy, and passed
# on to every subprocess with the environment.
# Fast DDS 3 (Kilted on, and the PyPI wheels) reads FASTDDS_DEFAULT_PROFILES_FILE; Fast DDS
# 2.x (Humble, Jazzy) reads only FASTRTPS_DEFAULT_PROFILES_FILE.
_FASTDDS_PROFILE = str(Path(__file__).resolve().parents[1] / 'config'
                       / 'fastdds_large_frames.xml')
os.environ.setdefault('FASTDDS_DEFAULT_PROFILES_FILE', _FASTDDS_PROFILE)
if os.environ.get('ROS_DISTRO') in ('foxy', 'galactic', 'humble', 'iron', 'jazzy'):
    os.environ.setdefault('FASTRTPS_DEFAULT_PROFILES_FILE', _FASTDDS_PROFILE)

REPO_ROOT = Path(__file__).resolve().parents[1]
# helpers.py beside this file imports by name from every test folder: --import-mode=importlib
# puts no test folder on sys.path by itself.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))
# Exports made on demand by the exported backends (anyseg_core.deploy.cache_root) go to a
# folder of this run, not the user's ~/.cache; subprocesses inherit it, so each checkpoint
# is exported once per run.
if 'ANYSEG_CACHE' not in os.environ:
    import tempfile
    os.environ['ANYSEG_CACHE'] = tempfile.mkdtemp(prefix='anyseg_test_cache_')
# CI checks the project out with shared/ beside it; tests read the real data from there and
# never copy it into the project.
REAL_DATA_DIR = REPO_ROOT.parent / 'shared' / 'data' / 'real'

_domain_ids = itertools.count()

# What the ROS tests import. Where ROS is meant to be there, one of them failing to import
# is a failure of the run, not a row of skips that CI would pass.
# tf2_msgs has no wheel: `make setup` generates it in a pip-only venv (scripts/build_interfaces.py).
ROS_MODULES = ('rclpy', 'rclpy.serialization', 'sensor_msgs.msg', 'std_msgs.msg',
               'diagnostic_msgs.msg', 'rcl_interfaces.msg', 'geometry_msgs.msg', 'tf2_msgs.msg')


def ros_expected() -> str | None:
    """Why this environment is meant to have ROS 2 (None: it is not): `make setup` made the
    venv and recorded how it gets rclpy (`.anyseg-ros-mode`: the PyPI wheels or a sourced
    ROS), a ROS 2 is sourced (ROS_DISTRO), or ANYSEG_REQUIRE_ROS=1."""
    mode = Path(sys.prefix) / '.anyseg-ros-mode'
    if mode.is_file():
        return f'{mode} says rclpy comes from {mode.read_text().strip()!r}'
    if os.environ.get('ROS_DISTRO'):
        return f'ROS_DISTRO={os.environ["ROS_DISTRO"]} is sourced'
    if os.environ.get('ANYSEG_REQUIRE_ROS') == '1':
        return 'ANYSEG_REQUIRE_ROS=1'
    return None


def pytest_configure(config):
    why = ros_expected()
    if why is None:
        return  # no ROS meant here: the ROS tests skip, saying so
    for name in ROS_MODULES:
        try:
            importlib.import_module(name)
        except Exception as err:  # noqa: BLE001 - a missing RMW raises more than ImportError
            pytest.exit(f'ROS 2 is meant to be here ({why}) but {name} does not import: '
                        f'{type(err).__name__}: {err}. Without it the ROS tests would all '
                        'skip; fix the install (make distclean && make setup) instead.',
                        returncode=1)


def unique_ros_domain_id():
    """A ROS_DOMAIN_ID in 1..100, different for each call in this process.

    Domain ids 0..101 are valid with the default DDS port mapping; 0 is left alone as the
    id every ROS tool uses when none is set. Mixing in the pid keeps two pytest sessions
    running at once on different ids most of the time.
    """
    return 1 + (os.getpid() * 7 + next(_domain_ids)) % 100


def make_ros_env():
    """Environment for a subprocess that starts rclpy: loopback discovery, own domain id."""
    env = dict(os.environ)
    env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    env['ROS_DOMAIN_ID'] = str(unique_ros_domain_id())
    # Static peers would send discovery traffic to other hosts; tests never do.
    env.pop('ROS_STATIC_PEERS', None)
    env['PYTHONUNBUFFERED'] = '1'
    return env


@pytest.fixture
def ros_env():
    """Environment for a subprocess that starts rclpy: loopback discovery, own domain id.

    The test process itself should pass the same id to rclpy.init(domain_id=...), read from
    ros_env['ROS_DOMAIN_ID'].
    """
    return make_ros_env()


@pytest.fixture(scope='module')
def module_ros_env():
    """:func:`ros_env` for module-scoped fixtures (one scenario shared by several tests)."""
    return make_ros_env()


@pytest.fixture(scope='session')
def real_data_dir():
    """Path to the shared real sensor data (KITTI, Cityscapes, NYU samples)."""
    if not REAL_DATA_DIR.is_dir():
        pytest.skip(f'real data not found at {REAL_DATA_DIR}: it lives in shared/data/real '
                    'beside the checkout (CI has it there)')
    return REAL_DATA_DIR
