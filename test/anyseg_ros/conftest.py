"""Fixtures shared by the ROS-free tests of anyseg_ros."""
import pytest
import torch

from anyseg_core.checkpoint import save_model
from anyseg_core.model import AnymodalSegmentor

NET_HW = (64, 96)  # the network size of the random checkpoint below


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """A small random-weight checkpoint (camera, events, LiDAR; 19 classes; seeded)."""
    torch.manual_seed(0)
    model = AnymodalSegmentor(["camera", "events", "lidar"], 19, embed_dim=32).eval()
    path = tmp_path_factory.mktemp("random_ckpt") / "random.safetensors"
    return save_model(path, model, {"input_size": list(NET_HW), "stage": "teacher", "step": 0,
                                    "train_config": {}})
