"""Materials and light: from ray hits to linear radiance and LiDAR reflectivity.

Textures are procedural functions of the hit point in the object's own frame, so they move
with the object (the event camera then sees moving edges inside objects, not only at their
outlines). Radiance is linear and unbounded; the camera model in :mod:`.rig` exposes it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...modalities import CLASS_ID as C
from .raycast import KIND_BOX, KIND_CYL, KIND_GROUND, KIND_SKY, Hits, dot3, rows
from .scene import (REFLECTIVITY, TERRAIN_COLOUR, TEX_FACADE, TEX_FENCE, TEX_FOLIAGE,
                    TEX_LIGHT, TEX_PERSON, TEX_SIGN, TEX_VEHICLE, VEGETATION_COLOUR, Scene)


def cell_noise(p: np.ndarray, scale: float, seed: int = 0) -> np.ndarray:
    """Deterministic value in [0, 1) per cell of size 1/scale (an integer hash)."""
    q = np.floor(p * scale).astype(np.int64)
    salt = np.int64((int(seed) * 2654435761) % (1 << 62))
    h = (q[:, 0] * 73856093) ^ (q[:, 1] * 19349663) ^ (q[:, 2] * 83492791) ^ salt
    h = (h ^ (h >> 13)) * 0x5BD1E995
    h = h ^ (h >> 15)
    return ((h & 0xFFFFFF).astype(np.float32) / np.float32(0x1000000))


@dataclass
class Lighting:
    sun_dir: np.ndarray
    sun: float          # direct sunlight
    ambient: float      # skylight
    sky_zenith: np.ndarray
    sky_horizon: np.ndarray
    night: bool
    snow: float = 0.0   # 0..1 snow cover on the ground
    wet: bool = False


def lighting_for(scene: Scene, condition) -> Lighting:
    overcast = condition.weather in ("rain", "snow", "fog")
    if condition.time == "night":
        return Lighting(scene.sun_dir, 0.0, 0.008, np.array([0.004, 0.005, 0.01], np.float32),
                        np.array([0.02, 0.018, 0.02], np.float32), True,
                        snow=0.6 if condition.weather == "snow" else 0.0,
                        wet=condition.weather == "rain")
    return Lighting(scene.sun_dir, 0.25 if overcast else 0.9, 0.55 if overcast else 0.35,
                    np.array([0.55, 0.57, 0.6] if overcast else [0.30, 0.45, 0.80], np.float32),
                    np.array([0.75, 0.76, 0.78] if overcast else [0.75, 0.80, 0.88], np.float32),
                    False, snow=0.6 if condition.weather == "snow" else 0.0,
                    wet=condition.weather == "rain")


def _lane_marking(scene: Scene, pt: np.ndarray) -> np.ndarray:
    """Dashed lines between lanes, a solid line between the lanes and each parking strip;
    in world coordinates."""
    y, x = pt[:, 1], pt[:, 0]
    lane = np.abs(np.abs(y) - np.round(np.abs(y) / scene.lane_width) * scene.lane_width)
    edge_y = scene.lanes_per_side * scene.lane_width
    inner = np.abs(y) < edge_y - 0.3
    dashed = (lane < 0.08) & inner & (np.mod(x, 9.0) < 3.0)
    edge = np.abs(np.abs(y) - edge_y) < 0.08
    return dashed | edge


def ground_albedo(scene: Scene, hits: Hits, sel: np.ndarray, light: Lighting):
    pt = rows(hits.point, sel)
    lab = hits.label[sel]
    n1 = cell_noise(pt, 8.0, scene.seed)[:, None]
    n2 = cell_noise(pt, 1.5, scene.seed + 1)[:, None]
    out = np.empty((sel.size, 3), np.float32)
    road = lab == C["road"]
    grey = 0.20 + 0.06 * (scene.seed % 7) / 6.0
    out[road] = grey * (0.92 + 0.16 * n1[road]) * (0.9 + 0.2 * n2[road])
    mark = np.zeros(sel.size, bool)
    mark[road] = _lane_marking(scene, pt[road])
    out[mark] = 0.72
    side = lab == C["sidewalk"]
    grout = (np.mod(pt[side, 0], 0.6) < 0.04) | (np.mod(pt[side, 1], 0.6) < 0.04)
    out[side] = (grey + 0.07) * (0.92 + 0.16 * n1[side]) * np.where(grout, 0.75, 1.0)[:, None]
    for label, colour in ((C["terrain"], TERRAIN_COLOUR), (C["vegetation"], VEGETATION_COLOUR)):
        m = lab == label
        out[m] = colour * (0.7 + 0.5 * n1[m]) * (0.85 + 0.3 * n2[m])
    if light.snow > 0:
        cover = light.snow * np.where(road, 0.3, 1.0)[:, None] * (0.7 + 0.3 * n2)
        out = out * (1 - cover) + 0.85 * cover
    if light.wet:
        out *= 0.7
    return out


def object_albedo(scene: Scene, hits: Hits, sel: np.ndarray, kind: int, light: Lighting):
    """Albedo and emission of box or cylinder hits ``sel`` (indices into hits)."""
    prims = scene.boxes if kind == KIND_BOX else scene.cylinders
    pi = hits.prim[sel]
    loc = rows(hits.local, sel)
    tex = prims.tex[pi]
    col = rows(prims.color, pi)
    col2 = rows(prims.color2, pi)
    size = rows(prims.size, pi)
    emit = np.zeros_like(col)
    # Height above the primitive's bottom, and a horizontal coordinate along the hit face.
    if kind == KIND_BOX:
        v = loc[:, 2] + size[:, 2]
        c, s = np.cos(prims.yaw)[pi], np.sin(prims.yaw)[pi]
        nw = rows(hits.normal, sel)
        nx_local = c * nw[:, 0] + s * nw[:, 1]
        on_x_face = np.abs(nx_local) > 0.5
        u = np.where(on_x_face, loc[:, 1], loc[:, 0])
        half_u = np.where(on_x_face, size[:, 1], size[:, 0])
        vertical = np.abs(nw[:, 2]) < 0.5
    else:
        v = loc[:, 2]
        u = np.arctan2(loc[:, 1], loc[:, 0]) * size[:, 0]
        half_u = size[:, 0] * np.pi
        on_x_face = np.zeros(sel.size, bool)
        nx_local = np.zeros(sel.size, np.float32)
        vertical = np.abs(rows(hits.normal, sel)[:, 2]) < 0.5  # the side, not a cap
    height = size[:, 2] * (2.0 if kind == KIND_BOX else 1.0)
    vrel = v / np.maximum(height, 1e-3)
    # Brightness factor (1D, applied once at the end) and colour replacements by index:
    # both much cheaper than masked updates of [n, 3] arrays.
    factor = 0.9 + 0.2 * cell_noise(loc, 6.0, scene.seed + 2)

    i = np.nonzero(tex == TEX_FACADE)[0]
    if i.size:
        ws, hs = col2[i, 0], col2[i, 1]
        fu, fv = np.mod(u[i] / ws, 1.0), np.mod(v[i] / hs, 1.0)
        win = (fu > 0.25) & (fu < 0.75) & (fv > 0.3) & (fv < 0.75) & (v[i] > 2.5) & vertical[i]
        col[i[win]] = (0.10, 0.12, 0.15)
        if light.night:
            wid = np.stack([np.floor(u[i] / ws), np.floor(v[i] / hs), col2[i, 2]], -1)
            emit[i[win & (cell_noise(wid, 1.0, scene.seed) < 0.3)]] = (0.9, 0.7, 0.45)
    i = np.nonzero(tex == TEX_VEHICLE)[0]
    if i.size:
        cabin = col2[i, 0] > 0.5
        col[i[cabin & (vrel[i] > 0.2) & (vrel[i] < 0.95) & vertical[i]]] = (0.07, 0.09, 0.11)
        factor[i[~cabin & (vrel[i] < 0.25) & vertical[i]]] *= 0.25  # tyres and shadow
        if light.night:  # head and tail lights on the front/back faces of the lower body
            lamp = ~cabin & on_x_face[i] & (vrel[i] > 0.45) & (vrel[i] < 0.8) & \
                (np.abs(u[i]) > 0.55 * half_u[i])
            front = nx_local[i] > 0
            emit[i[lamp & front]] = (3.0, 3.0, 2.6)
            emit[i[lamp & ~front]] = (1.5, 0.05, 0.02)
    i = np.nonzero(tex == TEX_PERSON)[0]
    if i.size:
        legs = i[vrel[i] < 0.47]
        col[legs] = col2[legs]
        col[i[vrel[i] > 0.87]] = (0.55, 0.42, 0.35)
    i = np.nonzero(tex == TEX_LIGHT)[0]
    if i.size:
        rad = 0.6 * np.minimum(half_u[i], size[i, 2])
        lamp = i[vertical[i] & ((u[i] ** 2 + (v[i] - size[i, 2]) ** 2) < rad ** 2)]
        emit[lamp] = col2[lamp] * (2.5 if light.night else 0.6)
        col[lamp] = col2[lamp] * 0.5
    i = np.nonzero(tex == TEX_SIGN)[0]
    if i.size:
        border = i[vertical[i] & ((np.abs(u[i]) > 0.78 * half_u[i]) |
                                  (np.abs(v[i] - size[i, 2]) > 0.78 * size[i, 2]))]
        col[border] = col2[border]
    i = np.nonzero(tex == TEX_FENCE)[0]
    if i.size:
        factor[i[(np.mod(u[i] * 4.0, 1.0) < 0.45) & (np.mod(v[i], 0.8) > 0.12)]] *= 0.5
    i = np.nonzero(tex == TEX_FOLIAGE)[0]
    if i.size:
        factor[i] *= 0.5 + cell_noise(rows(loc, i), 9.0, scene.seed + 3)
    return col * factor[:, None], emit


def shade(scene: Scene, hits: Hits, dirs: np.ndarray, light: Lighting,
          forward: np.ndarray | None = None) -> np.ndarray:
    """Linear RGB radiance [N, 3] of every ray. At night the ego's headlights shine along
    ``forward`` (the viewing camera's optical axis) from the ray origin."""
    nrm = hits.normal
    irr = light.ambient * (0.75 + 0.25 * nrm[:, 2]) + \
        light.sun * np.clip(dot3(nrm, light.sun_dir), 0.0, None)
    if light.night and forward is not None:
        cone = np.clip((dot3(dirs, forward) - 0.85) / 0.15, 0.0, 1.0)
        facing = np.clip(-(nrm[:, 0] * dirs[:, 0] + nrm[:, 1] * dirs[:, 1] +
                           nrm[:, 2] * dirs[:, 2]), 0.0, None)
        dist = np.where(np.isfinite(hits.t), hits.t, 1e3)
        irr = irr + 1.2 * cone * facing / (1 + (dist / 12.0) ** 2)
        irr = irr + 0.02 / (1 + (dist / 25.0) ** 2)  # street lamps light the near field
    rad = np.empty((hits.t.shape[0], 3), np.float32)
    g = np.nonzero(hits.kind == KIND_GROUND)[0]
    if g.size:
        rad[g] = ground_albedo(scene, hits, g, light) * irr[g, None]
    for kind in (KIND_BOX, KIND_CYL):
        s = np.nonzero(hits.kind == kind)[0]
        if s.size:
            albedo, emit = object_albedo(scene, hits, s, kind, light)
            rad[s] = albedo * irr[s, None] + emit
    sky = np.nonzero(hits.kind == KIND_SKY)[0]
    up = np.clip(dirs[sky, 2], 0.0, 1.0)[:, None]
    rad[sky] = light.sky_horizon * (1 - up) + light.sky_zenith * up
    return rad


def lidar_reflectivity(scene: Scene, hits: Hits, light: Lighting) -> np.ndarray:
    """Reflectivity on the 0..255 intensity scale per ray (materials per train id; lane
    markings are bright; wet surfaces return less, snow more)."""
    table = np.full(256, REFLECTIVITY["static"], np.float32)
    for name, value in REFLECTIVITY.items():
        if name in C:
            table[C[name]] = value
    refl = table[hits.label]
    for kind, prims in ((KIND_BOX, scene.boxes), (KIND_CYL, scene.cylinders)):
        m = hits.kind == kind
        refl[m] = prims.refl[hits.prim[m]]
    g = np.nonzero(hits.kind == KIND_GROUND)[0]
    if g.size:
        road = g[hits.label[g] == C["road"]]
        refl[road[_lane_marking(scene, hits.point[road])]] = REFLECTIVITY["marking"]
        if light.wet:
            refl[g] *= 0.6
        if light.snow:
            refl[g] = refl[g] * (1 - light.snow) + 50.0 * light.snow
    return refl
