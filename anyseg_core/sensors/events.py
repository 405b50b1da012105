"""Event stream -> 3-channel event image (the MUSES encoding plus an optional recency channel)."""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from .distortion import Distortion, distort
from .geometry import ArrayLike, as_tensor, resolve_device

THIRD_CHANNELS = ("recency", "zero")
_Matrix = list[tuple[torch.Tensor, ...]]  # a 3x3 matrix as rows of 0-dim tensors


def render_events(x: ArrayLike, y: ArrayLike, t: ArrayLike, p: ArrayLike, size_hw: Sequence[int],
                  t_end: Optional[float | torch.Tensor] = None, window: float = 0.03,
                  warp: Optional[ArrayLike] = None, third: str = "recency",
                  distortion: Distortion = None, K: Optional[ArrayLike] = None,
                  device: Optional[torch.device | str] = None) -> torch.Tensor:
    """Accumulate the events of the window ``(t_end - window, t_end]`` into float32 ``[3, H, W]``.

    Channels: 0 number of positive events (p > 0; MUSES stores 1), 1 number of negative
    events (p <= 0; MUSES stores 0, -1 works too), 2 with ``third="recency"``:
    (t_last - (t_end - window)) / window in (0, 1] for the pixel's most recent event in the
    window, 0 where none; with ``third="zero"`` all zeros, as in MUSES. Counts are exact
    float32 integers (no clipping, no wrap-around).

    x, y: pixel coordinates (any integer or float dtype; floats are rounded to the nearest
    pixel). t: seconds, float, ideally float64 (absolute UNIX times need it; integer times,
    say microseconds, raise ValueError rather than be read as seconds); times are taken
    relative to ``t_end`` in float64. ``t_end`` defaults to max(t). ``warp``: optional 3x3
    homography from event-camera pixels (x, y, 1) to output pixels; warped coordinates are
    rounded with floor(u + 0.5). ``distortion`` (see :mod:`.distortion`): the output camera's
    lens distortion, applied after ``warp`` (which then maps to the undistorted pixels of
    ``K``, the output camera's intrinsics, required with it). Events landing outside
    [0, W) x [0, H) (or behind, w <= 0, or beyond the radius where the distortion model
    folds back) are dropped.
    """
    if third not in THIRD_CHANNELS:
        raise ValueError(f"third must be one of {THIRD_CHANNELS}, got {third!r}")
    if not window > 0:
        raise ValueError(f"window must be positive (seconds), got {window}")
    device = resolve_device(x, y, t, p, device=device)
    H, W = int(size_hw[0]), int(size_hw[1])
    x, y, t, p = (as_tensor(a, device=device).reshape(-1) for a in (x, y, t, p))
    n = t.numel()
    if not t.is_floating_point():
        raise ValueError(f"t must be float seconds (float64 for absolute times), got {t.dtype}: "
                         "convert integer timestamps first, e.g. microseconds * 1e-6")
    if not x.numel() == y.numel() == n == p.numel():
        raise ValueError(f"x, y, t, p must have one entry per event, got lengths "
                         f"{x.numel()}, {y.numel()}, {n}, {p.numel()}")
    if n == 0 or H * W == 0:
        return torch.zeros(3, H, W, dtype=torch.float32, device=device)

    # Negative polarity: p <= 0 (MUSES stores 0; -1/+1 streams work too). Unsigned tensors
    # lack comparisons on some devices; for them p <= 0 is simply "not p".
    negative = p <= 0 if p.is_signed() else ~p.bool()
    t_end = (t.max() if t_end is None else as_tensor(t_end, device=device)).to(torch.float64)
    Hm: Optional[_Matrix] = None
    if warp is not None:
        matrix = as_tensor(warp, torch.float64, device)
        if tuple(matrix.shape) != (3, 3):
            raise ValueError(f"warp must be a 3x3 homography, got shape {tuple(matrix.shape)}")
        Hm = [row.unbind() for row in matrix.unbind()]  # 0-dim entries, split once for all chunks
    lens: Optional[tuple[_Matrix, _Matrix, Distortion]] = None
    if distortion is not None:
        if K is None:
            raise ValueError("distortion needs K, the intrinsics of the output camera")
        K = as_tensor(K, torch.float64, device)
        if tuple(K.shape) != (3, 3):
            raise ValueError(f"K must be 3x3, got shape {tuple(K.shape)}")
        lens = ([r.unbind() for r in K.unbind()],
                [r.unbind() for r in torch.linalg.inv(K).unbind()], distortion)
    # Pass 1 computes every event's buffer slots. The work is memory bound: on CPU it runs in
    # chunks that keep the temporaries in cache; a GPU takes the stream at once.
    recency = third == "recency"
    counts_idx = torch.empty(n, dtype=torch.int64, device=device)
    recency_idx = torch.empty(n, dtype=torch.int64, device=device) if recency else None
    value = torch.empty(n, dtype=torch.float32, device=device) if recency else None
    chunk = _CPU_CHUNK if device.type == "cpu" else n
    for start in range(0, n, chunk):
        part = slice(start, start + chunk)
        _indices(x[part], y[part], t[part], negative[part], t_end, window, Hm, lens, H, W,
                 counts_idx[part], recency_idx[part] if recency else None,
                 value[part] if recency else None)
    # Pass 2 accumulates, one scatter per reduction over the whole stream (measured faster on
    # CPU than alternating them per chunk). Dropped events go to one spare slot past the three
    # image planes instead of being compacted away: no data-dependent sizes (no device sync),
    # and the image stays a contiguous prefix of the buffer.
    buf = torch.zeros(3 * H * W + 1, dtype=torch.float32, device=device)
    # scatter_add_ with a contiguous source is the fastest accumulation on CPU.
    buf.scatter_add_(0, counts_idx, torch.ones(n, dtype=torch.float32, device=device))
    if recency:
        buf.scatter_reduce_(0, recency_idx, value, "amax")
    return buf[:-1].view(3, H, W)


