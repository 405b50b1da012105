"""Fixtures of the end-to-end ROS tests."""
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Helpers beside the tests (live_rig.py) import by name: --import-mode=importlib puts no test
# folder on sys.path by itself.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope='session')
def tiny_checkpoint(tmp_path_factory):
    """A real (tiny) checkpoint from the project's own training command, shared by the
    node, parameter and bag tests (config/train_tiny.yaml: 64x96, camera + events + LiDAR)."""
    out = tmp_path_factory.mktemp('tiny_ckpt')
    done = subprocess.run([sys.executable, '-m', 'anyseg_core.train', '--config',
                           'config/train_tiny.yaml', '--set', f'out_dir={out}',
                           '--set', 'optim.steps=4', '--set', 'train.eval_samples=0'],
                          cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return out / 'final.safetensors'
