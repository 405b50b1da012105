"""Continuous drives through one long synthetic street, sensor by sensor, in time order.

The frame camera runs at ``camera_hz``, the LiDAR sweeps at ``lidar_hz`` with a phase
offset to the camera (real sensors are not triggered together, which is what the node's
synchroniser is for), and the event camera streams packets every ``event_dt`` seconds with
events rendered continuously in between. Used to write bags that replay to the node.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import numpy as np

from .conditions import Condition
from .rig import (EPOCH, EventSimulator, RigConfig, add_weather_overlay, camera_pose, expose,
                  fog_visibility, random_streams, render_camera, simulate_lidar)
from .scene import generate_scene
from .shading import lighting_for


@dataclass
class SensorMessage:
    """One message of a drive.

    sensor: ``camera`` (data: dict with ``image`` H x W x 3 uint8 rgb8, ``label`` uint8
    train ids, ``depth`` float32 metres), ``lidar`` (data: N x 6 float64 x, y, z,
    intensity, ring, time in the LiDAR frame; stamp = sweep centre) or ``events`` (data:
    :class:`~anyseg_core.sensors.Events`; stamp = the packet's end).
    """

    sensor: str
    stamp: float
    data: Any


def drive(seed: int, seconds: float, condition: str | Condition = "clear-day",
          rig: Optional[RigConfig] = None, ego_speed: float = 8.0, camera_hz: float = 10.0,
          lidar_hz: float = 10.0, lidar_phase: float = 0.037, event_dt: float = 0.01,
          t0: Optional[float] = None) -> Iterator[SensorMessage]:
    """Yield the messages of a ``seconds``-long drive, ordered by stamp (deterministic)."""
    rig = rig or RigConfig()
    cond = condition if isinstance(condition, Condition) else Condition.parse(condition)
    scene = generate_scene(seed, x_range=(-30.0, ego_speed * seconds + 180.0),
                           ego_speed=ego_speed)
    rng = random_streams(seed, 0xD21E)
    t0 = EPOCH + (int(seed) % 1_000_000) * 3600.0 if t0 is None else float(t0)
    light = lighting_for(scene, cond)
    visibility = fog_visibility(cond, rng["world"])
    events = EventSimulator(rig, scene, cond, light, visibility, t0, rng["events"])
    events.reset(t0)

    # (stamp, order, sensor) for every message; heapq merges the three clocks.
    def clock(sensor, period, phase, order):
        n = int(np.floor((seconds - phase) / period + 1e-9)) + 1
        return [(t0 + phase + k * period, order, sensor) for k in range(max(n, 0))]

    schedule = (clock("events", event_dt, event_dt, 0) + clock("camera", 1 / camera_hz, 0.0, 1)
                + clock("lidar", 1 / lidar_hz, lidar_phase, 2))
    heapq.heapify(schedule)
    while schedule:
        stamp, _, sensor = heapq.heappop(schedule)
        dt = stamp - t0
        if sensor == "events":
            yield SensorMessage("events", stamp, events.advance(stamp))
            continue
        pose = camera_pose(rig, scene, dt)
        moved = scene.at_time(dt)
        if sensor == "camera":
            rad, hits, grid = render_camera(rig, moved, pose, cond, light, visibility,
                                            rng["camera"])
            H, W = rig.image_hw
            add_weather_overlay(rad, cond, rng["camera"])
            depth = np.where(np.isfinite(hits.t), hits.t * grid.z_per_t, 0.0)
            yield SensorMessage("camera", stamp, {
                "image": expose(rad, cond, rng["camera"], rig),
                "label": hits.label.reshape(H, W).copy(),
                "depth": depth.reshape(H, W).astype(np.float32)})
        else:
            pts, _ = simulate_lidar(rig, moved, pose, cond, light, visibility, stamp,
                                    rng["lidar"])
            yield SensorMessage("lidar", stamp, pts)


def drive_calibration(rig: Optional[RigConfig] = None) -> dict:
    """The calibration of a drive's rig, in the names the node and the bags use."""
    rig = rig or RigConfig()
    return {"K": rig.K, "image_hw": rig.image_hw, "T_cam_lidar": rig.T_cam_lidar,
            "events_K": rig.events_K, "events_hw": rig.events_hw,
            "T_cam_events": rig.T_cam_events}


__all__ = ["SensorMessage", "drive", "drive_calibration"]
