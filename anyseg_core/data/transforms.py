"""Training augmentation, applied jointly to every modality and the label.

Geometric (all modalities and the label): random rescale by a factor in ``scale`` then a
random crop back to the input size (padding with "no data" where the rescaled image is
smaller; label padding 255), horizontal flip. Photometric (camera only): Gaussian blur and
colour jitter. Every modality is rescaled as its dataset's inference path resizes it
(``rescale``, :data:`RESCALE_POLICIES`), and none but the camera is ever blurred. Raw sensor
data (:data:`SENSOR_RESCALE`: synthetic world, MUSES) is drawn as the sensors would draw it
at the new scale: shrinking keeps one real sample per output pixel (the nearest LiDAR or
depth return, the pixel with the most events), as
:func:`~anyseg_core.sensors.resize_modality` does for inference, instead of a plain nearest
neighbour that would drop most LiDAR points; enlarging puts each LiDAR or event pixel at one
output pixel (a projection at a higher resolution draws single points, not blocks), while
depth is enlarged by nearest neighbour. DELIVER's images follow ``deliver_inputs``: its depth
(HHA) dense, its LiDAR and event images by the largest sum, enlarged by nearest neighbour.

Randomness comes from an explicit ``torch.Generator``, so an item's augmentation depends
only on (seed, epoch, index): training resumes exactly and DataLoader workers agree.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F

from ..modalities import CAMERA, DEPTH, EVENTS, IGNORE_INDEX, LIDAR
from ..sensors import (denormalize, normalization_of, normalize, resize_dense, resize_nearest,
                       resize_sparse)


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _empty_value(modality: str, normalization: Mapping | None = None) -> torch.Tensor:
    """The normalised value of a pixel without data (raw zeros) under ``normalization``
    (modality -> (mean, std); default the raw-sensor table); the camera pads with its mean,
    0 once normalised."""
    if modality == CAMERA:
        return torch.zeros(3)
    mean, std = (normalization[modality] if normalization is not None
                 else normalization_of(modality))
    return -torch.tensor(mean) / torch.tensor(std)


#: How each modality is rescaled: ``dense`` (bilinear, antialiased when shrinking), or a
#: sparse rule named by what wins a block when shrinking (``nearest``: the smallest channel
#: 0, a range or depth; ``busiest``: the largest raw channel sum, events) and how it
#: enlarges (``point``: each pixel drawn at one output pixel, as a sensor projected at a
#: higher resolution; ``block``: nearest neighbour).
RESCALE_POLICIES = ("dense", "nearest_point", "busiest_point", "nearest_block", "busiest_block")
#: Raw sensor data (synthetic world, MUSES), as inference draws it at another size.
SENSOR_RESCALE = {CAMERA: "dense", LIDAR: "nearest_point", EVENTS: "busiest_point",
                  DEPTH: "nearest_block"}


def _resize_sensor(x: torch.Tensor, policy: str, size_hw: tuple[int, int], fill: torch.Tensor,
                   mean_std: tuple) -> torch.Tensor:
    """Rescale a normalised sparse image ``[3, H, W]`` to ``size_hw`` by ``policy`` (one of
    :data:`RESCALE_POLICIES` but ``dense``). ``fill``: the normalised "no data" value per
    channel; ``mean_std``: the modality's normalisation, to rank blocks by raw values."""
    H, W = x.shape[-2:]
    h, w = size_hw
    if (H, W) == (h, w):
        return x
    fill = fill.to(x).view(-1, 1, 1)
    empty = ((x - fill).abs() <= 1e-5 * (1 + fill.abs())).all(0)
    if policy.startswith("busiest"):  # the largest raw sum, as resize_sparse's "sum"
        mean, std = mean_std
        priority = (x * x.new_tensor(std).view(-1, 1, 1)
                    + x.new_tensor(mean).view(-1, 1, 1)).sum(0)
    else:  # the nearest return: the smallest channel 0 (normalising keeps the order)
        priority = -x[0]
    priority = priority.masked_fill(empty, -torch.inf)
    if policy.endswith("_point") and (h > H or w > W):
        # Each pixel to the one output pixel that holds its centre (the growing axes only);
        # resize_sparse then only shrinks.
        gh, gw = max(h, H), max(w, W)
        rows = ((2 * torch.arange(H) + 1) * gh) // (2 * H)
        cols = ((2 * torch.arange(W) + 1) * gw) // (2 * W)
        grown = fill.expand(x.shape[0], gh, gw).clone()
        grown[:, rows[:, None], cols[None, :]] = x
        grown_priority = priority.new_full((gh, gw), -torch.inf)
        grown_priority[rows[:, None], cols[None, :]] = priority
        x, priority = grown, grown_priority
    return resize_sparse(x, (h, w), priority=priority)


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(round(2.5 * sigma)))
    k = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (k / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[0]
    y = F.conv2d(F.pad(x[None], (radius, radius, 0, 0), mode="reflect"),
                 k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"),
                 k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return y[0]


def _color_jitter(rgb: torch.Tensor, g: torch.Generator, amount: float = 0.3) -> torch.Tensor:
    """Brightness, contrast and saturation jitter on [0, 1] RGB."""
    b = _uniform(g, 1 - amount, 1 + amount)
    c = _uniform(g, 1 - amount, 1 + amount)
    s = _uniform(g, 1 - amount, 1 + amount)
    x = rgb * b
    # Mean of the per-channel means: the same value as x.mean() for a [3, H, W] image, but a
    # whole-tensor mean on the CPU is summed in chunks that depend on the number of threads,
    # while a per-channel mean is summed by one thread each; DataLoader workers (1 thread)
    # and the main process must prepare identical samples.
    mean = x.mean(dim=(-2, -1), keepdim=True).mean(dim=-3, keepdim=True)
    x = (x - mean) * c + mean
    grey = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]
    x = (x - grey) * s + grey
    return x.clamp(0, 1)


class JointAugment:
    """Callable on ``(inputs, label, generator)`` -> augmented ``(inputs, label)``; inputs are
    normalised ``[3, H, W]`` tensors keyed by modality, label ``[H, W]`` int64.

    ``normalization``: the dataset's modality -> (mean, std), which decides the "no data"
    padding value (raw zeros, normalised); default the raw-sensor table of
    :data:`anyseg_core.modalities.NORMALIZATION` (DELIVER's images have their own).
    ``rescale``: modality -> one of :data:`RESCALE_POLICIES`, over :data:`SENSOR_RESCALE`;
    each dataset rescales as its inference path resizes (``rescale_info``)."""

    def __init__(self, scale: Sequence[float] = (0.5, 2.0), flip: bool = True,
                 blur_p: float = 0.2, color_jitter_p: float = 0.2,
                 normalization: Mapping | None = None,
                 rescale: Mapping[str, str] | None = None) -> None:
        self.scale = (float(scale[0]), float(scale[1]))
        self.flip = flip
        self.blur_p = blur_p
        self.color_jitter_p = color_jitter_p
        self.normalization = normalization
        self.rescale = {**SENSOR_RESCALE, **(rescale or {})}
        bad = {m: p for m, p in self.rescale.items() if p not in RESCALE_POLICIES}
        if bad:
            raise ValueError(f"rescale policies must be among {RESCALE_POLICIES}, got {bad}")

    @classmethod
    def from_config(cls, cfg: Mapping, normalization: Mapping | None = None,
                    rescale: Mapping[str, str] | None = None) -> "JointAugment":
        return cls(cfg["scale"], cfg["flip"], cfg["blur_p"], cfg["color_jitter_p"],
                   normalization, rescale)

    def __call__(self, inputs: dict[str, torch.Tensor], label: torch.Tensor,
                 g: torch.Generator) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        H, W = label.shape
        r = _uniform(g, *self.scale)
        h, w = max(1, round(H * r)), max(1, round(W * r))
        # Crop window in the rescaled image (negative offsets = padding).
        top = int(torch.randint(0, abs(h - H) + 1, (), generator=g))
        left = int(torch.randint(0, abs(w - W) + 1, (), generator=g))
        top = top if h >= H else -top
        left = left if w >= W else -left
        flip = self.flip and bool(torch.rand((), generator=g) < 0.5)
        out = {}
        for mod, x in inputs.items():
            fill = _empty_value(mod, self.normalization).to(x)
            policy = self.rescale.get(mod, "nearest_block")
            if policy == "dense":
                x = resize_dense(x, (h, w))
            else:
                mean_std = (self.normalization[mod] if self.normalization is not None
                            else normalization_of(mod))
                x = _resize_sensor(x, policy, (h, w), fill, mean_std)
            out[mod] = _flip(_crop(x, top, left, H, W, fill), flip)
        lab = resize_nearest(label, (h, w))
        lab = _flip(_crop(lab[None], top, left, H, W, torch.tensor([IGNORE_INDEX]))[0], flip)
        if CAMERA in out:
            cam = out[CAMERA]
            jitter = bool(torch.rand((), generator=g) < self.color_jitter_p)
            blur = bool(torch.rand((), generator=g) < self.blur_p)
            sigma = _uniform(g, 0.1, 2.0)
            if jitter:
                cam = normalize(_color_jitter(denormalize(cam, CAMERA), g), CAMERA)
            if blur:
                cam = _gaussian_blur(cam, sigma)
            out[CAMERA] = cam
        return out, lab


def _crop(x: torch.Tensor, top: int, left: int, H: int, W: int, fill: torch.Tensor) -> torch.Tensor:
    """Window [top, top+H) x [left, left+W) of ``x`` [C, h, w]; outside is ``fill`` per channel."""
    C, h, w = x.shape
    out = fill.to(x.dtype).view(-1, 1, 1).expand(C, H, W).clone()
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + H, h), min(left + W, w)
    if y1 > y0 and x1 > x0:
        out[:, y0 - top:y1 - top, x0 - left:x1 - left] = x[:, y0:y1, x0:x1]
    return out


def _flip(x: torch.Tensor, flip: bool) -> torch.Tensor:
    return x.flip(-1) if flip else x
