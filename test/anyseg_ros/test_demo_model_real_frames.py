"""The shipped demo checkpoint on the shared real frames (issue 28): what docs/results.md and
docs/ros.md promise of it, at the node's default network size (the checkpoint's own).

It is the cross-sensor row ``xs_norm`` (the MUSES-like rig, the LiDAR's intensity normalised
per sweep): its labels do not depend on the LiDAR's intensity scale, and adding KITTI's LiDAR
to the camera no longer paints the street with cars (the model before it: 18 % of the pixels
outside KITTI's car boxes labelled car, the road down to 5 % of the frame). The figures come
from the script that writes the real-frame table."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import load_module

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "cross_sensor_experiment.py"


@pytest.fixture(scope="module")
def xs(real_data_dir):
    sys.path.insert(0, str(SCRIPT.parent))
    module = load_module("cross_sensor_experiment", SCRIPT)
    if not (module.REAL / "kitti_000008").is_dir():
        pytest.skip(f"KITTI 000008 is missing from {module.REAL}")
    return module


@pytest.fixture(scope="module")
def runtime():
    from anyseg_core.runtime import Runtime
    from anyseg_ros.params import DEMO_CHECKPOINT

    return Runtime(DEMO_CHECKPOINT, device="cpu", warmup=False)


def _labels(runtime, frame, modalities):
    inputs = runtime.prepare(frame)
    return runtime.predict({m: inputs[m] for m in modalities},
                           output_size=frame.image_hw).labels.numpy()


def test_the_lidar_intensity_scale_does_not_change_the_labels(xs, runtime):
    assert runtime.lidar_intensity == "p95"
    (as_published, _), (scaled, _) = xs.kitti_frame(1.0), xs.kitti_frame(255.0)
    for modalities in (["lidar"], ["camera", "lidar"]):
        a, b = (_labels(runtime, f, modalities) for f in (as_published, scaled))
        assert np.mean(a == b) > 0.999, modalities


def test_kitti_camera_and_lidar_keep_the_street(xs, runtime):
    frame, boxes = xs.kitti_frame(255.0)
    labels = _labels(runtime, frame, ["camera", "lidar"])
    car = labels == xs.CAR
    assert car[~boxes].mean() <= 0.05  # the model before: 0.18
    assert car[boxes].mean() >= 0.25   # it still finds the cars (0.34; the target 0.8 is not met)
    assert (labels == xs.ROAD).mean() >= 0.15  # the road stays (0.24; the model before: 0.05)


def test_cityscapes_camera_alone(xs, runtime):
    image, label = xs.cityscapes_frame()
    figures = xs._cityscapes_figures(runtime, image, label)
    assert figures["pixel_acc"] >= 50.0  # 53.6 (the target 70 is not met)
