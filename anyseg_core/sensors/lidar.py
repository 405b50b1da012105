"""LiDAR point cloud -> 3-channel image in the camera (the MUSES SDK's encoding, z-buffered)."""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from .distortion import Distortion, distort
from .geometry import ArrayLike, as_tensor, resolve_device

_INT64_MAX = torch.iinfo(torch.int64).max


def project_lidar(points: ArrayLike, K: ArrayLike, T_cam_lidar: ArrayLike,
                  size_hw: Sequence[int], min_range: float = 1.0, dilate: int = 0,
                  distortion: Distortion = None,
                  device: Optional[torch.device | str] = None) -> torch.Tensor:
    """Project LiDAR points into a camera image; returns float32 ``[3, H, W]``.

    Channels: 0 range sqrt(x²+y²+z²) in metres, 1 intensity (column 3), 2 z (metres), all in
    the LiDAR frame; 0 where no point lands.

    points: N x >=4 (x, y, z, intensity, ...; extra columns ignored), float32 or float64,
    numpy or torch. K: 3x3 intrinsics with last row (0, 0, 1). T_cam_lidar: 4x4 (or 3x4)
    LiDAR -> camera (OpenCV optical frame). A point goes to pixel
    (floor(v + 0.5), floor(u + 0.5)) with (u, v) = (K @ p_cam)[:2] / z_cam, or, with a lens
    ``distortion`` (see :mod:`.distortion`), (u, v) = (K @ (distort(x_cam/z_cam, y_cam/z_cam),
    1))[:2]: where the distorted image shows the point.

    Dropped: points with a non-finite value in the first four columns, range < ``min_range``,
    z_cam <= 1e-6 (behind the camera), outside the image, or beyond the radius where the
    distortion model folds back. The nearest point (smallest
    z_cam; equal z_cam: smallest row index) wins a pixel, identically on CPU and CUDA.
    ``dilate=k >= 2`` grows each point into a k x k block (rows r - (k-1)//2 .. r + k//2,
    columns likewise) in which the nearest point still wins; 0 and 1 mean no dilation.
    The geometry is computed in float64 with element-wise ops (no matmul), so CPU and CUDA
    round identically.
    """
    device = resolve_device(points, device=device)
    H, W = int(size_hw[0]), int(size_hw[1])
    pts = as_tensor(points, device=device)
    if pts.ndim != 2 or pts.shape[1] < 4:
        raise ValueError(f"points must be N x >=4 (x, y, z, intensity), got shape "
                         f"{tuple(pts.shape)}")
    out = torch.zeros(3, H * W, dtype=torch.float32, device=device)
    if pts.shape[0] == 0 or H * W == 0:
        return out.view(3, H, W)
    K = as_tensor(K, torch.float64, device)
    T = as_tensor(T_cam_lidar, torch.float64, device)
    if tuple(K.shape) != (3, 3) or tuple(T.shape) not in ((4, 4), (3, 4)):
        raise ValueError(f"K must be 3x3 and T_cam_lidar 4x4 or 3x4, got {tuple(K.shape)} "
                         f"and {tuple(T.shape)}")

    x, y, z, inten = pts[:, :4].to(torch.float64).T.contiguous()
    xc = T[0, 0] * x + T[0, 1] * y + T[0, 2] * z + T[0, 3]
    yc = T[1, 0] * x + T[1, 1] * y + T[1, 2] * z + T[1, 3]
    zc = T[2, 0] * x + T[2, 1] * y + T[2, 2] * z + T[2, 3]
    if distortion is None:
        u = (K[0, 0] * xc + K[0, 1] * yc + K[0, 2] * zc) / zc + 0.5
        v = (K[1, 0] * xc + K[1, 1] * yc + K[1, 2] * zc) / zc + 0.5
        unfolded = True
    else:
        xd, yd, unfolded = distort(xc / zc, yc / zc, distortion)
        u = K[0, 0] * xd + K[0, 1] * yd + K[0, 2] + 0.5
        v = K[1, 0] * xd + K[1, 1] * yd + K[1, 2] + 0.5
    rng = torch.sqrt(x * x + y * y + z * z)
    # NaN fails every comparison, so non-finite x/y/z drop out here; intensity needs its own test.
    # Bounds are checked on floats before the cast to int64, which would overflow for huge u.
    valid = ((rng >= min_range) & (zc > 1e-6) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
             & torch.isfinite(rng) & torch.isfinite(inten) & unfolded)
    idx = valid.nonzero().squeeze(1)
    lin = v[idx].floor().long() * W + u[idx].floor().long()
    depth = zc[idx]

    # z-buffer, exact and deterministic (no last-write-wins): positive float64 bit patterns
    # sort like the values, so key = INT64_MAX - bits is positive and larger for nearer
    # points, and an int64 amax per pixel finds the nearest. The buffer borrows the first two
    # (still zero) output planes, 8 bytes per pixel, where 0 means "no point yet": no
    # image-sized temporary, and only the touched pixels need clearing afterwards.
    buf = out[:2].view(-1).view(torch.int64)
    key = _INT64_MAX - depth.view(torch.int64)
    buf.scatter_reduce_(0, lin, key, "amax")
    cand = (buf[lin] == key).nonzero().squeeze(1)
    buf[lin] = 0
    # Equal depths on one pixel: the smallest point index wins (a second amax).
    rank = cand.numel() - torch.arange(cand.numel(), device=device)
    buf.scatter_reduce_(0, lin[cand], rank, "amax")
    win = cand[buf[lin[cand]] == rank]
    buf[lin] = 0
    pix, sel = lin[win], idx[win]
    vals = torch.stack((rng[sel], inten[sel], z[sel])).to(torch.float32)

    if dilate < 2:
        out[:, pix] = vals
        return out.view(3, H, W)
    return _dilate(vals, pix, depth[win], H, W, int(dilate), out).view(3, H, W)


