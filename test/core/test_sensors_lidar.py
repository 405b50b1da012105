"""project_lidar: exact pixels, z-buffer, drops, dilation, dtypes, against a numpy reference."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from anyseg_core.sensors import project_lidar

# A 7 x 9 camera looking down +z, principal point at pixel (row 3, column 4).
K = np.array([[10.0, 0.0, 4.0], [0.0, 10.0, 3.0], [0.0, 0.0, 1.0]])
EYE = np.eye(4)
HW = (7, 9)


def pixel(img: torch.Tensor, row: int, col: int) -> list[float]:
    return img[:, row, col].tolist()


def filled(img: torch.Tensor) -> set[tuple[int, int]]:
    return {tuple(rc) for rc in (img != 0).any(0).nonzero().tolist()}


def test_points_land_on_hand_computed_pixels():
    pts = np.array([
        [0.0, 0.0, 5.0, 0.5],    # u = 4, v = 3
        [0.5, -0.4, 2.0, 0.25],  # u = 6.5 -> column 7 (pixel centres at integers), v = 1
        [-0.6, 0.6, 3.0, 1.0],   # u = 2, v = 5
    ])
    img = project_lidar(pts, K, EYE, HW)
    assert img.shape == (3, 7, 9) and img.dtype == torch.float32
    assert filled(img) == {(3, 4), (1, 7), (5, 2)}
    assert pixel(img, 3, 4) == pytest.approx([5.0, 0.5, 5.0])
    assert pixel(img, 1, 7) == pytest.approx([2.1, 0.25, 2.0])  # sqrt(.25 + .16 + 4) = 2.1
    assert pixel(img, 5, 2) == pytest.approx([math.sqrt(9.72), 1.0, 3.0])


def test_channels_are_in_the_lidar_frame():
    # LiDAR axes (x forward, y left, z up) to camera axes, plus an offset.
    T = np.array([[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, -1.0], [1.0, 0.0, 0.0, 0.5],
                  [0.0, 0.0, 0.0, 1.0]])
    pts = np.array([[4.5, 0.0, 1.0, 0.3]])  # camera: (0, -2, 5) -> u = 4, v = 3 - 4 = -1: out
    assert not filled(project_lidar(pts, K, T, HW))
    pts = np.array([[4.5, 0.0, 0.5, 0.3]])  # camera: (0, -1.5, 5) -> v = 0
    img = project_lidar(pts, K, T, HW)
    assert filled(img) == {(0, 4)}
    assert pixel(img, 0, 4) == pytest.approx([math.hypot(4.5, 0.5), 0.3, 0.5])


@pytest.mark.parametrize("near_first", [True, False])
def test_nearest_point_wins_a_shared_pixel(near_first):
    far = [0.0, 0.0, 6.0, 0.9]
    near = [-0.2, 0.1, 4.0, 0.1]  # u = 3.5 -> 4, v = 3.25 -> 3: the same pixel
    pts = np.array([near, far] if near_first else [far, near])
    img = project_lidar(pts, K, EYE, HW)
    assert filled(img) == {(3, 4)}
    assert pixel(img, 3, 4)[1:] == pytest.approx([0.1, 4.0])


def test_equal_depth_goes_to_the_first_point():
    pts = np.array([[0.0, 0.0, 5.0, 0.7], [0.01, 0.0, 5.0, 0.2], [0.0, 0.01, 5.0, 0.4]])
    assert pixel(project_lidar(pts, K, EYE, HW), 3, 4)[1] == pytest.approx(0.7)
    assert pixel(project_lidar(pts[::-1].copy(), K, EYE, HW), 3, 4)[1] == pytest.approx(0.4)


def test_invalid_points_are_dropped():
    good = [0.0, 0.0, 5.0, 0.5]
    pts = np.array([
        good,
        [0.0, 0.0, -5.0, 0.5],      # behind the camera
        [0.0, 0.0, 0.0, 0.5],       # in the camera plane
        [0.0, 0.0, 0.9, 0.5],       # closer than min_range
        [5.0, 0.0, 2.0, 0.5],       # u = 29: right of the image
        [-0.9, 0.0, 2.0, 0.5],      # u = -0.5 -> column floor(0) = 0: kept (left edge)
        [-0.91, 0.0, 2.0, 0.5],     # u = -0.55: left of the image
        [np.nan, 0.0, 5.0, 0.5],
        [0.0, np.inf, 5.0, 0.5],
        [0.0, 0.0, 5.0, np.nan],    # non-finite intensity
        [0.0, 0.0, 5.0, -np.inf],
    ])
    img = project_lidar(pts, K, EYE, HW)
    assert filled(img) == {(3, 4), (3, 0)}
    assert torch.isfinite(img).all()
    # min_range applies to the range in the LiDAR frame
    assert filled(project_lidar(pts[:1], K, EYE, HW, min_range=5.01)) == set()


def test_dilation_grows_points_and_nearest_wins_overlaps():
    far = [0.0, 0.0, 5.0, 0.9]     # pixel (3, 4)
    near = [0.25, 0.0, 4.0, 0.1]   # u = 4.625 -> column 5, v = 3
    pts = np.array([far, near])
    img2 = project_lidar(pts, K, EYE, HW, dilate=2)
    # k = 2: a point at (r, c) covers rows r..r+1 and columns c..c+1
    assert filled(img2) == {(3, 4), (4, 4), (3, 5), (4, 5), (3, 6), (4, 6)}
    for rc in [(3, 5), (4, 5), (3, 6), (4, 6)]:
        assert pixel(img2, *rc)[1] == pytest.approx(0.1)  # the near point wins the overlap
    for rc in [(3, 4), (4, 4)]:
        assert pixel(img2, *rc)[1] == pytest.approx(0.9)
    img3 = project_lidar(pts[:1], K, EYE, HW, dilate=3)
    assert filled(img3) == {(r, c) for r in (2, 3, 4) for c in (3, 4, 5)}
    assert (img3[:, 2:5, 3:6] == img3[:, 3:4, 4:5]).all()
    for k in (0, 1):
        assert torch.equal(project_lidar(pts, K, EYE, HW, dilate=k), project_lidar(pts, K, EYE, HW))


def test_dilation_is_clipped_at_the_border():
    pts = np.array([[0.4, 0.3, 1.0, 0.5]])  # u = 8, v = 6: bottom-right pixel
    img = project_lidar(pts, K, EYE, HW, dilate=3)
    assert filled(img) == {(5, 7), (5, 8), (6, 7), (6, 8)}


def test_input_types_give_identical_results():
    rng = np.random.default_rng(1)
    pts = np.concatenate([rng.uniform(-2, 2, (200, 2)), rng.uniform(-1, 8, (200, 1)),
                          rng.random((200, 1)), rng.random((200, 2))], axis=1).astype(np.float32)
    ref = project_lidar(pts, K, EYE, HW)
    assert filled(ref)
    for variant in (pts.astype(np.float64), torch.from_numpy(pts), torch.from_numpy(pts).double(),
                    pts[:, :4].copy(), np.asfortranarray(pts)):
        assert torch.equal(project_lidar(variant, torch.from_numpy(K), torch.eye(4), HW), ref)


def test_empty_and_bad_input():
    img = project_lidar(np.zeros((0, 4)), K, EYE, HW)
    assert img.shape == (3, 7, 9) and not img.any()
    assert not project_lidar(np.zeros((0, 4)), K, EYE, HW, dilate=2).any()
    with pytest.raises(ValueError, match="N x >=4"):
        project_lidar(np.zeros((5, 3)), K, EYE, HW)
    with pytest.raises(ValueError, match="T_cam_lidar"):
        project_lidar(np.zeros((5, 4)), K, np.eye(3), HW)


def numpy_reference(pts: np.ndarray, K: np.ndarray, T: np.ndarray, hw, min_range=1.0):
    """Straightforward loop over points in the same arithmetic order."""
    H, W = hw
    out = np.zeros((3, H, W), np.float32)
    best = {}
    for i, (x, y, z, inten) in enumerate(pts[:, :4].astype(np.float64)):
        xc, yc, zc = (T[r, 0] * x + T[r, 1] * y + T[r, 2] * z + T[r, 3] for r in range(3))
        rng = math.sqrt(x * x + y * y + z * z)
        if not (np.isfinite(rng) and np.isfinite(inten)) or rng < min_range or zc <= 1e-6:
            continue
        u = (K[0, 0] * xc + K[0, 1] * yc + K[0, 2] * zc) / zc + 0.5
        v = (K[1, 0] * xc + K[1, 1] * yc + K[1, 2] * zc) / zc + 0.5
        if not (0 <= u < W and 0 <= v < H):
            continue
        key = (math.floor(v), math.floor(u))
        if key not in best or zc < best[key][0]:
            best[key] = (zc, (rng, inten, z))
    for (r, c), (_, vals) in best.items():
        out[:, r, c] = vals
    return out


def quarters(lo: int, hi: int) -> st.SearchStrategy[float]:
    return st.integers(4 * lo, 4 * hi).map(lambda i: i / 4)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(quarters(-3, 3), quarters(-3, 3), quarters(-1, 6),
                          st.floats(0, 1, width=32)), max_size=40),
       st.sampled_from([0.0, 0.3]))
def test_matches_a_per_point_reference(points, yaw):
    pts = np.array(points, np.float64).reshape(-1, 4)
    c, s = math.cos(yaw), math.sin(yaw)
    T = np.array([[c, 0, s, 0.1], [0, 1, 0, -0.2], [-s, 0, c, 0.3], [0, 0, 0, 1]])
    # Coarse coordinates make points share pixels (and depths) often.
    got = project_lidar(pts, K, T, HW, min_range=0.5).numpy()
    assert np.array_equal(got, numpy_reference(pts, K, T, HW, min_range=0.5))


@st.composite
def rays(draw):
    """Groups of 2 to 4 points on one ray through the camera centre, at distinct depths, so
    every group shares a pixel by construction (the coarse strategy above rarely does)."""
    groups = draw(st.lists(st.tuples(
        st.integers(0, HW[1] - 1), st.integers(0, HW[0] - 1),
        st.lists(quarters(1, 6), min_size=2, max_size=4, unique=True),
        st.floats(0, 1, width=32)), min_size=1, max_size=6))
    return groups, draw(st.sampled_from([0.0, 0.3]))


@settings(max_examples=60, deadline=None)
@given(rays())
def test_points_sharing_a_pixel_keep_the_nearest(case):
    groups, yaw = case
    c, s = math.cos(yaw), math.sin(yaw)
    T = np.array([[c, 0, s, 0.1], [0, 1, 0, -0.2], [-s, 0, c, 0.3], [0, 0, 0, 1]])
    R, t = T[:3, :3], T[:3, 3]
    rows, expected = [], {}
    for u, v, depths, intensity in groups:
        d = np.linalg.solve(K, [u, v, 1.0])  # the ray of pixel (u, v) in the camera frame
        for k, depth in enumerate(depths):
            p = R.T @ (depth * d - t)  # the LiDAR point that the camera sees at that depth
            rows.append([*p, intensity + k])
        near = R.T @ (min(depths) * d - t)
        expected.setdefault((v, u), []).append(np.linalg.norm(near))
    pts = np.array(rows, np.float64)
    got = project_lidar(pts, K, T, HW, min_range=0.5).numpy()
    assert np.array_equal(got, numpy_reference(pts, K, T, HW, min_range=0.5))
    for (v, u), ranges in expected.items():
        if len(ranges) == 1:  # one group at this pixel: its nearest point is the one drawn
            assert got[0, v, u] == pytest.approx(ranges[0], rel=1e-5)
