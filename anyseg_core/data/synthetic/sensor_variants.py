"""Other sensors than the MUSES-like rig: named evaluation rigs and a random rig per scene.

A network trained on one rig learns that rig: MUSES' forward 32-ring MEMS LiDAR with its
intensity response, one camera lens and colour response. To train for other sensors and to
measure how a checkpoint transfers, the world can render each scene with another rig:

- :data:`NAMED_RIGS`: fixed rigs for evaluation (``muses`` is the default
  :class:`~.rig.RigConfig`; an HDL-64E-like unit as on KITTI's car, a 16-ring and a
  128-ring spinning unit, a wide camera with another colour response, KITTI's pair).
- :func:`random_rig`: a rig drawn per scene from the sample's seed (LiDAR models from 16 to
  128 rings, forward and 360° units, their vertical fields of view, mounting height and
  pitch, intensity response and scale, dropout; the camera's field of view, height, pitch,
  exposure, white balance, gamma, saturation, blur, noise, JPEG quality and the objects'
  materials). Its random stream is its own, so the scene, the condition and every sensor's
  noise stream are those of the MUSES-like rig for the same seed.
- :func:`rig_for`: ``data.rig`` (``muses`` | ``random`` | a named rig) and a sample seed ->
  the rig that renders that sample.

The camera helpers (:func:`gaussian_blur_image`, :func:`jpeg_roundtrip`,
:func:`jitter_materials`) are what :func:`~.rig.expose` and :func:`~.rig.render_frame` call
when a rig asks for them; docs/synthetic-world.md has the table of rigs.
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from .rig import RigConfig
from .scene import Scene

#: ``data.rig`` values besides the named rigs: the default rig, and one drawn per scene.
RIG_MODES = ("muses", "random")


def _hdl64_elevations() -> tuple[float, ...]:
    """An HDL-64E's 64 lasers: the upper block from +2.0° down to -8.33° in 1/3° steps, the
    lower block from -8.83° to -24.33° in 1/2° steps (rounded from Velodyne's manual)."""
    upper = 2.0 - np.arange(32) / 3.0
    lower = -8.83 - 0.5 * np.arange(32)
    return tuple(float(round(v, 3)) for v in sorted(np.concatenate([upper, lower])))


#: Rigs to evaluate on (and train on, with data.rig=<name>). Heights above the road: the
#: LiDAR's is camera_height + lidar_offset[2].
NAMED_RIGS: dict[str, RigConfig] = {
    "muses": RigConfig(),
    # Velodyne HDL-64E on a car roof as in KITTI: 360°, 64 rings from +2° to -24.3°,
    # 1.73 m above the road, 0.27 m behind the camera (1.65 m high); intensity 0..1.
    "hdl64": RigConfig(name="hdl64", lidar_elevations=_hdl64_elevations(),
                       lidar_rings=64, lidar_elevation_deg=(-24.33, 2.0),
                       lidar_hfov_deg=360.0, lidar_columns=2048, camera_height=1.65,
                       lidar_offset=(-0.27, 0.0, 0.08), lidar_rpy_deg=(0.0, 0.0, 0.0),
                       lidar_intensity_scale=1 / 255),
    # A 16-ring spinning unit (VLP-16-like, +-15°) on a roof rack, 1.95 m high, with a
    # flatter intensity response on the 0..255 scale.
    "vlp16": RigConfig(name="vlp16", lidar_rings=16, lidar_elevation_deg=(-15.0, 15.0),
                       lidar_hfov_deg=360.0, lidar_columns=1800,
                       lidar_offset=(-0.5, 0.0, 0.40), lidar_rpy_deg=(0.0, 0.0, 0.0),
                       lidar_intensity_gamma=0.7, lidar_intensity_gain=0.8),
    # A 128-ring spinning unit (OS1-128-like, +-22.5°), 1.80 m high, pitched 1° down, with
    # a steeper response (gamma 1.4) published at 8 times the 0..255 scale.
    "os128": RigConfig(name="os128", lidar_rings=128, lidar_elevation_deg=(-22.5, 22.5),
                       lidar_hfov_deg=360.0, lidar_columns=1024,
                       lidar_offset=(-0.4, 0.0, 0.25), lidar_rpy_deg=(0.0, 1.0, 0.0),
                       lidar_intensity_gamma=1.4, lidar_intensity_scale=8.0),
    # The MUSES-like LiDAR with a wide camera of another make: 100° lens, warm white
    # balance, gamma 2.0, less saturated, brighter, blurrier, noisier, JPEG at quality 60,
    # and other paints and materials.
    "wide_camera": RigConfig(name="wide_camera", hfov_deg=100.0, camera_exposure=1.3,
                             camera_white_balance=(1.15, 1.0, 0.82), camera_gamma=2.0,
                             camera_saturation=0.75, camera_noise=2.0, camera_blur=0.7,
                             camera_jpeg_quality=60, material_jitter=0.2),
    # KITTI's pair: the HDL-64E above with a camera of KITTI's field of view (81°),
    # nearly level, 1.65 m high, a little less saturated.
    "kitti": RigConfig(name="kitti", lidar_elevations=_hdl64_elevations(),
                       lidar_rings=64, lidar_elevation_deg=(-24.33, 2.0),
                       lidar_hfov_deg=360.0, lidar_columns=2048, camera_height=1.65,
                       camera_pitch_deg=0.5, hfov_deg=81.0,
                       lidar_offset=(-0.27, 0.0, 0.08), lidar_rpy_deg=(0.0, 0.0, 0.0),
                       lidar_intensity_scale=1 / 255, camera_saturation=0.85,
                       camera_gamma=2.4),
}

#: What random_rig draws from (documented in docs/synthetic-world.md).
RANDOM_LIDARS = (16, 32, 64, 128)


def random_rig(seed: int, base: RigConfig | None = None) -> RigConfig:
    """A rig drawn from ``seed`` (a sample's seed): the same seed, the same rig.

    ``base`` gives what is not drawn (image size, event camera, sweep period, range). The
    draws come from their own stream, (seed, 0x5E45), and leave the sample's other streams
    alone."""
    base = base or RigConfig()
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5E45]))
    u = rng.uniform
    rings = int(rng.choice(RANDOM_LIDARS))
    spinning = bool(u() < 0.5)
    # Vertical field of view: a lower and an upper limit (wider units for more rings).
    lower = -float(u(10.0, 26.0))
    upper = float(u(-2.0, 2.0) + (u(0.0, 20.0) if u() < 0.4 else u(0.0, 8.0)))
    upper = max(upper, lower + max(10.0, 0.2 * (rings - 1)))  # rings 0.2° apart or more
    if spinning:
        hfov, res = 360.0, float(u(0.15, 0.4))
        lidar_h = float(u(1.4, 2.1))                  # roof
        offset_xy = (float(u(-1.2, 0.0)), float(u(-0.2, 0.2)))
    else:
        hfov, res = float(u(90.0, 150.0)), float(u(0.15, 0.35))
        lidar_h = float(u(0.6, 2.0))                  # bumper to roof
        offset_xy = (float(u(-0.6, 1.5)), float(u(-0.3, 0.3)))
    columns = max(64, int(round(hfov / res)))
    cam_h = float(u(1.3, 1.8))
    pitch = float(u(-3.0, 4.0))                       # the LiDAR's, degrees, positive down
    # Intensity: response curve and gain, then the scale a driver publishes (0..1, 0..255,
    # 16-bit signal, or anything between).
    scale_kind = rng.choice(["unit", "byte", "wide"], p=[0.35, 0.35, 0.3])
    scale = {"unit": 1 / 255, "byte": 1.0}.get(str(scale_kind), float(np.exp(u(
        math.log(1 / 255), math.log(16.0)))))
    wb = np.exp(u(-0.15, 0.15, 3))
    wb = wb / wb[1]
    return replace(
        base, name="random", lidar_rings=rings, lidar_elevations=None,
        lidar_elevation_deg=(lower, upper), lidar_hfov_deg=hfov, lidar_columns=columns,
        lidar_offset=(offset_xy[0], offset_xy[1], lidar_h - cam_h),
        lidar_rpy_deg=(float(u(-1.0, 1.0)), pitch, float(u(-2.0, 2.0))),
        lidar_intensity_gamma=float(np.exp(u(math.log(0.6), math.log(1.6)))),
        lidar_intensity_gain=float(u(0.6, 1.4)), lidar_intensity_scale=scale,
        lidar_dropout=float(u(0.0, 0.15)),
        hfov_deg=float(u(55.0, 100.0)), camera_height=cam_h,
        camera_pitch_deg=float(u(-1.0, 6.0)),
        camera_exposure=float(np.exp(u(math.log(0.6), math.log(1.7)))),
        camera_white_balance=tuple(float(v) for v in wb),
        camera_gamma=float(u(1.8, 2.6)), camera_saturation=float(u(0.6, 1.3)),
        camera_noise=float(np.exp(u(math.log(0.5), math.log(3.0)))),
        camera_blur=float(u(0.3, 1.3)) if u() < 0.5 else 0.0,
        camera_jpeg_quality=int(u(25, 95)) if u() < 0.5 else 0,
        material_jitter=float(u(0.0, 0.3)))


