"""Every executable answers --help with its usage and exits 0, without starting anything
(the node included: `anyseg_node --help` must not load a model or join a ROS graph)."""
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The console scripts the installed package declares (setup.py's CONSOLE_SCRIPTS).
MODULES = {ep.name: ep.value.split(':')[0]
           for ep in importlib.metadata.distribution('anyseg_ros').entry_points
           if ep.group == 'console_scripts'}


def test_the_package_declares_its_executables():
    assert {'anyseg_node', 'anyseg_play', 'anyseg_process_bag'} <= set(MODULES), MODULES


@pytest.mark.parametrize('script', sorted(MODULES))
def test_help_prints_usage_and_exits(script):
    done = subprocess.run([sys.executable, '-m', MODULES[script], '--help'], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.lstrip().startswith('usage:'), done.stdout[:500]
    assert 'ready:' not in done.stdout + done.stderr  # nothing was started


def test_node_help_lists_every_parameter():
    from anyseg_ros.node import usage
    from anyseg_ros.params import PARAMS

    text = usage()
    assert all(f'  {p.name}' in text for p in PARAMS)
