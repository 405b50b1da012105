"""Resizing: dense blends, labels and sparse images never do."""
import numpy as np
import pytest
import torch

from anyseg_core.sensors import (project_lidar, resize_dense, resize_modality, resize_nearest,
                                 resize_sparse)


@pytest.fixture
def lidar_image():
    """A real projection: 3000 random points in a 60 x 80 camera (sparse, with collisions)."""
    rng = np.random.default_rng(0)
    pts = np.concatenate([rng.uniform(-8, 8, (3000, 2)), rng.uniform(1, 30, (3000, 1)),
                          rng.random((3000, 1))], axis=1)
    K = np.array([[40.0, 0.0, 39.5], [0.0, 40.0, 29.5], [0.0, 0.0, 1.0]])
    return project_lidar(pts, K, np.eye(4), (60, 80))


def samples(img: torch.Tensor) -> set[tuple[float, ...]]:
    """Every pixel as a tuple of its channel values."""
    return {tuple(v) for v in img.flatten(1).T.tolist()}


@pytest.mark.parametrize("size", [(30, 40), (20, 20), (13, 29), (60, 40), (7, 80)])
def test_sparse_downscale_keeps_real_samples(lidar_image, size):
    small = resize_sparse(lidar_image, size)
    assert small.shape == (3, *size)
    assert samples(small) <= samples(lidar_image)  # whole pixels copied, never blended
    assert (small[0] > 0).sum() > 0.5 * min((lidar_image[0] > 0).sum(), size[0] * size[1])


def test_sparse_downscale_keeps_the_nearest_of_each_block(lidar_image):
    small = resize_sparse(lidar_image, (30, 40))  # exact 2 x 2 blocks
    rng = lidar_image[0].clone()
    rng[rng == 0] = torch.inf
    nearest = rng.view(30, 2, 40, 2).amin(dim=(1, 3))
    nearest[torch.isinf(nearest)] = 0
    assert torch.equal(small[0], nearest)
    assert torch.equal(resize_modality(lidar_image, "lidar", (30, 40)), small)


def test_sparse_upscale_is_nearest():
    img = torch.arange(12.0).view(3, 2, 2) + 1
    big = resize_sparse(img, (4, 6))
    assert torch.equal(big, img.repeat_interleave(2, 1).repeat_interleave(3, 2))
    # mixed: rows shrink, columns grow
    mixed = resize_sparse(img, (1, 4))
    assert mixed.shape == (3, 1, 4) and samples(mixed) <= samples(img)


def test_event_images_keep_the_busiest_pixel():
    img = torch.zeros(3, 2, 2)
    img[:2, 0, 0] = torch.tensor([1.0, 1.0])  # 2 events
    img[:2, 1, 1] = torch.tensor([0.0, 3.0])  # 3 events: wins
    img[2] = (img[:2].sum(0) > 0) * 0.5
    out = resize_modality(img, "events", (1, 1))
    assert out.flatten().tolist() == [0.0, 3.0, 0.5]
    # with the default priority the positive count decides (pixel (0, 0), the only one > 0)
    assert resize_sparse(img, (1, 1)).flatten().tolist() == [1.0, 1.0, 0.5]


def test_tensor_priority():
    img = torch.arange(16.0).view(1, 4, 4).expand(3, -1, -1)
    priority = torch.zeros(4, 4)
    priority[1, 0] = 1.0
    out = resize_sparse(img, (2, 2), priority=priority)
    assert out[0].tolist() == [[4.0, 2.0], [8.0, 10.0]]  # ties: the first pixel of the block
    with pytest.raises(ValueError, match="priority"):
        resize_sparse(img, (2, 2), priority="loudest")


def test_batched_sparse_resize(lidar_image):
    batch = torch.stack([lidar_image, lidar_image.flip(-1)])
    out = resize_sparse(batch, (20, 30))
    assert torch.equal(out[0], resize_sparse(lidar_image, (20, 30)))
    assert torch.equal(out[1], resize_sparse(lidar_image.flip(-1), (20, 30)))


def test_label_resize_keeps_ids():
    label = torch.from_numpy(np.random.default_rng(0).choice([0, 7, 13, 255], (37, 53))
                             .astype(np.uint8))
    for size in [(10, 20), (74, 106), (37, 53), (5, 200)]:
        out = resize_nearest(label, size)
        assert out.shape == size and out.dtype == torch.uint8
        assert set(out.unique().tolist()) <= {0, 7, 13, 255}
    assert (resize_nearest(label, (18, 26)) == 255).any()
    up = resize_nearest(label.long(), (74, 106))
    assert torch.equal(up[::2, ::2], label.long())
    multi = resize_nearest(torch.stack([label, label]), (10, 20))
    assert torch.equal(multi[1], resize_nearest(label, (10, 20)))


def test_nearest_picks_pixel_centres():
    row = torch.arange(5).view(1, 5)
    # output pixel j covers source coordinate (j + 0.5) * 5 / 2 - 0.5 = 0.75 and 3.25
    assert resize_nearest(row, (1, 2)).tolist() == [[1, 3]]
    assert resize_nearest(row, (1, 10)).tolist() == [[0, 0, 1, 1, 2, 2, 3, 3, 4, 4]]


def test_dense_resize():
    x = torch.rand(3, 40, 60)
    assert resize_dense(x, (40, 60)) is x
    for dtype in (torch.float16, torch.bfloat16):  # computed in float32 on the CPU
        for size in ((80, 90), (20, 30)):
            half = resize_dense(x.to(dtype), size)
            assert half.dtype == dtype and half.shape == (3, *size)
    assert resize_dense(x, (20, 30)).shape == (3, 20, 30)
    assert resize_dense(x[None], (80, 90)).shape == (1, 3, 80, 90)
    flat = torch.full((3, 40, 60), 0.25)
    assert torch.allclose(resize_dense(flat, (13, 17)), torch.full((3, 13, 17), 0.25))
    # antialiasing: a one-pixel checkerboard shrunk 4x averages out instead of aliasing
    checker = ((torch.arange(40)[:, None] + torch.arange(60)[None]) % 2).float().expand(3, -1, -1)
    assert torch.allclose(resize_dense(checker, (10, 15)), torch.full((3, 10, 15), 0.5), atol=0.02)
    assert torch.allclose(resize_modality(checker, "camera", (10, 15)),
                          resize_dense(checker, (10, 15)))


def test_depth_resize_keeps_edges():
    depth = torch.zeros(3, 4, 4)
    depth[0, :, :2], depth[0, :, 2:] = 2.0, 10.0  # a depth edge between columns 1 and 2
    depth[1], depth[2] = 1 / depth[0], 1.0
    out = resize_modality(depth, "depth", (2, 3))
    assert set(out[0].flatten().tolist()) <= {2.0, 10.0}
    assert torch.equal(out[1], 1 / out[0])
    with pytest.raises(ValueError, match="radar"):
        resize_modality(depth, "radar", (2, 2))
