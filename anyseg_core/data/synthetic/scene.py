"""Procedural street scenes made of simple 3D geometry.

World frame: x forward along the road, y to the left, z up, metres. The road is straight and
centred on y = 0: lanes in both directions and a parking strip along each curb; the ego vehicle
drives along +x in a right-hand lane. A scene is a flat ground (road, curbs, sidewalks, terrain
and vegetation strips) plus two kinds of primitives:
yawed boxes and vertical cylinders, each with a Cityscapes train id, colours, a texture kind,
a LiDAR reflectivity and a velocity. Everything a sensor sees comes from these arrays.

The design (which cue separates which classes) is documented in docs/synthetic-world.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ...modalities import CLASS_ID, IGNORE_INDEX

C = CLASS_ID

# Texture kinds, interpreted by anyseg_core.data.synthetic.shading.
(TEX_PLAIN, TEX_FACADE, TEX_VEHICLE, TEX_PERSON, TEX_LIGHT, TEX_SIGN, TEX_FENCE,
 TEX_FOLIAGE) = range(8)

# LiDAR reflectivity on the driver's 0..255 intensity scale. Traffic lights and signs, and
# vegetation and terrain, get the same value on purpose: those pairs must be told apart by
# colour (see docs/synthetic-world.md).
REFLECTIVITY = {
    "road": 14.0, "marking": 60.0, "sidewalk": 24.0, "building": 30.0, "wall": 30.0,
    "fence": 34.0, "pole": 40.0, "traffic light": 44.0, "traffic sign": 44.0,
    "vegetation": 20.0, "terrain": 20.0, "person": 24.0, "rider": 24.0, "car": 40.0,
    "truck": 40.0, "bus": 40.0, "train": 40.0, "motorcycle": 34.0, "bicycle": 30.0,
    "static": 30.0,
}

FACADE_COLOURS = np.array([
    [0.55, 0.50, 0.45], [0.62, 0.60, 0.56], [0.45, 0.42, 0.40], [0.70, 0.64, 0.52],
    [0.50, 0.36, 0.30], [0.60, 0.58, 0.62], [0.38, 0.38, 0.40], [0.66, 0.55, 0.45],
], dtype=np.float32)
VEHICLE_COLOURS = np.array([
    [0.75, 0.75, 0.78], [0.12, 0.12, 0.14], [0.55, 0.08, 0.08], [0.10, 0.18, 0.45],
    [0.85, 0.85, 0.82], [0.40, 0.42, 0.44], [0.15, 0.30, 0.18], [0.80, 0.62, 0.10],
], dtype=np.float32)
CLOTHES_COLOURS = np.array([
    [0.10, 0.10, 0.12], [0.20, 0.25, 0.45], [0.55, 0.10, 0.10], [0.75, 0.72, 0.65],
    [0.30, 0.45, 0.25], [0.45, 0.35, 0.25], [0.80, 0.55, 0.15], [0.35, 0.35, 0.38],
], dtype=np.float32)
FENCE_COLOURS = np.array([
    [0.45, 0.35, 0.25], [0.30, 0.38, 0.30], [0.55, 0.55, 0.55], [0.25, 0.25, 0.27],
], dtype=np.float32)
SIGN_COLOURS = np.array([
    [0.85, 0.85, 0.85], [0.10, 0.25, 0.65], [0.75, 0.10, 0.10], [0.90, 0.75, 0.10],
], dtype=np.float32)
LAMP_COLOURS = np.array([[1.0, 0.15, 0.05], [1.0, 0.6, 0.0], [0.1, 1.0, 0.4]], dtype=np.float32)
VEGETATION_COLOUR = np.array([0.20, 0.42, 0.14], dtype=np.float32)
TERRAIN_COLOUR = np.array([0.52, 0.46, 0.30], dtype=np.float32)


@dataclass
class Primitives:
    """Structure of arrays for one primitive kind (boxes or cylinders).

    center: box centre, or the cylinder's base centre (x, y, z0).
    size: box half extents (along its yawed x, y and z), or (radius, radius, height).
    color, color2: albedo and a second colour (trousers, lamp, sign border, a car's cabin
    flag (1, 0, 0)); facades use color2 for their window pitch (m, m) and a texture seed.
    tex: texture kind (TEX_*); refl: LiDAR reflectivity (0..255); vel: (vx, vy) m/s.
    """

    center: np.ndarray
    size: np.ndarray
    yaw: np.ndarray
    label: np.ndarray
    color: np.ndarray
    color2: np.ndarray
    tex: np.ndarray
    refl: np.ndarray
    vel: np.ndarray

    def __len__(self) -> int:
        return int(self.center.shape[0])

    def at_time(self, dt: float) -> "Primitives":
        if dt == 0.0 or not np.any(self.vel):
            return self
        c = self.center.copy()
        c[:, :2] += self.vel * np.float32(dt)
        return replace(self, center=c)

    def select(self, mask: np.ndarray) -> "Primitives":
        return Primitives(**{k: getattr(self, k)[mask] for k in self.__dataclass_fields__})


@dataclass
class Scene:
    """A procedural street. Ground geometry is analytic; objects are primitives."""

    seed: int
    road_half_width: float
    sidewalk_width: float
    curb_height: float
    lane_width: float
    # Ground beyond the sidewalks, per side (0: left y>0, 1: right y<0): segment starts along
    # x (ascending) and the train id of each segment (terrain, vegetation or sidewalk).
    ground_x0: tuple[np.ndarray, np.ndarray]
    ground_label: tuple[np.ndarray, np.ndarray]
    boxes: Primitives
    cylinders: Primitives
    ego_y: float
    ego_speed: float
    sun_dir: np.ndarray = field(default_factory=lambda: np.array([0.3, 0.4, 0.866], np.float32))
    # Lanes per direction; the parking strips lie between lanes_per_side * lane_width and R.
    lanes_per_side: int = 1

    def at_time(self, dt: float) -> "Scene":
        """The scene ``dt`` seconds after its reference time (moving objects moved)."""
        return replace(self, boxes=self.boxes.at_time(dt), cylinders=self.cylinders.at_time(dt))


class _Builder:
    def __init__(self) -> None:
        self.rows: dict[str, list[tuple]] = {"box": [], "cyl": []}

    def box(self, center, half, yaw, label, color, tex=TEX_PLAIN, refl=30.0, vel=(0.0, 0.0),
            color2=(0.0, 0.0, 0.0)) -> None:
        self.rows["box"].append((center, half, yaw, label, color, color2, tex, refl, vel))

    def cyl(self, base, radius, height, label, color, tex=TEX_PLAIN, refl=30.0,
            vel=(0.0, 0.0), color2=(0.0, 0.0, 0.0)) -> None:
        self.rows["cyl"].append((base, (radius, radius, height), 0.0, label, color, color2, tex,
                                 refl, vel))

    def build(self, kind: str) -> Primitives:
        rows = self.rows[kind]
        cols = list(zip(*rows)) if rows else [()] * 9
        f32 = lambda v, shape: np.asarray(v, np.float32).reshape(shape)  # noqa: E731
        return Primitives(
            center=f32(cols[0], (-1, 3)), size=f32(cols[1], (-1, 3)), yaw=f32(cols[2], (-1,)),
            label=np.asarray(cols[3], np.uint8).reshape(-1),
            color=f32(cols[4], (-1, 3)), color2=f32(cols[5], (-1, 3)),
            tex=np.asarray(cols[6], np.int8).reshape(-1), refl=f32(cols[7], (-1,)),
            vel=f32(cols[8], (-1, 2)),
        )


#: Width of the parking strip between the outer lane and the curb (m): cars (up to 1.95 m
#: wide, slightly turned) and two-wheelers fit in it.
PARKING_STRIP = (2.3, 3.0)
#: No ego-lane vehicle reaches into this x range (m, the ego at x = 0 at the reference time;
#: the camera is at x = 1.5). Ego-lane traffic drives at the ego's speed, so this holds always.
EGO_KEEP_OUT = (-12.0, 10.0)
VEHICLE_KINDS = ("car", "truck", "bus", "motorcycle", "bicycle", "train")
VEHICLE_P = (0.58, 0.12, 0.1, 0.06, 0.1, 0.04)
PARKED_KINDS = ("car", "motorcycle", "bicycle")
PARKED_P = (0.58, 0.06, 0.1)


@dataclass(frozen=True)
class _Vehicle:
    """A vehicle's kind and size (m): length, body width, height, its rider's radius."""

    kind: str
    length: float
    width: float
    height: float
    rider: float = 0.0

    @property
    def half_width(self) -> float:
        """Half the width of the footprint (a rider is wider than a bicycle)."""
        return max(self.width / 2, self.rider)


def _jitter(rng, colour, amount=0.06):
    return np.clip(colour + rng.normal(0.0, amount, 3), 0.02, 0.98).astype(np.float32)


def generate_scene(seed: int, x_range: tuple[float, float] = (-30.0, 170.0),
                   ego_speed: float | None = None) -> Scene:
    """A random street between ``x_range`` (metres along the road), deterministic by seed."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5CE7E]))
    x_min, x_max = x_range
    lanes_per_side = int(rng.integers(1, 3))
    lane_w = float(rng.uniform(3.0, 3.6))
    # Road half width: the lanes plus a parking strip along the curb.
    R = lanes_per_side * lane_w + float(rng.uniform(*PARKING_STRIP))
    S = float(rng.uniform(1.8, 4.0))  # sidewalk width
    hc = float(rng.uniform(0.10, 0.20))  # curb height
    ego_y = -lane_w * 0.5 - (lanes_per_side - 1) * lane_w * float(rng.integers(0, 2))
    if ego_speed is None:
        ego_speed = 0.0 if rng.random() < 0.08 else float(rng.uniform(3.0, 14.0))
    b = _Builder()
    ground_x0: list[np.ndarray] = []
    ground_label: list[np.ndarray] = []

    def tree(x, y):
        trunk_h = rng.uniform(1.8, 3.5)
        b.cyl((x, y, 0.0), rng.uniform(0.12, 0.25), trunk_h, C["vegetation"],
              _jitter(rng, np.array([0.30, 0.22, 0.15])), TEX_FOLIAGE, REFLECTIVITY["vegetation"])
        r = rng.uniform(1.2, 2.8)
        b.cyl((x, y, trunk_h - 0.3), r, rng.uniform(1.8, 4.0), C["vegetation"],
              _jitter(rng, VEGETATION_COLOUR, 0.05), TEX_FOLIAGE, REFLECTIVITY["vegetation"])

    def building(x0, x1, y_front, side):
        depth = rng.uniform(8.0, 20.0)
        height = rng.uniform(6.0, 32.0)
        gap = rng.uniform(0.0, 1.5)
        b.box(((x0 + x1) / 2, side * (y_front + depth / 2), height / 2),
              ((x1 - x0) / 2 - gap / 2, depth / 2, height / 2), 0.0, C["building"],
              _jitter(rng, FACADE_COLOURS[rng.integers(len(FACADE_COLOURS))]),
              TEX_FACADE if rng.random() < 0.75 else TEX_PLAIN,
              REFLECTIVITY["building"] * rng.uniform(0.8, 1.2),
              color2=(rng.uniform(2.0, 3.5), rng.uniform(2.5, 4.0), rng.uniform(0, 1e3)))

    # Lots along each side of the street: buildings, walls, fences, parks.
    for si, side in enumerate((1.0, -1.0)):
        y_back = R + S  # back edge of the sidewalk
        xs, labels = [], []
        x = x_min
        while x < x_max:
            length = rng.uniform(8.0, 30.0)
            kind = rng.choice(["building", "wall", "fence", "park"], p=[0.5, 0.15, 0.15, 0.2])
            cover = C["terrain"] if rng.random() < 0.5 else C["vegetation"]
            if kind == "building" and rng.random() < 0.6:
                cover = C["sidewalk"]  # the building stands at the back of a wide pavement
            xs.append(x)
            labels.append(cover)
            if kind == "building":
                building(x, x + length, y_back + rng.uniform(0.0, 5.0), side)
            elif kind in ("wall", "fence"):
                thick = rng.uniform(0.25, 0.5) if kind == "wall" else rng.uniform(0.04, 0.1)
                height = rng.uniform(1.0, 3.0) if kind == "wall" else rng.uniform(0.9, 2.0)
                y = y_back + rng.uniform(0.2, 1.0)
                if kind == "wall":
                    colour = _jitter(rng, FACADE_COLOURS[rng.integers(len(FACADE_COLOURS))])
                    tex, refl = TEX_PLAIN, REFLECTIVITY["wall"]
                else:
                    colour = _jitter(rng, FENCE_COLOURS[rng.integers(len(FENCE_COLOURS))])
                    tex, refl = TEX_FENCE, REFLECTIVITY["fence"]
                b.box((x + length / 2, side * (y + thick / 2), height / 2),
                      (length / 2, thick / 2, height / 2), 0.0, C[kind], colour, tex, refl)
                if rng.random() < 0.7:  # something further back
                    building(x, x + length, y + rng.uniform(4.0, 12.0), side)
                else:
                    for _ in range(int(rng.integers(0, 3))):
                        tree(x + rng.uniform(0, length), side * (y + rng.uniform(2.0, 8.0)))
            else:  # park
                for _ in range(int(rng.integers(1, 4))):
                    tree(x + rng.uniform(0, length), side * (y_back + rng.uniform(1.0, 10.0)))
                if rng.random() < 0.5:
                    hl = rng.uniform(2.0, 8.0)
                    hx = x + rng.uniform(0, max(length - hl, 0.1))
                    hh = rng.uniform(0.5, 1.4)
                    b.box((hx + hl / 2, side * (y_back + 1.0), hh / 2), (hl / 2, 0.5, hh / 2), 0.0,
                          C["vegetation"], _jitter(rng, VEGETATION_COLOUR, 0.05), TEX_FOLIAGE,
                          REFLECTIVITY["vegetation"])
                if rng.random() < 0.3:
                    building(x, x + length, y_back + rng.uniform(12.0, 25.0), side)
            x += length
        ground_x0.append(np.asarray(xs, np.float32))
        ground_label.append(np.asarray(labels, np.uint8))

    # Street furniture on the sidewalks.
    for side in (1.0, -1.0):
        x = x_min + rng.uniform(0, 10)
        while x < x_max:
            y = side * (R + rng.uniform(0.4, min(1.2, S - 0.3)))
            kind = rng.choice(["pole", "light", "sign", "tree", "billboard", "bin"],
                              p=[0.25, 0.2, 0.25, 0.15, 0.07, 0.08])
            if kind == "pole":
                b.cyl((x, y, 0.0), rng.uniform(0.07, 0.15), rng.uniform(4.0, 8.0), C["pole"],
                      _jitter(rng, np.array([0.5, 0.5, 0.52])), TEX_PLAIN, REFLECTIVITY["pole"])
            elif kind in ("light", "sign"):
                h = rng.uniform(2.2, 4.5)
                b.cyl((x, y, 0.0), rng.uniform(0.05, 0.1), h, C["pole"],
                      _jitter(rng, np.array([0.45, 0.45, 0.47])), TEX_PLAIN, REFLECTIVITY["pole"])
                # Lights and signs share one size distribution: colour tells them apart.
                half = (rng.uniform(0.1, 0.25), rng.uniform(0.2, 0.4), rng.uniform(0.3, 0.55))
                if kind == "light":
                    colour = _jitter(rng, np.array([0.10, 0.10, 0.10]), 0.03)
                    colour2 = LAMP_COLOURS[rng.integers(3)]
                    tex = TEX_LIGHT
                else:
                    colour = _jitter(rng, SIGN_COLOURS[rng.integers(len(SIGN_COLOURS))], 0.04)
                    colour2 = SIGN_COLOURS[rng.integers(len(SIGN_COLOURS))]
                    tex = TEX_SIGN
                b.box((x, y, h + half[2] * 0.8), half, 0.0, C["traffic " + kind], colour, tex,
                      REFLECTIVITY["traffic " + kind], color2=colour2)
            elif kind == "tree":
                tree(x, side * (R + S * 0.6))
            elif kind == "billboard":  # free-standing advertising: Cityscapes' ignored "static"
                w, hh = rng.uniform(1.0, 2.0), rng.uniform(0.8, 1.4)
                b.box((x, y, 0.4 + hh), (w / 2, 0.08, hh), 0.0, IGNORE_INDEX,
                      _jitter(rng, SIGN_COLOURS[rng.integers(len(SIGN_COLOURS))], 0.2),
                      TEX_SIGN, REFLECTIVITY["static"], color2=SIGN_COLOURS[rng.integers(4)])
            else:  # a bin or a box: ignored "static" clutter
                hh = rng.uniform(0.4, 0.7)
                b.box((x, y, hh), (rng.uniform(0.25, 0.5),) * 2 + (hh,), rng.uniform(0, np.pi),
                      IGNORE_INDEX, _jitter(rng, FENCE_COLOURS[rng.integers(4)], 0.1),
                      TEX_PLAIN, REFLECTIVITY["static"])
            x += rng.uniform(6.0, 22.0)

    # People on the sidewalks and a few crossing.
    n_people = int(rng.poisson(0.06 * (x_max - x_min)))
    for _ in range(n_people):
        side = 1.0 if rng.random() < 0.5 else -1.0
        x = rng.uniform(x_min, x_max)
        crossing = rng.random() < 0.12
        y = rng.uniform(-R, R) if crossing else side * (R + rng.uniform(0.3, S - 0.2))
        speed = rng.uniform(0.6, 1.7) * (1 if rng.random() < 0.5 else -1)
        vel = (0.0, speed) if crossing else (speed, 0.0)
        b.cyl((x, y, 0.0), rng.uniform(0.18, 0.28), rng.uniform(1.5, 1.95), C["person"],
              CLOTHES_COLOURS[rng.integers(8)], TEX_PERSON, REFLECTIVITY["person"], vel,
              CLOTHES_COLOURS[rng.integers(8)])

    # Vehicles: driving in lanes, parked in the strip between the lanes and the curb.
    def vehicle_kind(kinds=VEHICLE_KINDS, p=VEHICLE_P) -> _Vehicle:
        kind = str(rng.choice(kinds, p=np.asarray(p) / np.sum(p)))
        rider = 0.0
        if kind == "car":
            L, W, H = rng.uniform(3.8, 4.9), rng.uniform(1.65, 1.95), rng.uniform(1.35, 1.6)
        elif kind == "truck":
            L, W, H = rng.uniform(6.0, 9.0), rng.uniform(2.3, 2.55), rng.uniform(2.8, 3.6)
        elif kind == "bus":
            L, W, H = rng.uniform(10.0, 13.0), 2.55, rng.uniform(3.0, 3.4)
        elif kind == "train":
            L, W, H = rng.uniform(20.0, 30.0), 2.65, rng.uniform(3.3, 3.7)
        else:  # two-wheelers carry a rider
            L, H = (1.75, 1.0) if kind == "bicycle" else (2.1, 1.15)
            W = 0.12 if kind == "bicycle" else 0.6
            rider = rng.uniform(0.2, 0.26)
        return _Vehicle(kind, float(L), float(W), float(H), float(rider))

    def draw_vehicle(v: _Vehicle, x, y, vel, yaw=0.0):
        colour = _jitter(rng, VEHICLE_COLOURS[rng.integers(len(VEHICLE_COLOURS))], 0.03)
        refl = REFLECTIVITY[v.kind] * rng.uniform(0.8, 1.2)
        L, W, H = v.length, v.width, v.height
        back = np.array([-np.cos(yaw), -np.sin(yaw)])  # towards the vehicle's rear
        if v.kind == "car":
            b.box((x, y, 0.2 + H * 0.25), (L / 2, W / 2, H * 0.25), yaw, C["car"], colour,
                  TEX_VEHICLE, refl, vel)
            cx, cy = np.array([x, y]) + back * (L * 0.05)
            b.box((cx, cy, 0.2 + H * 0.5 + H * 0.2), (L * 0.3, W * 0.45, H * 0.2), yaw,
                  C["car"], colour, TEX_VEHICLE, refl, vel, color2=(1.0, 0.0, 0.0))
        elif v.kind in ("truck", "bus", "train"):
            b.box((x, y, 0.3 + H / 2), (L / 2, W / 2, H / 2), yaw, C[v.kind], colour,
                  TEX_VEHICLE, refl, vel,
                  color2=(1.0, 0.0, 0.0) if v.kind == "bus" else (0.0, 0.0, 0.0))
        else:
            b.box((x, y, H / 2), (L / 2, W / 2, H / 2), yaw, C[v.kind], colour, TEX_VEHICLE,
                  refl, vel)
            rx, ry = np.array([x, y]) + back * 0.1
            b.cyl((rx, ry, H * 0.8), v.rider, rng.uniform(0.8, 0.95), C["rider"],
                  CLOTHES_COLOURS[rng.integers(8)], TEX_PERSON, REFLECTIVITY["rider"], vel,
                  CLOTHES_COLOURS[rng.integers(8)])

    # Lane traffic: each vehicle inside its lane, bumper to bumper gaps of 6 to 40 m, all
    # vehicles of a lane at one speed (so none drives through another). The ego lane moves
    # with the ego and stays clear of it (EGO_KEEP_OUT, on the vehicles' extents).
    lanes = [(-lane_w * (i + 0.5), 1.0) for i in range(lanes_per_side)] + \
            [(lane_w * (i + 0.5), -1.0) for i in range(lanes_per_side)]
    for y_lane, direction in lanes:
        ego_lane = abs(y_lane - ego_y) < 0.1
        speed = ego_speed if ego_lane else float(rng.uniform(0.0, 14.0))
        rear = x_min + rng.uniform(0, 20)  # the low-x end of the next vehicle
        while rear < x_max:
            v = vehicle_kind()
            if ego_lane and rear < EGO_KEEP_OUT[1] and rear + v.length > EGO_KEEP_OUT[0]:
                rear = EGO_KEEP_OUT[1] + rng.uniform(2.0, 10.0)
                continue
            slack = max((lane_w - 2 * v.half_width) / 2 - 0.1, 0.0)
            dy = float(np.clip(rng.normal(0, 0.2), -slack, slack))
            draw_vehicle(v, rear + v.length / 2, y_lane + dy, (direction * speed, 0.0),
                         0.0 if direction > 0 else np.pi)
            rear += v.length + rng.uniform(6.0, 40.0)
    # Parked: cars and two-wheelers (the others do not fit), wholly inside the strip, in the
    # direction of the traffic beside them.
    lane_edge = lanes_per_side * lane_w
    for side in (1.0, -1.0):
        rear = x_min + rng.uniform(0, 15)
        while rear < x_max:
            if rng.random() < 0.5:
                v = vehicle_kind(PARKED_KINDS, PARKED_P)
                turn = float(np.clip(rng.normal(0, 0.03), -0.04, 0.04))
                c, s = abs(np.cos(turn)), abs(np.sin(turn))
                hx = c * v.length / 2 + s * v.half_width  # footprint, world axes
                hy = s * v.length / 2 + c * v.half_width
                lo, hi = lane_edge + 0.05 + hy, R - 0.05 - hy
                y = hi - rng.uniform(0.0, 0.3) * (hi - lo) if hi > lo else (lo + hi) / 2
                draw_vehicle(v, rear + hx, side * y, (0.0, 0.0),
                             turn + (np.pi if side > 0 else 0.0))
                rear += 2 * hx + rng.uniform(1.0, 25.0)
            else:
                rear += 4.0 + rng.uniform(1.0, 25.0)

    az = rng.uniform(-np.pi, np.pi)
    el = rng.uniform(np.radians(20), np.radians(65))
    sun = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], np.float32)
    return Scene(seed=int(seed), road_half_width=R, sidewalk_width=S, curb_height=hc,
                 lane_width=lane_w, ground_x0=tuple(ground_x0), ground_label=tuple(ground_label),
                 boxes=b.build("box"), cylinders=b.build("cyl"), ego_y=ego_y,
                 ego_speed=float(ego_speed), sun_dir=sun, lanes_per_side=lanes_per_side)
