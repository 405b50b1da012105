"""Write synthetic scenes in MUSES' on-disk layout, so the whole MUSES path (reader, training,
evaluation, bag conversion) runs offline.

    python -m anyseg_core.data.synthetic export --layout muses OUT --scenes N \\
        [--split train val] [--conditions fog-night clear-day ...] [--size H W] [--seed 0]

Scene ``i`` of a split is the synthetic world's scene of
:class:`~anyseg_core.data.synthetic.SyntheticDataset` (same seed, split and index, and the
condition ``conditions[i % len(conditions)]``): its camera image, label and LiDAR sweep are
exactly that item's raw data. Files (see :mod:`anyseg_core.data.muses`):

- ``frame_camera/.../<name>_frame_camera.png``: 8-bit RGB PNG;
- ``lidar/.../<name>_lidar.bin``: float64 N x 6 (x fwd, y left, z up, intensity, ring, time
  in UNIX seconds), a 10 Hz sweep centred on the camera's mid-exposure time;
- ``event_camera/.../<name>_event_camera.h5``: ``events/x, y`` uint16, ``t`` int64 us,
  ``p`` uint8, Zstd-compressed (hdf5plugin); events from ``event_span[0]`` seconds before to
  ``event_span[1]`` after the camera's time, so a reader must pick its window;
- ``gt_semantic/.../<name>_gt_labelTrainIds.png``: 8-bit train ids, 255 = ignore;
- ``calib.json`` (``intrinsics.rgb.K``, ``intrinsics.event.K`` with height/width,
  ``extrinsics.lidar2rgb``, ``extrinsics.event2rgb``) and ``meta.json`` (paths, split,
  weather, time_of_day, exposure start/end in us, ``reference_frame_available``, and a
  ``synthetic`` entry with seed and condition).

Names follow MUSES' ``REC<recording>_frame_<frame>``: the recording number encodes split and
condition (9000 + 100 * split + condition), the frame number the index. Exporting into a
folder that has an export already adds to its meta.json (the calibration must agree).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from .. import muses
from ..muses import CAMERA, EVENTS, LABEL, LIDAR
from .conditions import Condition, all_conditions
from .dataset import SPLITS, sample_seed
from .rig import EventSimulator, RigConfig, SampleOptions, render_frame
from .scene import generate_scene
from .shading import lighting_for

#: MUSES' eight conditions, in the order the export cycles through them by default.
MUSES_CONDITIONS = tuple(c.name for c in all_conditions())
_ALL = [c.name for c in all_conditions(with_exposure=True)]


def scene_name(split: str, condition: Condition, index: int) -> str:
    rec = 9000 + 100 * SPLITS[split] + _ALL.index(condition.name)
    return f"REC{rec:04d}_frame_{index:06d}"


def export_muses(out: Path | str, scenes: int, splits: Sequence[str] = ("train", "val"),
                 conditions: Optional[Iterable[str]] = None,
                 size_hw: Sequence[int] = (288, 512), seed: int = 0,
                 rig: Optional[RigConfig] = None, exposure: float = 0.01,
                 event_span: tuple[float, float] = (0.06, 0.01)) -> dict:
    """Write ``scenes`` scenes per split into ``out`` in the MUSES layout; returns a summary
    (``root``, ``scenes``: name -> meta entry, ``counts``: "split/condition" -> n).

    conditions: synthetic condition names, cycled (default: MUSES' eight); over/under-exposed
    ones are written as their weather and time of day. size_hw: the frame camera's size (the
    event camera is the rig's, half of it by default). exposure: the camera's exposure time in
    seconds, centred on the synthetic camera time."""
    out = Path(out)
    if scenes < 1:
        raise ValueError(f"scenes must be positive, got {scenes}")
    bad = [s for s in splits if s not in SPLITS]
    if bad:
        raise ValueError(f"unknown split {bad}; expected some of {list(SPLITS)}")
    conds = [Condition.parse(c) for c in (conditions or MUSES_CONDITIONS)]
    rig = replace(rig or RigConfig(), image_hw=(int(size_hw[0]), int(size_hw[1])))

    calib = muses.calibration_json(rig.K, rig.image_hw, rig.T_cam_lidar, rig.events_K,
                                   rig.events_hw, rig.T_cam_events)
    meta: dict = {}
    if (out / "meta.json").is_file() or (out / "calib.json").is_file():
        old = muses.load_calibration(out).raw
        if old != calib:
            raise ValueError(f"{out} holds an export with another calibration (size or rig); "
                             "export into an empty folder")
        meta = muses.load_meta(out)
    out.mkdir(parents=True, exist_ok=True)
    muses.write_json(out / "calib.json", calib)

    written, counts = {}, {}
    for split in splits:
        for i in range(scenes):
            cond = conds[i % len(conds)]
            name = scene_name(split, cond, i)
            entry = _write_scene(out, rig, split, i, cond, name, seed, exposure, event_span)
            written[name] = meta[name] = entry
            key = f"{split}/{entry['weather']}-{entry['time_of_day']}"
            counts[key] = counts.get(key, 0) + 1
    muses.write_json(out / "meta.json", dict(sorted(meta.items())))
    return {"root": out, "scenes": written, "counts": counts}


def _write_scene(out: Path, rig: RigConfig, split: str, index: int, cond: Condition, name: str,
                 seed: int, exposure: float, event_span: tuple[float, float]) -> dict:
    s = sample_seed(seed, split, index)
    scene = generate_scene(s)
    # Camera, label and LiDAR exactly as SyntheticDataset renders the item (events come last
    # in render_frame, so leaving them out changes nothing else).
    frame = render_frame(rig, scene, cond, s, options=SampleOptions(events=False))
    t_us = int(round(frame.t_cam * 1e6))
    half = int(round(exposure * 1e6 / 2))
    paths = {part: muses.layout_path(part, split, cond.weather, cond.time, name)
             for part in (CAMERA, LIDAR, EVENTS, LABEL)}
    muses.write_camera(out / paths[CAMERA], frame.camera)
    muses.write_label(out / paths[LABEL], frame.label)
    muses.write_lidar(out / paths[LIDAR], frame.lidar)
    x, y, t, p = _events(rig, scene, cond, s, frame.t_cam, frame.meta["visibility_m"],
                         event_span)
    muses.write_events(out / paths[EVENTS], x, y, t, p)
    return {
        "path_to_frame_camera": paths[CAMERA], "path_to_lidar": paths[LIDAR],
        "path_to_event_camera": paths[EVENTS], "split": split, "weather": cond.weather,
        "time_of_day": cond.time,
        "frame_camera_exposure_start_timestamp_us": t_us - half,
        "frame_camera_exposure_end_timestamp_us": t_us + half,
        "reference_frame_available": "No",
        "synthetic": {"seed": s, "world_seed": seed, "index": index, "condition": cond.name},
    }


def _events(rig: RigConfig, scene, cond: Condition, seed: int, t_cam: float,
            visibility: Optional[float], span: tuple[float, float]):
    """The event stream over [t_cam - span[0], t_cam + span[1]], packet by packet (with a
    boundary at the start of the reader's window), times rounded to microseconds."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xE7E475]))
    sim = EventSimulator(rig, scene, cond, lighting_for(scene, cond), visibility, t_cam, rng)
    sim.reset(t_cam - span[0])
    ends = [t for t in (t_cam - rig.event_window, t_cam) if t > t_cam - span[0]]
    if span[1] > 0:
        ends.append(t_cam + span[1])
    packets = [sim.advance(t_end, rig.event_substeps) for t_end in ends]
    x = np.concatenate([ev.x for ev in packets])
    y = np.concatenate([ev.y for ev in packets])
    t = np.concatenate([ev.t for ev in packets])
    p = np.concatenate([ev.p for ev in packets])
    return x, y, np.round(t * 1e6).astype(np.int64), p


__all__ = ["MUSES_CONDITIONS", "export_muses", "scene_name"]