_CPU_CHUNK = 1 << 16


def _indices(x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, negative: torch.Tensor,
             t_end: torch.Tensor, window: float, Hm: Optional[_Matrix],
             lens: Optional[tuple[_Matrix, _Matrix, Distortion]], H: int, W: int,
             counts_idx: torch.Tensor, recency_idx: Optional[torch.Tensor],
             value: Optional[torch.Tensor]) -> None:
    """Write the buffer slots of a slice of events: ``counts_idx`` (plane 0 positive, plane 1
    negative), ``recency_idx`` (plane 2) with its ``value``; dropped events get the spare slot."""
    dt = t.to(torch.float64) - t_end  # relative times: absolute UNIX seconds keep precision
    keep = (dt > -window) & (dt <= 0)
    if (Hm is None and lens is None and not x.is_floating_point()
            and not y.is_floating_point()):
        # int32 arithmetic where that is lossless: half the memory traffic of int64.
        narrow = _INT32_SAFE.issuperset((x.dtype, y.dtype)) and 3 * H * W < 2**31
        col, row = (x.int(), y.int()) if narrow else (x.long(), y.long())
        keep &= (col < W) & (row < H)
        if not _UNSIGNED.issuperset((x.dtype, y.dtype)):
            keep &= (col >= 0) & (row >= 0)
        lin = row * W
        lin += col
    else:
        u, v = _warp(x.to(torch.float64), y.to(torch.float64), Hm)
        if lens is not None:
            u, v, unfolded = _distort_pixels(u, v, *lens)
            keep &= unfolded
        # Bounds on floats before the integer cast (which overflows for huge values); NaN fails.
        keep &= (u >= 0) & (u < W) & (v >= 0) & (v < H)
        lin = v.floor_().mul_(W).add_(u.floor_()).long()  # exact: whole numbers below 2**53
    drop = ~keep
    n_pix = H * W  # (lin may be int32; the sums are written to int64 outputs)
    torch.add(lin, negative, alpha=n_pix, out=counts_idx).masked_fill_(drop, 3 * n_pix)
    if recency_idx is not None:
        torch.add(lin, 2 * n_pix, out=recency_idx).masked_fill_(drop, 3 * n_pix)
        torch.div(dt.add_(window), window, out=value)


def _distort_pixels(u: torch.Tensor, v: torch.Tensor, K: _Matrix, K_inv: _Matrix,
                    distortion: Distortion) -> tuple[torch.Tensor, ...]:
    """Undistorted pixel coordinates + 0.5 -> distorted ones + 0.5, and where the model holds."""
    u, v = u - 0.5, v - 0.5
    xn = K_inv[0][0] * u + K_inv[0][1] * v + K_inv[0][2]
    yn = K_inv[1][0] * u + K_inv[1][1] * v + K_inv[1][2]
    xd, yd, ok = distort(xn, yn, distortion)
    return (K[0][0] * xd + K[0][1] * yd + K[0][2] + 0.5,
            K[1][0] * xd + K[1][1] * yd + K[1][2] + 0.5, ok)


#: Unsigned dtypes that convert to int64 losslessly (no negative values to test for).
_UNSIGNED = frozenset({torch.bool, torch.uint8, torch.uint16, torch.uint32})
#: Integer dtypes that convert to int32 losslessly.
_INT32_SAFE = frozenset({torch.bool, torch.uint8, torch.int8, torch.int16, torch.uint16,
                         torch.int32})


def _warp(x: torch.Tensor, y: torch.Tensor,
          Hm: Optional[_Matrix]) -> tuple[torch.Tensor, torch.Tensor]:
    """Output pixel coordinates + 0.5 (so that floor() rounds to the nearest pixel)."""
    if Hm is None:
        return x + 0.5, y + 0.5
    tmp = torch.empty_like(x)

    def row(i: int) -> torch.Tensor:
        # Separate multiply and add (no fused multiply-add) so CPU and CUDA round alike.
        out = torch.mul(x, Hm[i][0])
        out += torch.mul(y, Hm[i][1], out=tmp)
        out += Hm[i][2]
        return out

    w = row(2)
    w.masked_fill_(w <= 0, torch.nan)  # behind the target camera: NaN fails every bounds test
    return row(0).div_(w).add_(0.5), row(1).div_(w).add_(0.5)
