"""Joint training augmentation: one geometry for every modality and the label, "no data"
padding in each dataset's normalisation, sparse modalities never blended, deterministic."""
import pytest
import torch

from anyseg_core.data.deliver import NORMALIZATION as DELIVER_NORMALIZATION
from anyseg_core.data.transforms import JointAugment
from anyseg_core.modalities import IGNORE_INDEX, NORMALIZATION
from anyseg_core.sensors import normalize

H, W = 16, 24


def _inputs():
    ramp = torch.arange(H * W, dtype=torch.float32).view(1, H, W)
    return {"camera": ramp.expand(3, H, W) / (H * W), "lidar": ramp.expand(3, H, W).clone(),
            "events": (ramp.expand(3, H, W) % 7).clone()}, (ramp[0] % 19).long()


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_same_geometry_for_every_modality_and_the_label():
    inputs, label = _inputs()
    aug = JointAugment(scale=(1.0, 1.0), flip=True, blur_p=0.0, color_jitter_p=0.0)
    flips = 0
    for seed in range(8):
        out, lab = aug(inputs, label, _gen(seed))
        flipped = torch.equal(lab, label.flip(-1))
        assert flipped or torch.equal(lab, label)
        flips += flipped
        for mod, x in inputs.items():
            assert torch.equal(out[mod], x.flip(-1) if flipped else x), mod
    assert 0 < flips < 8  # both happen


def test_padding_is_raw_zero_in_the_datasets_normalisation():
    inputs, label = _inputs()
    for table, lidar_fill in ((None, [-m / s for m, s in zip(*NORMALIZATION["lidar"])]),
                              (DELIVER_NORMALIZATION, [0.0, 0.0, 0.0])):
        aug = JointAugment(scale=(0.5, 0.5), flip=False, blur_p=0.0, color_jitter_p=0.0,
                           normalization=table)
        out, lab = aug(inputs, label, _gen(0))
        pad = lab == IGNORE_INDEX
        assert pad.float().mean() == 0.75  # a half-size image inside the full window
        for c, value in enumerate(lidar_fill):
            assert torch.allclose(out["lidar"][c][pad], torch.tensor(value)), (table, c)
        assert (out["camera"][:, pad] == 0).all()


def test_sparse_modalities_are_never_blended_and_runs_repeat():
    inputs, label = _inputs()
    aug = JointAugment(scale=(1.3, 1.7), flip=True, blur_p=1.0, color_jitter_p=1.0)
    out, lab = aug(inputs, label, _gen(5))
    for mod in ("lidar", "events"):  # input values, or "no data" between enlarged points
        mean, std = NORMALIZATION[mod]
        fill = -torch.tensor(mean) / torch.tensor(std)  # float32, as the padding is made
        for c in range(3):
            allowed = set(inputs[mod][c].unique().tolist()) | {fill[c].item()}
            assert set(out[mod][c].unique().tolist()) <= allowed, (mod, c)
    assert set(lab.unique().tolist()) <= set(label.unique().tolist())
    again, lab2 = aug(inputs, label, _gen(5))
    assert torch.equal(lab, lab2) and all(torch.equal(out[m], again[m]) for m in out)


def test_the_same_sample_whatever_the_number_of_threads():
    """DataLoader workers run with one thread, the main process (num_workers=0) with many: an
    item's augmentation must not depend on it, or training results depend on num_workers.
    (PyTorch's plain bilinear upscale and whole-tensor mean on the CPU both do.)"""
    g = torch.Generator().manual_seed(0)
    camera = torch.rand(3, 96, 160, generator=g)
    inputs = {"camera": (camera - 0.5) / 0.25, "lidar": torch.rand(3, 96, 160, generator=g)}
    label = torch.randint(0, 19, (96, 160), generator=g)
    aug = JointAugment(scale=(0.5, 2.0), blur_p=1.0, color_jitter_p=1.0)
    threads = torch.get_num_threads()
    try:
        runs = []
        for n in (1, 3):
            torch.set_num_threads(n)
            runs.append([aug(inputs, label, _gen(seed)) for seed in range(12)])
    finally:
        torch.set_num_threads(threads)
    for (a, la), (b, lb) in zip(*runs):
        assert torch.equal(la, lb)
        for mod in a:
            assert torch.equal(a[mod], b[mod]), mod


def _sparse_lidar(hw, fraction, seed=0):
    """A raw LiDAR image with ``fraction`` of its pixels hit, every range distinct."""
    g = torch.Generator().manual_seed(seed)
    hit = torch.rand(hw, generator=g) < fraction
    raw = torch.zeros(3, *hw)
    raw[0][hit] = 1.0 + torch.randperm(int(hit.sum()), generator=g).float()
    raw[1][hit], raw[2][hit] = 5.0, 0.5
    return raw


