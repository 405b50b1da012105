"""The sensor rig on the ego vehicle and each sensor's physics.

Frame camera (pinhole, RGB), a depth map aligned with it, a scanning LiDAR mounted at an
offset (rings x columns, 10 Hz sweep with per-point times), and an event camera beside the
frame camera with its own intrinsics and pose (events from log-brightness changes between
renders). Weather, night and exposure act on each sensor the way they physically would; the
reasoning is in docs/synthetic-world.md.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ...sensors.frame import Events, RawFrame
from .conditions import Condition
from .raycast import KIND_SKY, PinholeGrid, SphericalGrid, cast, dot3
from .scene import Scene
from .shading import Lighting, lidar_reflectivity, lighting_for, shade

#: Reference epoch of synthetic timestamps (UNIX seconds): keeps them realistic (float64).
EPOCH = 1_700_000_000.0

#: The independent random streams of a sample: the world's (fog visibility) and one per sensor.
STREAMS = ("world", "camera", "lidar", "events")


def random_streams(seed: int, salt: int) -> dict[str, np.random.Generator]:
    """One generator per entry of :data:`STREAMS`, from ``(seed, salt, stream)``: a sensor's
    noise is the same whichever other sensors are simulated, and in whatever order."""
    return {name: np.random.default_rng(np.random.SeedSequence([int(seed), int(salt), k]))
            for k, name in enumerate(STREAMS)}


def rotation_rpy(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """R = Rz(yaw) Ry(pitch) Rx(roll), radians."""
    cr, sr, cp, sp, cy, sy = (math.cos(roll), math.sin(roll), math.cos(pitch), math.sin(pitch),
                              math.cos(yaw), math.sin(yaw))
    return np.array([[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                     [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                     [-sp, cp * sr, cp * cr]])


def intrinsics(hw: tuple[int, int], hfov_deg: float) -> np.ndarray:
    H, W = hw
    f = (W / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
    return np.array([[f, 0.0, (W - 1) / 2.0], [0.0, f, (H - 1) / 2.0], [0.0, 0.0, 1.0]])


# Optical frame (x right, y down, z forward) expressed in a body frame (x fwd, y left, z up).
_BODY_FROM_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def _body_from_camera(pitch_down_deg: float) -> np.ndarray:
    """Camera optical frame -> body frame, optical axis pitched down by ``pitch_down_deg``
    (a rotation about the optical x axis)."""
    return _BODY_FROM_OPTICAL @ rotation_rpy(-math.radians(pitch_down_deg), 0.0, 0.0)


def _pose(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return T


@dataclass
class RigConfig:
    """Sensor geometry and characteristics. Sizes are (height, width)."""

    image_hw: tuple[int, int] = (288, 512)
    hfov_deg: float = 70.0
    camera_height: float = 1.55
    camera_pitch_deg: float = 3.0
    # LiDAR pose relative to the camera mount (body axes: x fwd, y left, z up), metres/deg.
    lidar_offset: tuple[float, float, float] = (-0.30, 0.05, 0.35)
    lidar_rpy_deg: tuple[float, float, float] = (0.4, -1.0, 1.5)
    lidar_rings: int = 32
    lidar_elevation_deg: tuple[float, float] = (-20.0, 6.0)
    lidar_hfov_deg: float = 120.0
    lidar_columns: int = 480
    lidar_period: float = 0.1
    lidar_max_range: float = 120.0
    lidar_range_noise: float = 0.02
    # Event camera beside the frame camera (optical-frame offset), smaller sensor, wider lens.
    events_scale: float = 0.5
    events_hfov_deg: float = 74.0
    events_offset: tuple[float, float, float] = (0.12, 0.0, 0.0)
    events_rpy_deg: tuple[float, float, float] = (0.3, 0.5, -0.4)
    event_window: float = 0.03
    event_substeps: int = 1
    contrast_threshold: float = 0.2
    far: float = 250.0
    # Sensor variation (anyseg_core.data.synthetic.sensor_variants; docs/synthetic-world.md).
    # The defaults are the MUSES-like rig above and leave every render bit for bit as it was.
    name: str = "muses"
    #: explicit ring elevations (degrees, ascending) instead of lidar_rings evenly spaced
    #: over lidar_elevation_deg (a unit with non-uniform rings, e.g. an HDL-64E)
    lidar_elevations: tuple[float, ...] | None = None
    #: intensity response: 255 * (i / 255) ** gamma * gain, clipped to 0..255 ...
    lidar_intensity_gamma: float = 1.0
    lidar_intensity_gain: float = 1.0
    #: ... then multiplied by this scale (1/255: a driver that publishes 0..1)
    lidar_intensity_scale: float = 1.0
    #: fraction of returns lost on top of the weather's dropout
    lidar_dropout: float = 0.0
    #: camera response: exposure bias (x the auto exposure's gain), white balance (per
    #: channel on the linear image), gamma, saturation, noise (x photon and read noise),
    #: optical blur (Gaussian sigma in pixels), JPEG quality (0 = none)
    camera_exposure: float = 1.0
    camera_white_balance: tuple[float, float, float] = (1.0, 1.0, 1.0)
    camera_gamma: float = 2.2
    camera_saturation: float = 1.0
    camera_noise: float = 1.0
    camera_blur: float = 0.0
    camera_jpeg_quality: int = 0
    #: per-object albedo variation seen by the camera: each primitive's colour x U(1 - j,
    #: 1 + j) per channel (materials and paints the world's palettes do not have)
    material_jitter: float = 0.0

    @property
    def lidar_360(self) -> bool:
        """A spinning unit: columns all round (the azimuth grid wraps)."""
        return self.lidar_hfov_deg >= 360.0

    @property
    def lidar_height(self) -> float:
        """The LiDAR's height above the road (metres)."""
        return self.camera_height + self.lidar_offset[2]

    def lidar_elevations_rad(self) -> np.ndarray:
        if self.lidar_elevations is not None:
            return np.radians(np.asarray(self.lidar_elevations, np.float64))
        return np.radians(np.linspace(*self.lidar_elevation_deg, self.lidar_rings))

    def lidar_azimuths_rad(self) -> np.ndarray:
        if self.lidar_360:  # all round, no column twice
            return -math.pi + 2 * math.pi * np.arange(self.lidar_columns) / self.lidar_columns
        half = math.radians(self.lidar_hfov_deg) / 2
        return np.linspace(-half, half, self.lidar_columns)

    @property
    def K(self) -> np.ndarray:
        return intrinsics(self.image_hw, self.hfov_deg)

    @property
    def events_hw(self) -> tuple[int, int]:
        H, W = self.image_hw
        return (max(1, round(H * self.events_scale)), max(1, round(W * self.events_scale)))

    @property
    def events_K(self) -> np.ndarray:
        return intrinsics(self.events_hw, self.events_hfov_deg)

    @property
    def T_cam_lidar(self) -> np.ndarray:
        """LiDAR frame -> camera optical frame (fixed by the mount, not by the scene)."""
        R_body_cam = _body_from_camera(self.camera_pitch_deg)
        R_body_lidar = rotation_rpy(*np.radians(self.lidar_rpy_deg))
        T_body_cam = _pose(R_body_cam, np.zeros(3))
        T_body_lidar = _pose(R_body_lidar, np.asarray(self.lidar_offset, float))
        return np.linalg.inv(T_body_cam) @ T_body_lidar

    @property
    def T_cam_events(self) -> np.ndarray:
        """Event camera optical frame -> frame camera optical frame."""
        return _pose(rotation_rpy(*np.radians(self.events_rpy_deg)),
                     np.asarray(self.events_offset, float))


