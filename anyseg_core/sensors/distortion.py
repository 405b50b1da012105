"""Lens distortion of the frame camera, in the models ROS's CameraInfo names.

The network sees the camera image as the camera publishes it. When that image is not
rectified, LiDAR points (and events of a separate event camera) must land where the distorted
image shows them: they are projected to normalised coordinates (x, y) = (X/Z, Y/Z), distorted
here, then mapped through K.

Models (``sensor_msgs/CameraInfo.distortion_model`` and its ``D``; OpenCV's formulas):
- ``plumb_bob``: k1, k2, p1, p2, k3 (4 or 5 numbers; k3 = 0 when absent);
- ``rational_polynomial``: k1, k2, p1, p2, k3, k4, k5, k6 (8 numbers);
- ``equidistant`` (fisheye): k1, k2, k3, k4 on the angle theta = atan(r).

A polynomial model folds back beyond the radius where the distorted radius first stops
growing (and may rise again further out); points beyond that radius would land inside the
image at a wrong place, so they are reported as invalid (``ok`` False) and the projections
drop them (:func:`valid_limit`).
"""
from __future__ import annotations

import functools
from typing import Optional, Sequence

import numpy as np
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


@functools.lru_cache(maxsize=64)
def valid_limit(model: str, coefficients: tuple[float, ...]) -> float:
    """Where a model stops being usable, as the largest valid r² = (x² + y²) of undistorted
    normalised coordinates (``equidistant``: of theta², the angle off the axis squared);
    ``inf`` when it never folds.

    That is the first radius where the distorted radius stops growing (its derivative's
    smallest positive root), or where the rational model's denominator reaches 0. Beyond it
    the model may rise again (k1 < 0 < k2, say) and map far-off points back into the image,
    so a pointwise test of the derivative is not enough. Tangential terms are left out, as
    OpenCV's own validity checks do."""
    P = np.polynomial.polynomial
    k = list(coefficients)
    if model == "equidistant":  # d(theta (1 + k1 t + ... + k4 t^4))/d(theta), t = theta^2
        grow = [1.0, 3 * k[0], 5 * k[1], 7 * k[2], 9 * k[3]]
        limits = [grow]
    else:  # s = r^2: num = 1 + k1 s + k2 s^2 + k3 s^3, den likewise with k4..k6
        k3 = k[4] if len(k) > 4 else 0.0
        num = [1.0, k[0], k[1], k3]
        r_num = [0.0, 2 * k[0], 4 * k[1], 6 * k3]  # r d(num)/dr, in s
        den, r_den = [1.0], [0.0]
        if model == "rational_polynomial":
            den = [1.0, k[5], k[6], k[7]]
            r_den = [0.0, 2 * k[5], 4 * k[6], 6 * k[7]]
        # d(r num / den)/dr > 0  <=>  (num + r num') den - num (r den') > 0
        grow = P.polysub(P.polymul(P.polyadd(num, r_num), den), P.polymul(num, r_den))
        limits = [grow, den]
    first = np.inf
    for poly in limits:
        roots = P.polyroots(np.trim_zeros(np.asarray(poly, dtype=np.float64), "b")) \
            if np.any(np.asarray(poly[1:]) != 0) else []
        for root in roots:
            if abs(root.imag) <= 1e-9 * max(1.0, abs(root.real)) and root.real > 0:
                first = min(first, float(root.real))
    return first


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
        ok = t2 < valid_limit(model, c)
        # theta_d / r, with its limit 1 at the optical axis.
        scale = torch.where(r > 1e-12, theta * poly / r.clamp_min(1e-12),
                            torch.ones_like(r))
        return x * scale, y * scale, ok & torch.isfinite(scale)
    k1, k2, p1, p2 = c[:4]
    k3 = c[4] if len(c) > 4 else 0.0
    num = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    if model == "rational_polynomial":
        k4, k5, k6 = c[5:8]
        radial = num / (1 + r2 * (k4 + r2 * (k5 + r2 * k6)))
    else:
        radial = num
    ok = r2 < valid_limit(model, c)
    xy = x * y
    xd = x * radial + 2 * p1 * xy + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * xy
    return xd, yd, ok & torch.isfinite(xd) & torch.isfinite(yd)
