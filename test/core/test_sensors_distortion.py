"""Lens distortion: the three CameraInfo models against OpenCV, the fold guard, and LiDAR
points and events of a separate event camera drawn where a distorted image shows them."""
import numpy as np
import pytest
import torch

from anyseg_core.sensors import (Events, RawFrame, check_distortion, distort, prepare_inputs,
                                 project_lidar, render_events)
from anyseg_core.sensors.distortion import valid_limit

cv2 = pytest.importorskip("cv2", reason="OpenCV is the reference; the test environment "
                                        "installs it (the cv extra, or python3-opencv)")

K = np.array([[500.0, 0.0, 320.0], [0.0, 510.0, 240.0], [0.0, 0.0, 1.0]])
HW = (480, 640)
MODELS = {
    "plumb_bob": (-0.3, 0.1, 0.001, -0.002, -0.02),
    "rational_polynomial": (-0.3, 0.1, 0.001, -0.002, -0.02, 0.01, 0.002, 0.0005),
    "equidistant": (0.05, -0.01, 0.002, -0.0003),
}


def opencv_pixels(points: np.ndarray, model: str, D) -> np.ndarray:
    if model == "equidistant":
        px, _ = cv2.fisheye.projectPoints(points.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), K,
                                          np.array(D))
    else:
        px, _ = cv2.projectPoints(points, np.zeros(3), np.zeros(3), K, np.array(D))
    return px.reshape(-1, 2)