def _dilate(vals: torch.Tensor, pix: torch.Tensor, depth: torch.Tensor, H: int, W: int, k: int,
            out: torch.Tensor) -> torch.Tensor:
    """Grow each pixel (unique ``pix``) into a k x k block; the smallest depth wins overlaps."""
    # Rank the winners by depth (stable: ties keep index order) and min-filter the rank image:
    # exact integer priorities, no float ties, same result on every device.
    order = torch.sort(depth, stable=True).indices
    rank = torch.full((H * W,), _INT64_MAX, dtype=torch.int64, device=out.device)
    rank[pix[order]] = torch.arange(pix.numel(), device=out.device)
    top = k // 2  # block of a point at row r: rows r - (k-1)//2 .. r + k//2
    ranks = torch.full((H + k - 1, W + k - 1), _INT64_MAX, dtype=torch.int64, device=out.device)
    ranks[top:top + H, top:top + W] = rank.view(H, W)
    rows = ranks[:, 0:W]
    for d in range(1, k):
        rows = torch.minimum(rows, ranks[:, d:d + W])
    grown = rows[0:H]
    for d in range(1, k):
        grown = torch.minimum(grown, rows[d:d + H])
    grown = grown.reshape(-1)
    hit = (grown != _INT64_MAX).nonzero().squeeze(1)
    out[:, hit] = vals[:, order[grown[hit]]]
    return out


#: The scale of a normalised intensity: the sweep's percentile is mapped to this value, about
#: where the 95th lies in the synthetic MUSES-like sweeps (34 to 43 on the 0..255 scale), so a normalised input
#: stays near the statistics of anyseg_core.modalities.NORMALIZATION.
INTENSITY_REFERENCE = 40.0
#: ``lidar_intensity`` values: ``raw`` (as the sensor gave it) or ``pNN`` (normalised).
INTENSITY_MODES = ("raw", "pNN (1 <= NN <= 100), e.g. p95")


def intensity_percentile(mode: str) -> Optional[int]:
    """``raw`` -> None; ``pNN`` -> NN (1..100); anything else a ValueError."""
    if mode == "raw":
        return None
    if isinstance(mode, str) and mode[:1] == "p" and mode[1:].isdigit() \
            and 1 <= int(mode[1:]) <= 100:
        return int(mode[1:])
    raise ValueError(f"lidar intensity normalisation must be raw or pNN (a percentile, "
                     f"1..100, e.g. p95), got {mode!r}")


def normalize_intensity(image: torch.Tensor, mode: str = "raw") -> torch.Tensor:
    """The per-sweep intensity normalisation of a projected LiDAR image (``project_lidar``'s
    ``[3, H, W]``, raw units): with ``mode`` ``pNN`` every point's intensity is divided by
    the NN-th percentile (nearest rank) of the intensities of the sweep's points in the
    image, times :data:`INTENSITY_REFERENCE`. A sweep published at any intensity scale
    (0..1, 0..255, a 16-bit signal) gives the same image; ``raw`` (and a sweep without
    a positive percentile) leaves it as it is. Returns a new tensor (or ``image``)."""
    q = intensity_percentile(mode)
    if q is None:
        return image
    valid = image[0] > 0
    vals = image[1][valid]
    if vals.numel() == 0:
        return image
    k = max(1, -(-q * vals.numel() // 100))  # nearest rank: ceil(q / 100 * n)
    ref = torch.kthvalue(vals.to(torch.float64), k).values
    if not bool(ref > 0):
        return image
    out = image.clone()
    out[1][valid] = (vals.to(torch.float64) * (INTENSITY_REFERENCE / ref)).to(out.dtype)
    return out