def rig_names() -> list[str]:
    """Every value ``data.rig`` takes."""
    return list(dict.fromkeys([*RIG_MODES, *NAMED_RIGS]))


def check_rig(name: str) -> str:
    """``name`` if ``data.rig`` accepts it, else ValueError naming the choices."""
    if name not in rig_names():
        raise ValueError(f"unknown rig {name!r}; expected one of {rig_names()}")
    return name


def rig_for(name: str, seed: int, base: RigConfig) -> RigConfig:
    """The rig that renders the sample of ``seed`` under ``data.rig=name``: ``base`` itself
    for ``muses``, a named rig (with ``base``'s image size and event window), or
    :func:`random_rig`."""
    check_rig(name)
    if name == "muses":
        return base
    if name == "random":
        return random_rig(seed, base)
    return replace(NAMED_RIGS[name], image_hw=base.image_hw, event_window=base.event_window)


# --------------------------------------------------------------------------- camera helpers


def gaussian_blur_image(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of an [H, W, C] float image (reflected borders): the lens."""
    radius = max(1, int(math.ceil(3.0 * sigma)))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k = (k / k.sum()).astype(np.float32)
    out = img.astype(np.float32)
    for axis in (0, 1):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius, radius)
        p = np.pad(out, pad, mode="reflect")
        n = out.shape[axis]
        acc = np.zeros_like(out)
        for i, w in enumerate(k):
            acc += w * np.take(p, np.arange(i, i + n), axis=axis)
        out = acc
    return out


def _dct_matrix(n: int = 8) -> np.ndarray:
    k = np.arange(n)
    d = np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n)) * math.sqrt(2 / n)
    d[0] /= math.sqrt(2)
    return d


# JPEG's example quantisation tables (ITU-T T.81, Annex K).
_Q_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], float).reshape(8, 8)
_Q_CHROMA = np.full((8, 8), 99.0)
_Q_CHROMA[:4, :4] = np.array([17, 18, 24, 47, 18, 21, 26, 66, 24, 26, 56, 99, 47, 66, 99, 99],
                             float).reshape(4, 4)


def _quant(table: np.ndarray, quality: int) -> np.ndarray:
    q = int(np.clip(quality, 1, 100))
    scale = 5000 / q if q < 50 else 200 - 2 * q
    return np.clip(np.floor((table * scale + 50) / 100), 1, 255)


def _blocks_roundtrip(x: np.ndarray, table: np.ndarray) -> np.ndarray:
    """8x8 block DCT, quantisation by ``table``, inverse DCT of a 2-D float plane."""
    H, W = x.shape
    Hp, Wp = -(-H // 8) * 8, -(-W // 8) * 8
    p = np.pad(x, ((0, Hp - H), (0, Wp - W)), mode="edge")
    b = p.reshape(Hp // 8, 8, Wp // 8, 8).transpose(0, 2, 1, 3)
    d = _dct_matrix()
    c = d @ b @ d.T
    c = np.round(c / table) * table
    b = d.T @ c @ d
    return b.transpose(0, 2, 1, 3).reshape(Hp, Wp)[:H, :W]


def jpeg_roundtrip(img: np.ndarray, quality: int) -> np.ndarray:
    """uint8 [H, W, 3] RGB through baseline JPEG's lossy steps (YCbCr, 4:2:0 chroma, 8x8 DCT
    quantised with the standard tables at ``quality``) and back: its blocks, ringing and
    colour bleeding, without an encoder library."""
    x = img.astype(np.float64)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
    H, W = y.shape
    y = _blocks_roundtrip(y - 128, _quant(_Q_LUMA, quality)) + 128
    chroma = []
    for c in (cb, cr):
        Hp, Wp = -(-H // 2) * 2, -(-W // 2) * 2
        p = np.pad(c, ((0, Hp - H), (0, Wp - W)), mode="edge")
        small = p.reshape(Hp // 2, 2, Wp // 2, 2).mean((1, 3))
        small = _blocks_roundtrip(small - 128, _quant(_Q_CHROMA, quality)) + 128
        chroma.append(np.repeat(np.repeat(small, 2, 0), 2, 1)[:H, :W])
    cb, cr = chroma
    out = np.stack([y + 1.402 * (cr - 128),
                    y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128),
                    y + 1.772 * (cb - 128)], -1)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def jitter_materials(scene: Scene, amount: float, seed: int) -> Scene:
    """``scene`` with each object's albedo scaled per channel by U(1 - amount, 1 + amount)
    (clipped to [0, 1]), from the stream (seed, 0x3A7): other paints and materials, the
    same geometry, labels and LiDAR reflectivity."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x3A7]))

    def vary(prims):
        f = rng.uniform(1 - amount, 1 + amount, prims.color.shape).astype(prims.color.dtype)
        return replace(prims, color=np.clip(prims.color * f, 0.0, 1.0))

    return replace(scene, boxes=vary(scene.boxes), cylinders=vary(scene.cylinders))


__all__ = ["NAMED_RIGS", "RIG_MODES", "check_rig", "gaussian_blur_image", "jitter_materials",
           "jpeg_roundtrip", "random_rig", "rig_for", "rig_names"]
