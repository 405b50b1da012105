"""The node's pipeline prepares the LiDAR as the checkpoint was trained: a checkpoint whose
metadata says ``preprocessing.lidar_intensity=p95`` labels a sweep published on 0..1 as the
same sweep on 0..255 (no parameter needed); one trained on raw intensities does not."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from anyseg_core.checkpoint import save_model
from anyseg_core.model import AnymodalSegmentor
from anyseg_core.runtime import Runtime
from anyseg_ros.payloads import Geometry
from anyseg_ros.pipeline import SegmentationPipeline
from anyseg_ros.sync import Frame, Stamped

NET_HW = (64, 96)
H, W = 120, 160
K = np.array([[100.0, 0.0, 79.5], [0.0, 100.0, 59.5], [0.0, 0.0, 1.0]])
STAMP = 1_700_000_000.5


def _checkpoint(path, lidar_intensity: str | None):
    """A random-weight LiDAR-only model whose BatchNorm statistics are calibrated on inputs
    with strong intensity contrast, so that its labels follow the intensity channel."""
    torch.manual_seed(0)
    model = AnymodalSegmentor(["lidar"], 19, embed_dim=32, pretrained=False)
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None
    with torch.no_grad():
        for _ in range(3):
            model({"lidar": torch.randn(2, 3, *NET_HW) * 3})
    model.eval()
    meta = {"input_size": list(NET_HW), "stage": "teacher", "step": 0, "train_config": {}}
    if lidar_intensity is not None:
        meta["preprocessing"] = {"lidar_intensity": lidar_intensity}
    return save_model(path, model, meta)


def _sweep(scale: float) -> np.ndarray:
    rng = np.random.default_rng(0)
    n = 6000
    z = rng.uniform(1.5, 40.0, n)
    pts = np.stack([rng.uniform(-0.8, 0.8, n) * z, rng.uniform(-0.6, 0.6, n) * z, z,
                    rng.uniform(0, 1, n) ** 2], axis=1).astype(np.float32)
    pts[:, 3] *= scale
    return pts


def _labels(runtime: Runtime, points: np.ndarray) -> np.ndarray:
    pipe = SegmentationPipeline(runtime, ["lidar"])
    frame = Frame(stamp=STAMP, pivot="lidar", items={"lidar": [Stamped(STAMP, STAMP, points)]},
                  live={"lidar": True}, dropped=0, waited=0.0)
    geometry = Geometry(K=K, image_hw=(H, W), T_cam_lidar=np.eye(4), frame_id="cam")
    return pipe.run(frame, geometry).labels


@pytest.mark.parametrize("mode", ["p95", None])
def test_the_pipeline_applies_the_checkpoints_intensity_normalisation(tmp_path, mode):
    rt = Runtime(_checkpoint(tmp_path / "m.safetensors", mode), device="cpu",
                 input_size=NET_HW, warmup=False)
    assert rt.lidar_intensity == (mode or "raw")
    unit, byte = _labels(rt, _sweep(1.0)), _labels(rt, _sweep(255.0))
    assert len(np.unique(byte)) >= 2
    if mode == "p95":
        np.testing.assert_array_equal(unit, byte)
    else:  # raw intensities: the scale the driver publishes changes the labels
        assert (unit != byte).mean() > 0.01
