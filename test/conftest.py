"""Settings and fixtures shared by every test.

ROS 2 discovery stays on this machine: ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST is set for
the whole session, before any test imports rclpy, and every subprocess started with the
`ros_env` fixture also gets its own ROS_DOMAIN_ID, so concurrent tests do not see each
other's topics.
"""
import itertools
import os
from pathlib import Path

import pytest

os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
# The Fast DDS profile the project ships for large sensor frames (config/): with Fast DDS's
# default 512 KiB shared-memory segment, best-effort messages published together are lost
# under load (docs/benchmarks.md, "ROS node"). Set before any test imports rclpy, and passed
# on to every subprocess with the environment.
os.environ.setdefault('FASTDDS_DEFAULT_PROFILES_FILE',
                      str(Path(__file__).resolve().parents[1] / 'config'
                          / 'fastdds_large_frames.xml'))

REPO_ROOT = Path(__file__).resolve().parents[1]
# CI checks the project out with shared/ beside it; tests read the real data from there and
# never copy it into the project.
REAL_DATA_DIR = REPO_ROOT.parent / 'shared' / 'data' / 'real'

_domain_ids = itertools.count()


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