def camera_points(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform([-3.0, -2.0, 2.0], [3.0, 2.0, 20.0], (n, 3))


@pytest.mark.parametrize("model", MODELS)
def test_distort_matches_opencv(model):
    points = camera_points(2000)
    x, y = (torch.from_numpy(points[:, i] / points[:, 2]) for i in (0, 1))
    xd, yd, ok = distort(x, y, (model, MODELS[model]))
    assert ok.float().mean() > 0.99
    u = K[0, 0] * xd + K[0, 2]
    v = K[1, 1] * yd + K[1, 2]
    ref = opencv_pixels(points, model, MODELS[model])
    np.testing.assert_allclose(np.stack([u, v], 1)[ok.numpy()], ref[ok.numpy()], atol=1e-9)


@pytest.mark.parametrize("model", MODELS)
def test_lidar_lands_on_the_distorted_pixel(model):
    """A LiDAR point goes to round(OpenCV's projection); without the distortion it would
    land elsewhere (tens of pixels near the corners)."""
    points = camera_points(300, seed=1)
    ref = opencv_pixels(points, model, MODELS[model])
    lidar = np.concatenate([points, np.arange(1, 301)[:, None]], 1)  # intensity = id
    img = project_lidar(lidar, K, np.eye(4), HW, min_range=0.0, distortion=(model, MODELS[model]))
    inside = (ref[:, 0] >= -0.5) & (ref[:, 0] < HW[1] - 0.5) & (ref[:, 1] >= -0.5) & (
        ref[:, 1] < HW[0] - 0.5)
    cols, rows = np.floor(ref[inside] + 0.5).astype(int).T
    assert (img[1, rows, cols].numpy() == np.arange(1, 301)[inside]).all()
    assert int((img[1] > 0).sum()) == int(inside.sum())
    plain = project_lidar(lidar, K, np.eye(4), HW, min_range=0.0)
    assert not torch.equal(plain, img)


def test_zero_coefficients_are_no_distortion():
    assert check_distortion("plumb_bob", [0.0] * 5) is None
    assert check_distortion("", []) is None
    points = np.concatenate([camera_points(200), np.ones((200, 1))], 1)
    torch.testing.assert_close(
        project_lidar(points, K, np.eye(4), HW, distortion=("plumb_bob", (0.0,) * 5)),
        project_lidar(points, K, np.eye(4), HW), rtol=0, atol=0)


def test_points_beyond_the_fold_are_dropped():
    """With k1 = -0.5 (plumb_bob) the distorted radius peaks at r = 1/sqrt(1.5): a point at
    r = 2 would fold back into the image (r_d = 2 (1 - 0.5 * 4) = -2 -> onto the other side)
    and is dropped; one at r = 0.5 is kept."""
    D = ("plumb_bob", (-0.5, 0.0, 0.0, 0.0))
    xd, yd, ok = distort(torch.tensor([0.5, 2.0]), torch.tensor([0.0, 0.0]), D)
    assert ok.tolist() == [True, False]
    wide = np.array([[2.0, 0.0, 1.0, 1.0], [0.5, 0.0, 1.0, 2.0]])
    img = project_lidar(wide, K, np.eye(4), HW, min_range=0.0, distortion=D)
    assert sorted(img[1][img[1] > 0].tolist()) == [2.0]


def test_a_model_that_rises_again_past_its_fold_still_drops_the_far_points():
    """k1 = -0.4, k2 = 0.05: r_d = r (1 - 0.4 r² + 0.05 r⁴) peaks at r = 1.036 (r_d = 0.651),
    falls, and grows again from r = 1.93: a point at r = 2.2 (r_d = 0.518) would be drawn
    well inside the image, at a wrong place, if only the slope at the point were checked."""
    D = ("plumb_bob", (-0.4, 0.05, 0.0, 0.0, 0.0))
    assert valid_limit(*D) == pytest.approx(1.036 ** 2, rel=1e-3)
    _, _, ok = distort(torch.tensor([0.9, 1.0, 1.1, 2.2, 3.0]), torch.zeros(5), D)
    assert ok.tolist() == [True, True, False, False, False]
    img = project_lidar(np.array([[2.2, 0.0, 1.0, 7.0], [0.5, 0.0, 1.0, 3.0]]), K, np.eye(4),
                        HW, min_range=0.0, distortion=D)
    assert sorted(img[1][img[1] > 0].tolist()) == [3.0]
    # the other models: a fisheye whose angle folds, a rational model whose denominator
    # reaches zero; and models that never fold
    assert valid_limit("equidistant", (-0.5, 0.0, 0.0, 0.0)) == pytest.approx(2 / 3)
    assert valid_limit("rational_polynomial", (0.0,) * 5 + (-1.0, 0.0, 0.0)) == pytest.approx(1.0)
    assert valid_limit("plumb_bob", (0.1, 0.0, 0.0, 0.0)) == np.inf
    assert valid_limit("equidistant", MODELS["equidistant"]) > (np.pi / 2) ** 2


def test_bad_distortion_names_the_problem():
    with pytest.raises(ValueError, match="'kannala' is not supported"):
        check_distortion("kannala", [0.1])
    with pytest.raises(ValueError, match="rational_polynomial takes 8 coefficients, got 5"):
        check_distortion("rational_polynomial", [0.1, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="finite"):
        check_distortion("plumb_bob", [float("nan"), 0, 0, 0])
    with pytest.raises(ValueError, match="not supported"):  # also when given directly
        project_lidar(np.ones((1, 4)), K, np.eye(4), HW, distortion=("fov", (0.9,)))


def test_events_of_a_separate_camera_are_distorted_into_the_frame_camera():
    """Events of an undistorted event camera warped into a distorted frame camera land where
    OpenCV projects their viewing rays; the frame's ``events_distortion`` asks for it."""
    model, D = "plumb_bob", MODELS["plumb_bob"]
    K_ev = np.array([[300.0, 0.0, 173.0], [0.0, 300.0, 130.0], [0.0, 0.0, 1.0]])
    rng = np.random.default_rng(2)
    n = 500
    x = rng.integers(0, 346, n).astype(np.uint16)
    y = rng.integers(0, 260, n).astype(np.uint16)
    t = np.sort(10.0 - rng.uniform(0, 0.02, n))
    p = np.ones(n, np.uint8)
    rays = np.stack([(x - K_ev[0, 2]) / K_ev[0, 0], (y - K_ev[1, 2]) / K_ev[1, 1], np.ones(n)], 1)
    ref = opencv_pixels(rays, model, D)
    frame = RawFrame(image_hw=HW, K=K, t_cam=10.0, events=Events(x, y, t, p), events_K=K_ev,
                     events_hw=(260, 346), events_distortion=(model, D))
    got = prepare_inputs(frame, HW, ["events"], normalized=False)["events"]
    want = np.zeros(HW)
    cols, rows = np.floor(ref + 0.5).astype(int).T
    inside = (cols >= 0) & (cols < HW[1]) & (rows >= 0) & (rows < HW[0])
    np.add.at(want, (rows[inside], cols[inside]), 1)
    np.testing.assert_array_equal(got[0].numpy(), want)
    undistorted = prepare_inputs(RawFrame(**{**frame.__dict__, "events_distortion": None}), HW,
                                 ["events"], normalized=False)["events"]
    assert not torch.equal(undistorted, got)


def test_render_events_needs_K_with_distortion():
    with pytest.raises(ValueError, match="distortion needs K"):
        render_events(np.zeros(1), np.zeros(1), np.zeros(1), np.ones(1), HW,
                      distortion=("plumb_bob", (0.1, 0, 0, 0)))