@dataclass
class EgoPose:
    """Camera pose in the world at one instant."""

    T_world_cam: np.ndarray

    @property
    def origin(self) -> np.ndarray:
        return self.T_world_cam[:3, 3]

    @property
    def R(self) -> np.ndarray:
        return self.T_world_cam[:3, :3]


def camera_pose(rig: RigConfig, scene: Scene, dt: float, yaw: float = 0.0) -> EgoPose:
    """Camera pose ``dt`` seconds after the scene's reference time (ego at x=0 then)."""
    R_body_cam = _body_from_camera(rig.camera_pitch_deg)
    R_world_body = rotation_rpy(0.0, 0.0, yaw)
    origin = np.array([scene.ego_speed * dt + 1.5, scene.ego_y, rig.camera_height])
    return EgoPose(_pose(R_world_body @ R_body_cam, origin))


# --------------------------------------------------------------------------- camera


def add_weather_overlay(img: np.ndarray, condition: Condition, rng: np.random.Generator):
    """Rain streaks or snow flakes in front of the lens (on the linear sensor image)."""
    H, W, _ = img.shape
    if condition.weather == "rain":
        n, length, bright = int(H * W / 600), max(4, H // 25), 0.25
    elif condition.weather == "snow":
        n, length, bright = int(H * W / 150), 2, 0.6
    else:
        return
    u0 = rng.uniform(0, W, n)
    v0 = rng.uniform(0, H, n)
    steps = np.arange(length)
    slant = rng.normal(0.25, 0.05)
    uu = (u0[:, None] + slant * steps[None]).astype(np.int64).ravel()
    vv = (v0[:, None] + steps[None]).astype(np.int64).ravel()
    ok = (uu >= 0) & (uu < W) & (vv >= 0) & (vv < H)
    overlay = np.zeros((H, W), np.float32)
    np.add.at(overlay, (vv[ok], uu[ok]), bright)
    if condition.weather == "snow":  # flakes are a few pixels wide
        overlay = np.maximum(overlay, np.roll(overlay, 1, 1))
        overlay = np.maximum(overlay, np.roll(overlay, 1, 0))
    level = max(float(img.mean()), 0.05)
    img += np.minimum(overlay, 1.0)[..., None] * level * 2.0


def apply_fog(rad: np.ndarray, dist: np.ndarray, visibility: float, airlight) -> np.ndarray:
    """Koschmieder's law: contrast decays with distance, the air scatters light in."""
    trans = np.exp(-3.0 * np.where(np.isfinite(dist), dist, 1e6) / visibility)[:, None]
    return rad * trans + np.asarray(airlight, np.float32) * (1 - trans)


_NOISE_TABLE: np.ndarray | None = None


def _standard_normal(shape, rng: np.random.Generator) -> np.ndarray:
    """Standard normal noise from a window of a pre-drawn 4M-value table at a random offset:
    drawing fresh normals costs more than the whole rest of the exposure."""
    global _NOISE_TABLE
    if _NOISE_TABLE is None:
        _NOISE_TABLE = np.random.default_rng(0x7AB1E).standard_normal(1 << 22, np.float32)
    n = int(np.prod(shape))
    if n > _NOISE_TABLE.size:
        return rng.standard_normal(shape, dtype=np.float32)
    start = int(rng.integers(0, _NOISE_TABLE.size - n + 1))
    return _NOISE_TABLE[start:start + n].reshape(shape)


def expose(rad_img: np.ndarray, condition: Condition, rng: np.random.Generator,
           rig: "RigConfig | None" = None) -> np.ndarray:
    """Linear radiance image -> 8-bit RGB: auto exposure, over/under exposure, photon and
    read noise (amplified with the gain, so night images are noisy), gamma. ``rig``'s camera
    response (white balance, exposure bias, blur, noise, gamma, saturation, JPEG; see
    :class:`RigConfig`) applies where it differs from the MUSES-like default."""
    variant = rig is not None and _camera_varies(rig)
    if variant:
        from .sensor_variants import gaussian_blur_image
        rad_img = rad_img * np.asarray(rig.camera_white_balance, np.float32)
        if rig.camera_blur > 0:
            rad_img = gaussian_blur_image(rad_img, rig.camera_blur)
    luminance = float(rad_img.mean())
    # Auto exposure aims at a mid-grey mean but the exposure time and gain run out at night:
    # dark scenes stay dark, and what gain there is amplifies the read noise.
    gain = float(np.clip(0.35 / max(luminance, 1e-4), 0.3, 3.0))
    gain *= {"normal": 1.0, "over": 4.0, "under": 0.15}[condition.exposure]
    if variant:
        gain *= rig.camera_exposure
    signal = rad_img * gain
    sigma = np.sqrt(0.002 * np.clip(signal, 0, None) + (0.0025 * gain) ** 2)
    if variant:
        sigma = sigma * rig.camera_noise
    signal = signal + sigma * _standard_normal(signal.shape, rng)
    if not variant:
        out = np.clip(signal, 0.0, 1.0) ** (1 / 2.2)
        return (out * 255.0 + 0.5).astype(np.uint8)
    out = np.clip(signal, 0.0, 1.0) ** (1 / rig.camera_gamma)
    if rig.camera_saturation != 1.0:
        grey = dot3(out.reshape(-1, 3), (0.299, 0.587, 0.114)).reshape(out.shape[:-1])[..., None]
        out = np.clip(grey + rig.camera_saturation * (out - grey), 0.0, 1.0)
    img = (out * 255.0 + 0.5).astype(np.uint8)
    if rig.camera_jpeg_quality:
        from .sensor_variants import jpeg_roundtrip
        img = jpeg_roundtrip(img, rig.camera_jpeg_quality)
    return img


def _camera_varies(rig: "RigConfig") -> bool:
    """Whether ``rig``'s camera response differs from the default (MUSES-like) one."""
    return (rig.camera_exposure != 1.0 or tuple(rig.camera_white_balance) != (1.0, 1.0, 1.0)
            or rig.camera_gamma != 2.2 or rig.camera_saturation != 1.0
            or rig.camera_noise != 1.0 or rig.camera_blur > 0 or rig.camera_jpeg_quality > 0)


def fog_visibility(condition: Condition, rng: np.random.Generator) -> float | None:
    if condition.weather == "fog":
        return float(rng.uniform(25.0, 90.0))
    if condition.weather in ("rain", "snow"):
        return float(rng.uniform(250.0, 600.0))  # haze
    return None


def _airlight(condition: Condition) -> tuple[float, float, float]:
    return (0.03, 0.03, 0.035) if condition.time == "night" else (0.7, 0.72, 0.75)


def render_camera(rig, scene, pose, condition, light, visibility, rng, hw=None, K=None):
    """Linear radiance [H, W, 3] plus the hits of a pinhole camera at ``pose``."""
    hw = hw or rig.image_hw
    grid = PinholeGrid(rig.K if K is None else K, hw, pose.R, pose.origin)
    hits = cast(scene, grid, rig.far)
    rad = shade(scene, hits, grid.dirs, light, forward=pose.R[:, 2])
    if visibility is not None:
        rad = apply_fog(rad, hits.t, visibility, _airlight(condition))
    return rad.reshape(hw[0], hw[1], 3), hits, grid


# --------------------------------------------------------------------------- LiDAR


def simulate_lidar(rig: RigConfig, scene: Scene, pose: EgoPose, condition: Condition,
                   light: Lighting, visibility: float | None, t_center: float,
                   rng: np.random.Generator):
    """One sweep centred on ``t_center``. Returns N x 6 float64 (x, y, z, intensity, ring,
    time) in the LiDAR frame, and the train id of each point (255 for spurious returns).

    The whole sweep is cast from the pose at ``t_center`` with ``scene`` as it is then (the
    caller passes the scene at the sweep centre): a perfectly motion-compensated sweep, as most
    drivers publish it, in which moving objects show no motion within the sweep. Per-point
    times still follow the scan order, column by column."""
    T_world_lidar = pose.T_world_cam @ rig.T_cam_lidar
    elev = rig.lidar_elevations_rad()
    az = rig.lidar_azimuths_rad()
    grid = SphericalGrid(elev, az, T_world_lidar[:3, :3], T_world_lidar[:3, 3],
                         wraps=rig.lidar_360)
    rings = len(elev)
    hits = cast(scene, grid, rig.lidar_max_range)
    n = hits.t.shape[0]
    rng_noise = rig.lidar_range_noise * (2.0 if condition.weather in ("rain", "snow") else 1.0)
    rng_m = hits.t + rng.normal(0.0, rng_noise, n).astype(np.float32)
    cos_inc = np.abs(hits.normal[:, 0] * grid.dirs[:, 0] + hits.normal[:, 1] * grid.dirs[:, 1]
                     + hits.normal[:, 2] * grid.dirs[:, 2])
    intensity = lidar_reflectivity(scene, hits, light) * (0.35 + 0.65 * cos_inc)
    intensity = intensity + rng.normal(0.0, 1.5, n)
    keep = (hits.kind != KIND_SKY) & (hits.t < rig.lidar_max_range)
    dropout = {"clear": 0.02, "rain": 0.10, "snow": 0.08, "fog": 0.05}[condition.weather]
    if rig.lidar_dropout:
        dropout = dropout + rig.lidar_dropout
    keep &= rng.random(n) > dropout
    if condition.weather == "fog" and visibility is not None:
        # Near-infrared light scatters less than visible light, but fog still eats range.
        beta = 3.0 / visibility * 0.6
        dist = np.where(np.isfinite(hits.t), hits.t, 1e6)
        keep &= rng.random(n) < np.exp(-2.0 * beta * dist) * 2.0
    label = hits.label.copy()
    # Backscatter from droplets and flakes: spurious returns close to the sensor.
    spurious_rate = {"clear": 0.0, "rain": 0.01, "snow": 0.035, "fog": 0.04}[condition.weather]
    spur = rng.random(n) < spurious_rate
    spur &= ~keep | (rng.random(n) < 0.5)
    rng_m = np.where(spur, rng.uniform(1.0, 7.0, n), rng_m)
    intensity = np.where(spur, rng.uniform(1.0, 8.0, n), intensity)
    label[spur] = 255
    keep |= spur
    ring = np.repeat(np.arange(rings), rig.lidar_columns)
    col = np.tile(np.arange(rig.lidar_columns), rings)
    times = t_center - rig.lidar_period / 2 + (col + 0.5) / rig.lidar_columns * rig.lidar_period
    with np.errstate(invalid="ignore"):  # inf x 0 for the sky along an axis: dropped below
        xyz = grid.dirs_lidar.astype(np.float64) * rng_m[:, None].astype(np.float64)
    intensity = np.clip(intensity, 0, 255)
    if rig.lidar_intensity_gamma != 1.0 or rig.lidar_intensity_gain != 1.0:
        intensity = np.clip(255.0 * (intensity / 255.0) ** rig.lidar_intensity_gamma
                            * rig.lidar_intensity_gain, 0, 255)
    if rig.lidar_intensity_scale != 1.0:
        intensity = intensity * rig.lidar_intensity_scale
    pts = np.concatenate([xyz, intensity[:, None], ring[:, None], times[:, None]], 1)[keep]
    return pts, label[keep]


# --------------------------------------------------------------------------- events


def _luminance(rad: np.ndarray) -> np.ndarray:
    return dot3(rad.reshape(-1, 3), (0.299, 0.587, 0.114))


def _times_in(t0: float, t1: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` uniform times in the half-open interval (t0, t1] (packets tile time exactly)."""
    t = t1 - rng.random(n) * (t1 - t0)
    return np.maximum(t, np.nextafter(t0, np.inf))


class EventSimulator:
    """The event camera: renders log brightness at successive instants and emits, for every
    pixel, one event per contrast threshold crossed between two renders (times spread
    uniformly between them), plus background-activity noise (much stronger at night).

    Times are absolute seconds; ``t_ref`` is the scene's reference time (ego at x = 0).
    State (the last log image, each pixel's threshold) carries over between calls, so a
    drive produces a continuous stream."""

    def __init__(self, rig: RigConfig, scene: Scene, condition: Condition, light: Lighting,
                 visibility: float | None, t_ref: float, rng: np.random.Generator) -> None:
        self.rig, self.scene, self.condition = rig, scene, condition
        self.light, self.visibility, self.t_ref, self.rng = light, visibility, t_ref, rng
        self.hw = rig.events_hw
        n = self.hw[0] * self.hw[1]
        self.threshold = np.clip(rng.normal(rig.contrast_threshold, 0.03, n), 0.08,
                                 None).astype(np.float32)
        rate = {"day": 0.3, "night": 4.0}[condition.time]
        self.noise_rate = rate + {"clear": 0.0, "rain": 2.0, "snow": 3.0, "fog": 0.5}[
            condition.weather]
        self.t_last: float | None = None
        self.log_last: np.ndarray | None = None

    def _log_image(self, t: float) -> np.ndarray:
        dt = t - self.t_ref
        pose = camera_pose(self.rig, self.scene, dt)
        ev_pose = EgoPose(pose.T_world_cam @ self.rig.T_cam_events)
        rad, _, _ = render_camera(self.rig, self.scene.at_time(dt), ev_pose, self.condition,
                                  self.light, self.visibility, self.rng, hw=self.hw,
                                  K=self.rig.events_K)
        # The photoreceptor's log response flattens below a dark-current floor.
        return np.log(_luminance(rad).ravel() + 0.02)

    def reset(self, t: float) -> None:
        self.t_last, self.log_last = t, self._log_image(t)

    def advance(self, t_end: float, substeps: int = 1) -> Events:
        """Events in (t_last, t_end], from ``substeps`` renders in between."""
        if self.t_last is None:
            raise RuntimeError("call reset(t) before advance()")
        rng, W = self.rng, self.hw[1]
        xs, ys, ts, ps = [], [], [], []
        for tk in np.linspace(self.t_last, t_end, substeps + 1)[1:]:
            log_k = self._log_image(tk)
            dlog = log_k - self.log_last
            # Stochastic rounding (expected count |dlog| / threshold): the unknown phase of
            # each pixel's reference level. The reference is reset after every call.
            count = np.floor(np.abs(dlog) / self.threshold + rng.random(dlog.shape))
            pix = np.repeat(np.arange(count.size), np.minimum(count, 20).astype(np.int64))
            n_noise = rng.poisson(self.noise_rate * count.size * (tk - self.t_last))
            noise = rng.integers(0, count.size, n_noise)
            xs += [pix % W, noise % W]
            ys += [pix // W, noise // W]
            ts += [_times_in(self.t_last, tk, pix.size, rng),
                   _times_in(self.t_last, tk, n_noise, rng)]
            ps += [(dlog[pix] > 0).astype(np.uint8), rng.integers(0, 2, n_noise).astype(np.uint8)]
            self.t_last, self.log_last = float(tk), log_k
        t = np.concatenate(ts)
        order = np.argsort(t, kind="stable")
        return Events(x=np.concatenate(xs).astype(np.uint16)[order],
                      y=np.concatenate(ys).astype(np.uint16)[order], t=t[order],
                      p=np.concatenate(ps)[order])


# --------------------------------------------------------------------------- one sample


@dataclass
class SampleOptions:
    """Which sensors to simulate (skip what you do not need: it saves time)."""

    camera: bool = True
    depth: bool = True
    lidar: bool = True
    events: bool = True
    extra: dict = field(default_factory=dict)


def render_frame(rig: RigConfig, scene: Scene, condition: Condition, seed: int,
                 t_cam: float | None = None, options: SampleOptions | None = None) -> RawFrame:
    """Every sensor of the rig at one instant, as a :class:`RawFrame` in raw units.

    ``t_cam`` (UNIX seconds) is the camera's mid-exposure time and the scene's reference
    time; events cover the ``event_window`` before it, the LiDAR sweep is centred on it."""
    options = options or SampleOptions()
    if rig.material_jitter:
        from .sensor_variants import jitter_materials
        scene = jitter_materials(scene, rig.material_jitter, seed)
    rng = random_streams(seed, 0xC0FFEE)
    t_cam = EPOCH + (int(seed) % 1_000_000) * 60.0 if t_cam is None else float(t_cam)
    light = lighting_for(scene, condition)
    pose = camera_pose(rig, scene, 0.0)
    visibility = fog_visibility(condition, rng["world"])
    frame = RawFrame(image_hw=tuple(rig.image_hw), K=rig.K, t_cam=t_cam,
                     meta={"condition": condition.name, "seed": int(seed),
                           "ego_speed": scene.ego_speed, "visibility_m": visibility})
    if options.camera or options.depth:
        rad, hits, grid = render_camera(rig, scene, pose, condition, light, visibility,
                                        rng["camera"])
        H, W = rig.image_hw
        frame.label = hits.label.reshape(H, W).copy()
        if options.camera:
            add_weather_overlay(rad, condition, rng["camera"])
            frame.camera = expose(rad, condition, rng["camera"], rig)
            frame.camera_encoding = "rgb8"
        if options.depth:
            z = np.where(np.isfinite(hits.t), hits.t * grid.z_per_t, 0.0)
            frame.depth = z.reshape(H, W).astype(np.float32)
            frame.depth_encoding = "32FC1"
    if options.lidar:
        pts, lab = simulate_lidar(rig, scene, pose, condition, light, visibility, t_cam,
                                  rng["lidar"])
        frame.lidar, frame.T_cam_lidar = pts, rig.T_cam_lidar
        frame.meta["lidar_labels"] = lab
    if options.events:
        sim = EventSimulator(rig, scene, condition, light, visibility, t_cam, rng["events"])
        sim.reset(t_cam - rig.event_window)
        frame.events = sim.advance(t_cam, rig.event_substeps)
        frame.events_K, frame.events_hw = rig.events_K, rig.events_hw
        frame.T_cam_events = rig.T_cam_events
    return frame
