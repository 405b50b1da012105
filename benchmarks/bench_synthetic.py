"""How fast the synthetic world makes one training sample, on one CPU core.

    python benchmarks/bench_synthetic.py [--size 288x512] [--samples 20] [--json OUT]

Pins itself to one core and one torch thread, then times, per sample: scene generation,
the camera render (RGB + depth + labels), the LiDAR sweep, the event camera (renders and
event generation) and prepare_inputs (camera, events, LiDAR, depth to network tensors).
Prints a markdown table (median ms per stage) and the ratio of the whole sample to the
100 ms budget (below 1 means within budget) and to one render of the camera (the unit of
work everything else is measured against), all taken in the same run.

Then the same scenes as training reads them (camera, events, LiDAR): a ``SyntheticDataset`` item
rendered, the same item stored into a ``data.cache`` folder (render + write) and read back from
it, with the ratio of a cached read to a render.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from anyseg_core.data.synthetic import Condition, RigConfig, generate_scene
from anyseg_core.data.synthetic.dataset import sample_seed
from anyseg_core.data.synthetic.rig import (EventSimulator, camera_pose, expose, fog_visibility,
                                            render_camera, simulate_lidar)
from anyseg_core.data.synthetic.shading import lighting_for
from anyseg_core.data.cache import CachedItems
from anyseg_core.data.synthetic import SyntheticDataset, render_frame
from anyseg_core.sensors import prepare_inputs

BUDGET_MS = 100.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="288x512", help="HxW of the camera and network input")
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    torch.set_num_threads(1)
    rig = RigConfig(image_hw=(h, w))
    stages: dict[str, list[float]] = {k: [] for k in
                                      ("scene", "camera+depth", "lidar", "events", "inputs",
                                       "sample (render_frame + inputs)")}

    def timed(key, fn):
        t0 = time.perf_counter()
        out = fn()
        stages[key].append((time.perf_counter() - t0) * 1e3)
        return out

    conditions = [Condition.parse(c) for c in ("clear-day", "rain-night", "fog-day", "snow-day")]
    for i in range(args.samples + 2):  # the first two warm caches and are discarded
        seed = sample_seed(0, "train", i)
        cond = conditions[i % len(conditions)]
        rng = np.random.default_rng(seed)
        scene = timed("scene", lambda: generate_scene(seed))
        light = lighting_for(scene, cond)
        vis = fog_visibility(cond, rng)
        pose = camera_pose(rig, scene, 0.0)
        timed("camera+depth", lambda: expose(render_camera(rig, scene, pose, cond, light, vis,
                                                           rng)[0], cond, rng))
        timed("lidar", lambda: simulate_lidar(rig, scene, pose, cond, light, vis, 0.0, rng))

        def events():
            sim = EventSimulator(rig, scene, cond, light, vis, 0.0, rng)
            sim.reset(-rig.event_window)
            return sim.advance(0.0, rig.event_substeps)
        timed("events", events)
        frame = render_frame(rig, scene, cond, seed)
        timed("inputs", lambda: prepare_inputs(frame, (h, w), ("camera", "events", "lidar",
                                                                 "depth")))
        timed("sample (render_frame + inputs)", lambda: prepare_inputs(
            render_frame(rig, generate_scene(seed), cond, seed), (h, w),
            ("camera", "events", "lidar", "depth")))
        if i < 2:
            for v in stages.values():
                v.clear()
    with tempfile.TemporaryDirectory() as tmp:
        ds = SyntheticDataset(args.samples + 2, size_hw=(h, w))
        cached = CachedItems(ds, tmp)
        for key in ("dataset item, rendered", "dataset item, render + store in data.cache",
                    "dataset item, read from data.cache"):
            stages[key] = []
        for i in range(args.samples + 2):
            timed("dataset item, rendered", lambda: ds[i])
            timed("dataset item, render + store in data.cache", lambda: cached[i])
            timed("dataset item, read from data.cache", lambda: cached[i])
            if i < 2:
                for k in list(stages)[-3:]:
                    stages[k].clear()
    med = {k: statistics.median(v) for k, v in stages.items()}
    total = med["sample (render_frame + inputs)"]
    print(f"synthetic sample at {w}x{h}, {args.samples} samples, 1 core, torch threads 1, "
          f"{platform.processor() or platform.machine()}")
    print("| stage | median ms | x camera render |")
    print("|---|---|---|")
    for k, v in med.items():
        print(f"| {k} | {v:.1f} | {v / med['camera+depth']:.2f} |")
    cache_ratio = (med["dataset item, read from data.cache"] / med["dataset item, rendered"])
    print(f"\nwhole sample / {BUDGET_MS:.0f} ms budget = {total / BUDGET_MS:.2f}")
    print(f"dataset item read from data.cache / rendered = {cache_ratio:.3f}")
    if args.json:
        args.json.write_text(json.dumps({"size_hw": [h, w], "median_ms": med,
                                         "budget_ratio": total / BUDGET_MS,
                                         "cache_read_over_render": cache_ratio}, indent=2))


if __name__ == "__main__":
    main()
