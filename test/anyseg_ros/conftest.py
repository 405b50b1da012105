"""Fixtures shared by the ROS-free tests of anyseg_ros."""
import pytest

from helpers import random_checkpoint

NET_HW = (64, 96)  # the network size of the random checkpoint below


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """A small random-weight checkpoint (camera, events, LiDAR; 19 classes; seeded)."""
    return random_checkpoint(tmp_path_factory.mktemp("random_ckpt") / "random.safetensors",
                             NET_HW)