def test_rescaled_lidar_keeps_the_density_a_projection_at_that_scale_would_have():
    """Shrinking keeps one return per output pixel (the nearest), as resize_modality does for
    inference (a plain nearest neighbour kept about a quarter at half size); enlarging draws
    every return at one pixel, not a block. Events likewise."""
    raw = _sparse_lidar((64, 96), 0.1)
    n = int((raw[0] > 0).sum())
    label = torch.zeros(64, 96, dtype=torch.long)
    fill = torch.tensor([-m / s for m, s in zip(*NORMALIZATION["lidar"])]).view(3, 1, 1)
    for scale, expect in ((0.5, None), (2.0, n)):
        aug = JointAugment(scale=(scale, scale), flip=False, blur_p=0.0, color_jitter_p=0.0)
        out, _ = aug({"lidar": normalize(raw, "lidar")}, label, _gen(0))
        kept = int(((out["lidar"] - fill).abs() > 1e-4).any(0).sum())
        if expect is None:  # half size: every 2 x 2 block with a return keeps its nearest
            blocks = (raw[0] > 0).view(32, 2, 48, 2).any(3).any(1)
            expect = int(blocks.sum())
            assert expect > 0.8 * n  # a plain nearest neighbour kept about n / 4
        # Enlarged x2, the crop is a quarter of the image: count only the points inside it.
        if scale == 2.0:  # each return drawn once (a block would repeat its range 4 times)
            ranges = out["lidar"][0][((out["lidar"] - fill).abs() > 1e-4).any(0)]
            assert kept > 0.15 * n and len(ranges.unique()) == kept
        else:
            assert kept == expect
    events = torch.zeros(3, 64, 96)
    events[0, 10, 10], events[0, 11, 11], events[1, 11, 10] = 3.0, 1.0, 1.0
    aug = JointAugment(scale=(0.5, 0.5), flip=False, blur_p=0.0, color_jitter_p=0.0)
    out, _ = aug({"events": normalize(events, "events")}, label, _gen(0))
    mean, std = NORMALIZATION["events"]
    raw_out = out["events"] * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)
    assert (raw_out[0] > 0.5).sum() == 1 and raw_out[0].max().round() == 3.0  # the busiest


def test_deliver_images_are_rescaled_as_deliver_inputs_resizes_them():
    """DELIVER's depth (HHA) is a dense image and its LiDAR / event images keep the block's
    largest sum (deliver_inputs): the augmentation rescales them the same way, not as raw
    sensor data."""
    from anyseg_core.data import rescale_info
    from anyseg_core.sensors import resize_dense, resize_sparse

    g = torch.Generator().manual_seed(3)
    sparse = torch.rand(3, H, W, generator=g) * (torch.rand(1, H, W, generator=g) < 0.3)
    inputs = {"depth": torch.rand(3, H, W, generator=g), "lidar": sparse}
    label = torch.zeros(H, W, dtype=torch.long)
    aug = JointAugment(scale=(0.5, 0.5), flip=False, blur_p=0.0, color_jitter_p=0.0,
                       normalization=DELIVER_NORMALIZATION,  # mean 0, std 1: raw = input
                       rescale=rescale_info({"data": {"dataset": "deliver"}}))
    out, lab = aug(inputs, label, _gen(0))
    rows, cols = (lab != IGNORE_INDEX).nonzero(as_tuple=True)
    box = (slice(int(rows.min()), int(rows.max()) + 1), slice(int(cols.min()), int(cols.max()) + 1))
    assert (box[0].stop - box[0].start, box[1].stop - box[1].start) == (H // 2, W // 2)
    torch.testing.assert_close(out["depth"][:, box[0], box[1]],
                               resize_dense(inputs["depth"], (H // 2, W // 2)))
    torch.testing.assert_close(out["lidar"][:, box[0], box[1]],
                               resize_sparse(sparse, (H // 2, W // 2), "sum"))
    with pytest.raises(ValueError, match="rescale policies must be among"):
        JointAugment(rescale={"lidar": "bilinear"})


def test_colour_jitter_keeps_colours_of_equal_rgb_luminance_equally_bright():
    """Saturation is blended towards each pixel's grey, the Rec. 601 luminance of RGB
    (0.299 R + 0.587 G + 0.114 B); brightness and contrast act on every channel alike. So two
    pixels of equal luminance, a reddish and a bluish one, and a grey of that luminance keep
    equal luminance whatever the jitter drew. Weights in BGR order would weigh the red pixel's
    red by 0.114 and the blue one's blue by 0.299, and tell them apart."""
    base = 0.4
    reddish = torch.tensor([base + 0.05, base, base])
    bluish = torch.tensor([base, base, base + 0.05 * 0.299 / 0.114])
    luma = torch.tensor([0.299, 0.587, 0.114])
    grey = torch.full((3,), float(reddish @ luma))
    assert float(bluish @ luma) == pytest.approx(float(grey[0]), abs=1e-7)
    stripes = torch.stack([reddish, bluish, grey], 1)  # [3 channels, 3 stripes]
    image = stripes.repeat_interleave(W // 3, 1)[:, None, :].expand(3, H, W).contiguous()
    aug = JointAugment(scale=(1.0, 1.0), flip=False, blur_p=0.0, color_jitter_p=1.0)
    label = torch.zeros(H, W, dtype=torch.long)
    for seed in range(16):
        out, _ = aug({"camera": normalize(image, "camera")}, label, _gen(seed))
        raw = out["camera"] * torch.tensor(NORMALIZATION["camera"][1]).view(3, 1, 1) \
            + torch.tensor(NORMALIZATION["camera"][0]).view(3, 1, 1)
        assert 0.0 < raw.min() and raw.max() < 1.0  # nothing clipped: the blend is exact
        assert not torch.allclose(raw, image, atol=1e-3)  # it jittered
        pixels = raw[:, 0, :: W // 3]  # one pixel of each stripe, [3 channels, 3]
        torch.testing.assert_close(pixels[0, 2], pixels[1, 2])  # the grey stays grey
        torch.testing.assert_close(pixels[1, 2], pixels[2, 2])
        bright = luma @ pixels
        torch.testing.assert_close(bright, bright[2].expand(3), atol=2e-6, rtol=0,
                                   msg=lambda m: f"seed {seed}: {bright.tolist()}\n{m}")
