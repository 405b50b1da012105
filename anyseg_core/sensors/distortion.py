"""Lens distortion of the frame camera, in the models ROS's CameraInfo names.

The network sees the camera image as the camera publishes it. When that image is not
rectified, LiDAR points (and events of a separate event camera) must land where the distorted
image shows them: they are projected to normalised coordinates (x, y) = (X/Z, Y/Z), distorted
here, then mapped through K.

Models (``sensor_msgs/CameraInfo.distortion_model`` and its ``D``; OpenCV's formulas):
- ``plumb_bob``: k1, k2, p1, p2, k3 (4 or 5 numbers; k3 = 0 when absent);
- ``rational_polynomial``: k1, k2, p1, p2, k3, k4, k5, k6 (8 numbers);
- ``equidistant`` (fisheye): k1, k2, k3, k4 on the angle theta = atan(r).

A polynomial model folds back beyond the radius where the distorted radius stops growing;
points beyond it would land inside the image at a wrong place, so they are reported as
invalid (``ok`` False) and the projections drop them.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

#: model name -> accepted numbers of coefficients
MODELS = {"plumb_bob": (4, 5), "rational_polynomial": (8,), "equidistant": (4,)}

#: (model, coefficients) with at least one non-zero coefficient; None = no distortion.
Distortion = Optional[tuple[str, tuple[float, ...]]]


def check_distortion(model: str, coefficients: Sequence[float]) -> Distortion:
    """The distortion of a camera as ``(model, coefficients)``, or None when it has none
    (no coefficients, or all zero, whatever the model). Raises ValueError naming the model
    and the count when the model is unknown or has the wrong number of coefficients."""
    coeffs = tuple(float(c) for c in coefficients)
    if not any(coeffs):
        return None
    if not all(c == c and abs(c) != float("inf") for c in coeffs):
        raise ValueError(f"distortion coefficients must be finite, got {list(coeffs)}")
    if model not in MODELS:
        raise ValueError(f"distortion model {model!r} is not supported (non-zero D = "
                         f"{list(coeffs)}); supported: {', '.join(MODELS)}. Rectify the "
                         "image and use its projection matrix P (camera.rectified)")
    if len(coeffs) not in MODELS[model]:
        counts = " or ".join(str(n) for n in MODELS[model])
        raise ValueError(f"distortion model {model} takes {counts} coefficients, got "
                         f"{len(coeffs)}: {list(coeffs)}")
    return model, coeffs


def distort(x: torch.Tensor, y: torch.Tensor,
            distortion: Distortion) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Distorted normalised coordinates ``(xd, yd)`` of undistorted ``(x, y)`` (float64
    tensors), and ``ok``: False where the model has folded back (see the module's docstring)
    or the input is not finite. ``distortion`` is checked with :func:`check_distortion`."""
    if distortion is not None:
        distortion = check_distortion(*distortion)
    if distortion is None:
        return x, y, torch.isfinite(x) & torch.isfinite(y)
    model, c = distortion
    r2 = x * x + y * y
    if model == "equidistant":
        r = torch.sqrt(r2)
        theta = torch.atan(r)
        t2 = theta * theta
        k1, k2, k3, k4 = c
        poly = 1 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4)))
        # d(theta * poly)/d(theta) > 0: the distorted angle still grows.
        ok = 1 + t2 * (3 * k1 + t2 * (5 * k2 + t2 * (7 * k3 + t2 * 9 * k4))) > 0
        # theta_d / r, with its limit 1 at the optical axis.
        scale = torch.where(r > 1e-12, theta * poly / r.clamp_min(1e-12),
                            torch.ones_like(r))
        return x * scale, y * scale, ok & torch.isfinite(scale)
    k1, k2, p1, p2 = c[:4]
    k3 = c[4] if len(c) > 4 else 0.0
    num = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    d_num = r2 * (2 * k1 + r2 * (4 * k2 + r2 * 6 * k3))  # r * d(num)/dr
    if model == "rational_polynomial":
        k4, k5, k6 = c[5:8]
        den = 1 + r2 * (k4 + r2 * (k5 + r2 * k6))
        d_den = r2 * (2 * k4 + r2 * (4 * k5 + r2 * 6 * k6))
    else:
        den, d_den = torch.ones_like(r2), torch.zeros_like(r2)
    radial = num / den
    # d(r * num / den)/dr > 0  <=>  (num + r num') den - r num den' > 0 (den > 0 too).
    ok = ((num + d_num) * den - num * d_den > 0) & (den > 0)
    xy = x * y
    xd = x * radial + 2 * p1 * xy + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * xy
    return xd, yd, ok & torch.isfinite(xd) & torch.isfinite(yd)
