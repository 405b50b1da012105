"""camera_to_tensor, depth_to_tensor and the per-modality normalisation."""
import numpy as np
import pytest
import torch

from anyseg_core.modalities import NORMALIZATION
from anyseg_core.sensors import (camera_to_tensor, denormalize, depth_to_tensor,
                                 normalization_of, normalize)


@pytest.fixture
def rgb():
    return np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)


def test_colour_encodings_agree(rgb):
    ref = camera_to_tensor(rgb, "rgb8")
    assert ref.shape == (3, 5, 7) and ref.dtype == torch.float32
    assert torch.equal(ref, torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)
    bgr = rgb[:, :, ::-1]
    alpha = np.full((5, 7, 1), 77, np.uint8)
    variants = {"bgr8": bgr, "8UC3": bgr, "rgba8": np.concatenate([rgb, alpha], 2),
                "bgra8": np.concatenate([bgr, alpha], 2)}
    for encoding, image in variants.items():
        assert torch.equal(camera_to_tensor(image, encoding), ref), encoding
        assert torch.equal(camera_to_tensor(torch.from_numpy(image.copy()), encoding), ref)


def test_mono_encodings_replicate(rgb):
    grey = rgb[:, :, 0]
    ref = torch.from_numpy(grey).float().div(255).expand(3, -1, -1)
    for encoding in ("mono8", "8UC1"):
        assert torch.equal(camera_to_tensor(grey, encoding), ref)
        assert torch.equal(camera_to_tensor(grey[:, :, None], encoding), ref)
    grey16 = grey.astype(np.uint16) * 257  # 255 * 257 = 65535: the same brightness
    assert torch.allclose(camera_to_tensor(grey16, "mono16"), ref, atol=1e-7)
    assert camera_to_tensor(np.array([[65535]], np.uint16), "mono16").tolist() == [[[1.0]]] * 3


def test_camera_errors_name_the_encoding_and_shape(rgb):
    with pytest.raises(ValueError, match=r"'yuv422'.*\(5, 7, 3\)"):
        camera_to_tensor(rgb, "yuv422")
    with pytest.raises(ValueError, match=r"'rgb8'.*\(5, 7, 4\)"):
        camera_to_tensor(np.zeros((5, 7, 4), np.uint8), "rgb8")
    with pytest.raises(ValueError, match=r"'mono8'.*\(5, 7, 3\)"):
        camera_to_tensor(rgb, "mono8")
    with pytest.raises(ValueError, match=r"'mono16'.*uint8"):
        camera_to_tensor(rgb[:, :, 0], "mono16")


def test_depth_16uc1_and_32fc1_agree():
    mm = np.array([[0, 500, 1234], [65535, 20000, 7]], np.uint16)
    a = depth_to_tensor(mm, "16UC1")
    b = depth_to_tensor(mm.astype(np.float32) / 1000, "32FC1")
    assert a.shape == (3, 2, 3) and a.dtype == torch.float32
    assert torch.allclose(a, b, rtol=1e-6, atol=0)
    assert a[2].tolist() == [[0, 1, 1], [1, 1, 1]]
    assert a[0, 0].tolist() == pytest.approx([0, 0.5, 1.234])
    assert a[0, 1, 0] == 65.535  # below max_depth
    assert torch.allclose(a[1][a[2] > 0], 1 / a[0][a[2] > 0])


def test_depth_invalid_pixels_and_clipping():
    m = np.array([[0.0, -1.0, np.nan, np.inf], [-np.inf, 2.0, 150.0, 1e-9]], np.float32)
    d = depth_to_tensor(m, "32FC1")
    assert d[2].tolist() == [[0, 0, 0, 0], [0, 1, 1, 1]]
    assert torch.isfinite(d).all()
    assert d[0, 1].tolist() == pytest.approx([0, 2.0, 100.0, 1e-3])   # clipped to [1 mm, 100 m]
    assert d[1, 1].tolist() == pytest.approx([0, 0.5, 0.01, 1000.0])
    assert (d[:, 0] == 0).all()
    assert depth_to_tensor(m, "32FC1", max_depth=200.0)[0, 1, 2] == 150.0


def test_depth_errors():
    with pytest.raises(ValueError, match="32FC3"):
        depth_to_tensor(np.zeros((2, 2), np.float32), "32FC3")
    with pytest.raises(ValueError, match=r"'16UC1'.*float32"):
        depth_to_tensor(np.zeros((2, 2), np.float32), "16UC1")
    with pytest.raises(ValueError, match=r"'32FC1'.*uint16"):
        depth_to_tensor(np.zeros((2, 2), np.uint16), "32FC1")
    with pytest.raises(ValueError, match=r"\(2, 2, 3\)"):
        depth_to_tensor(np.zeros((2, 2, 3), np.float32), "32FC1")


@pytest.mark.parametrize("modality", list(NORMALIZATION))
def test_normalize_round_trip(modality):
    x = torch.rand(2, 3, 4, 5)
    mean, std = normalization_of(modality)
    y = normalize(x, modality)
    assert torch.allclose(y[:, 1], (x[:, 1] - mean[1]) / std[1])
    assert torch.allclose(normalize(x[0], modality), y[0])
    assert torch.allclose(denormalize(y, modality), x, atol=1e-5)
    empty = normalize(torch.zeros(3, 1, 1), modality).flatten()
    assert empty.tolist() == pytest.approx([-m / s for m, s in zip(mean, std)])


def test_normalize_errors():
    with pytest.raises(ValueError, match="radar"):
        normalization_of("radar")
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        normalize(torch.zeros(4, 2, 2), "camera")
