"""Small pictures of sensor data, network inputs and labels (uint8 RGB numpy images).

Used by the demo, evaluation montages and docs. OpenCV only for colour maps, text and PNG
writing; everything returns H x W x 3 uint8 RGB.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .modalities import CITYSCAPES_PALETTE, IGNORE_INDEX

try:
    import cv2
except ImportError as err:  # pip installs without the `cv` extra have no OpenCV
    raise ImportError("anyseg_core.viz needs OpenCV: pip install 'anyseg_ros[cv]' "
                      "(or apt install python3-opencv on a ROS machine)") from err


def to_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def colorize_labels(label, palette: Sequence[Sequence[int]] = CITYSCAPES_PALETTE) -> np.ndarray:
    """Train ids -> RGB via ``palette``; ignore (255) and unknown ids are black."""
    lut = np.zeros((256, 3), np.uint8)
    lut[: len(palette)] = np.asarray(palette, np.uint8)
    lut[IGNORE_INDEX] = 0
    ids = to_numpy(label).astype(np.int64)
    return lut[np.where((ids >= 0) & (ids < 256), ids, IGNORE_INDEX)]


def colormap(values, vmin: float | None = None, vmax: float | None = None,
             cmap: int = cv2.COLORMAP_TURBO, empty=None) -> np.ndarray:
    """A scalar map as colours; pixels where ``empty`` is true (default: value == 0) are black."""
    v = to_numpy(values).astype(np.float32)
    mask = (v == 0) if empty is None else to_numpy(empty).astype(bool)
    vals = v[~mask] if (~mask).any() else v.ravel()
    lo = float(np.percentile(vals, 1)) if vmin is None else vmin
    hi = float(np.percentile(vals, 99)) if vmax is None else vmax
    scaled = np.clip((v - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = cv2.applyColorMap((scaled * 255).astype(np.uint8), cmap)[..., ::-1].copy()
    rgb[mask] = 0
    return rgb


def event_image(pos, neg) -> np.ndarray:
    """Positive events blue, negative red, on white (the common convention), from counts."""
    pos, neg = to_numpy(pos).astype(np.float32), to_numpy(neg).astype(np.float32)
    img = np.full(pos.shape + (3,), 255, np.uint8)
    img[neg > pos] = (220, 30, 30)
    img[pos > neg] = (30, 60, 220)
    img[(pos > 0) & (pos == neg)] = (60, 60, 60)
    return img


def events_to_image(x, y, p, hw: tuple[int, int]) -> np.ndarray:
    """Raw events in their own sensor grid (no window, no warp)."""
    H, W = hw
    x, y, p = to_numpy(x).astype(np.int64), to_numpy(y).astype(np.int64), to_numpy(p)
    ok = (x >= 0) & (x < W) & (y >= 0) & (y < H)
    pos = np.bincount((y * W + x)[ok & (p > 0)], minlength=H * W).reshape(H, W)
    neg = np.bincount((y * W + x)[ok & (p == 0)], minlength=H * W).reshape(H, W)
    return event_image(pos, neg)


def lidar_bev(points, size: int = 288, extent: float = 60.0) -> np.ndarray:
    """Bird's-eye view of a point cloud in its own frame (x forward = up in the picture),
    coloured by intensity; the sensor sits at the bottom centre."""
    pts = to_numpy(points)
    img = np.zeros((size, size, 3), np.uint8)
    if pts.shape[0] == 0:
        return img
    scale = size / extent
    u = (size / 2 - pts[:, 1] * scale).astype(np.int64)
    v = (size - 1 - pts[:, 0] * scale).astype(np.int64)
    ok = (u >= 0) & (u < size) & (v >= 0) & (v < size)
    inten = np.clip(pts[ok, 3] / max(np.percentile(pts[ok, 3], 99), 1e-6), 0, 1) \
        if ok.any() else np.zeros(0)
    colours = cv2.applyColorMap((inten * 255).astype(np.uint8).reshape(-1, 1),
                                cv2.COLORMAP_TURBO)[:, 0, ::-1]
    img[v[ok], u[ok]] = colours
    return img


def fit(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Resize for display (nearest for small sparse pictures keeps single pixels visible)."""
    if img.shape[:2] == tuple(hw):
        return img
    return cv2.resize(img, (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST)


def titled(img: np.ndarray, title: str) -> np.ndarray:
    bar = np.full((20, img.shape[1], 3), 32, np.uint8)
    cv2.putText(bar, title, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (235, 235, 235), 1,
                cv2.LINE_AA)
    return np.concatenate([bar, img], 0)


def grid(rows: Sequence[Sequence[np.ndarray]], pad: int = 4) -> np.ndarray:
    """Tile images (same size within a row is not required: each cell is padded)."""
    h = max(im.shape[0] for row in rows for im in row)
    w = max(im.shape[1] for row in rows for im in row)
    n_cols = max(len(row) for row in rows)
    canvas = np.full((len(rows) * (h + pad) + pad, n_cols * (w + pad) + pad, 3), 16, np.uint8)
    for r, row in enumerate(rows):
        for c, im in enumerate(row):
            y0, x0 = pad + r * (h + pad), pad + c * (w + pad)
            canvas[y0:y0 + im.shape[0], x0:x0 + im.shape[1]] = im
    return canvas


def save_png(path: str | Path, rgb: np.ndarray) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1])):
        raise OSError(f"could not write {path}")
    return path
