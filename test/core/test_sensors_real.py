"""Real sensor data: KITTI LiDAR projected into its camera, NYU depth. Data: ../shared/data/real."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from anyseg_core.sensors import depth_to_tensor, project_lidar, resize_modality

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real"


@pytest.fixture(scope="module")
def real_dir() -> Path:
    if not REAL.is_dir():
        pytest.skip(f"real-data folder is missing: looked for {REAL} (shared/data/real beside "
                    "the checkout)")
    return REAL


@pytest.fixture(scope="module")
def kitti(real_dir):
    folder = real_dir / "kitti_000008"
    calib = json.loads((folder / "calib.json").read_text())
    points = np.fromfile(folder / calib["lidar"], dtype="<f4").reshape(-1, 4)
    image = cv2.imread(str(folder / calib["image"]), cv2.IMREAD_COLOR)
    size = image.shape[:2]
    img = project_lidar(points, np.array(calib["K"]), np.array(calib["T_cam_lidar"]), size)
    return calib, points, img


def test_kitti_points_all_land_in_the_image(kitti):
    calib, points, img = kitti
    assert img.shape == (3, 375, 1242)  # the image size read from the PNG
    # The file holds only points in the camera's field of view, so nearly all must project.
    assert (img[0] > 0).sum() > 0.95 * len(points)


def test_kitti_range_inside_each_car_matches_its_depth(kitti):
    calib, _, img = kitti
    for car in calib["cars"]:
        x0, y0, x1, y1 = car["bbox_xyxy"]
        box = img[0, int(np.ceil(y0)):int(np.floor(y1)) + 1, int(np.ceil(x0)):int(np.floor(x1)) + 1]
        ranges = box[box > 0]
        # the 2D box also holds ground and background, but the car's own returns are there
        assert ranges.numel() >= 0.9 * car["num_lidar_pts"], car
        # 25th percentile: the car's near surface, not what is seen behind it. Range exceeds
        # depth by 1 / cos(angle off the optical axis): about +20 % for the car at the left edge.
        q25 = torch.quantile(ranges, 0.25).item()
        assert abs(q25 - car["depth_m"]) <= 0.25 * car["depth_m"], (car, q25)


def test_kitti_channels(kitti):
    _, points, img = kitti
    hit = img[0] > 0
    assert 0 <= img[1][hit].min() and img[1][hit].max() <= points[:, 3].max()
    assert points[:, 2].min() <= img[2][hit].min() and img[2][hit].max() <= points[:, 2].max()


def test_nyu_depth(real_dir):
    mm = cv2.imread(str(real_dir / "nyu_pseudo" / "bookstore_0001d_00001.png"),
                    cv2.IMREAD_UNCHANGED)
    assert mm.dtype == np.uint16 and mm.ndim == 2
    d = depth_to_tensor(mm, "16UC1")
    valid = d[2] > 0
    assert torch.equal(valid, torch.from_numpy(mm > 0))
    assert 0.5 <= d[0][valid].median() <= 10.0
    assert d[0][valid].max() <= 10.0 + 1e-6 and (d[0][~valid] == 0).all()
    metres = depth_to_tensor(mm.astype(np.float32) / 1000.0, "32FC1")
    assert torch.allclose(d[0], metres[0], atol=1e-3) and torch.equal(d[2], metres[2])
    half = resize_modality(d, "depth", (mm.shape[0] // 2, mm.shape[1] // 2))
    assert half.shape == (3, 60, 80)
    assert set(half[0].unique().tolist()) <= set(d[0].unique().tolist())
    assert (half[2] > 0).float().mean() >= valid.float().mean()  # sparse-aware: no lost returns
