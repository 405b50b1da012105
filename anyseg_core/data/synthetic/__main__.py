"""Command line of the synthetic world.

    python -m anyseg_core.data.synthetic scene [--seed 0] [--condition rain-night] [--out DIR]

renders one scene with every sensor and saves ``scene.png``: each sensor's raw data beside
the network input that :func:`anyseg_core.sensors.prepare_inputs` makes of it.

    python -m anyseg_core.data.synthetic export --layout muses OUT --scenes N \
        [--split train val] [--conditions fog-night clear-day ...] [--size H W] [--seed 0]

writes N scenes per split in MUSES' on-disk layout (see
:mod:`anyseg_core.data.synthetic.export`), readable by :mod:`anyseg_core.data.muses`.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from ... import viz
from ...modalities import CAMERA, CITYSCAPES_CLASSES, DEPTH, EVENTS, IGNORE_INDEX, LIDAR
from ...sensors import denormalize, prepare_inputs
from .conditions import Condition
from .rig import RigConfig, render_frame
from .scene import generate_scene


def render_scene_figure(seed: int, condition: Condition, net_hw: tuple[int, int],
                        render_hw: tuple[int, int]):
    """(figure RGB, summary lines) for one scene."""
    rig = RigConfig(image_hw=render_hw)
    t0 = time.perf_counter()
    frame = render_frame(rig, generate_scene(seed), condition, seed)
    t_render = time.perf_counter() - t0
    t0 = time.perf_counter()
    inputs = prepare_inputs(frame, net_hw, (CAMERA, EVENTS, LIDAR, DEPTH))
    t_prep = time.perf_counter() - t0
    raw = {m: denormalize(x, m) for m, x in inputs.items()}
    H, W = render_hw
    show = lambda im: viz.fit(im, (H, W))  # noqa: E731
    ev = frame.events
    window = (ev.t > frame.t_cam - rig.event_window) & (ev.t <= frame.t_cam)
    rows = [
        [viz.titled(frame.camera, "camera: raw rgb8"),
         viz.titled(show(viz.to_numpy(raw[CAMERA].permute(1, 2, 0).clamp(0, 1) * 255)
                         .astype(np.uint8)), f"camera input {net_hw[1]}x{net_hw[0]}")],
        [viz.titled(show(viz.lidar_bev(frame.lidar, size=min(H, W))),
                    f"lidar: raw {len(frame.lidar)} points (bird's eye)"),
         viz.titled(show(viz.colormap(raw[LIDAR][0], 0, 60)), "lidar input: range channel")],
        [viz.titled(show(viz.events_to_image(ev.x[window], ev.y[window], ev.p[window],
                                             frame.events_hw)),
                    f"events: raw {int(window.sum())} in 30 ms (event camera)"),
         viz.titled(show(viz.event_image(raw[EVENTS][0], raw[EVENTS][1])),
                    "events input: warped into camera")],
        [viz.titled(viz.colormap(frame.depth, 0, 60), "depth: raw 32FC1 (m)"),
         viz.titled(show(viz.colormap(raw[DEPTH][0], 0, 60)), "depth input: depth channel")],
        [viz.titled(viz.colorize_labels(frame.label), "ground truth (train ids)"),
         viz.titled(show(viz.colormap(raw[EVENTS][2], 0, 1)), "events input: recency")],
    ]
    labels, counts = np.unique(frame.label, return_counts=True)
    share = {(CITYSCAPES_CLASSES[i] if i != IGNORE_INDEX else "ignore"): c / frame.label.size
             for i, c in zip(labels.tolist(), counts.tolist())}
    top = ", ".join(f"{k} {v:.0%}" for k, v in sorted(share.items(), key=lambda kv: -kv[1])[:6])
    summary = [
        f"scene seed {seed}, condition {condition.name}, "
        f"ego speed {frame.meta['ego_speed']:.1f} m/s",
        f"camera {W}x{H} rgb8; depth 32FC1; lidar {len(frame.lidar)} points "
        f"({frame.lidar.shape[1]} fields: x y z intensity ring time); "
        f"events {len(ev)} on {frame.events_hw[1]}x{frame.events_hw[0]}",
        f"classes in view: {len(labels) - (IGNORE_INDEX in labels)}; largest: {top}",
        f"simulation {t_render * 1e3:.0f} ms, network inputs {t_prep * 1e3:.0f} ms",
    ]
    return viz.grid(rows), summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m anyseg_core.data.synthetic",
                                     description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sc = sub.add_parser("scene", help="render one scene: raw sensor data and network inputs")
    sc.add_argument("--seed", type=int, default=7)
    sc.add_argument("--condition", default="clear-day",
                    help="e.g. clear-day, rain-night, fog-day, snow-night, clear-day-overexposed")
    sc.add_argument("--size", default="288x512", help="network input size HxW (default 288x512)")
    sc.add_argument("--render-size", default=None, help="sensor size HxW (default: --size)")
    sc.add_argument("--out", type=Path, default=Path("demo_output"))
    ex = sub.add_parser("export", help="write synthetic scenes in a real dataset's layout")
    ex.add_argument("out", type=Path, help="output folder (the dataset root)")
    ex.add_argument("--layout", choices=["muses"], default="muses")
    ex.add_argument("--scenes", type=int, required=True, help="scenes per split")
    ex.add_argument("--split", nargs="+", default=["train", "val"],
                    choices=["train", "val", "test"])
    ex.add_argument("--conditions", nargs="+", default=None,
                    help="condition names cycled over the scenes (default: MUSES' eight, "
                         "clear/rain/snow/fog x day/night)")
    ex.add_argument("--size", nargs="+", default=["288x512"],
                    help="frame camera size: H W or HxW (default 288 512)")
    ex.add_argument("--seed", type=int, default=0, help="which synthetic world")
    args = parser.parse_args(argv)

    if args.command == "export":
        return _export(parser, args)
    try:
        condition = Condition.parse(args.condition)
        net_hw = _parse_hw(args.size)
        render_hw = _parse_hw(args.render_size) if args.render_size else net_hw
    except ValueError as err:
        parser.error(str(err))
    figure, summary = render_scene_figure(args.seed, condition, net_hw, render_hw)
    path = viz.save_png(args.out / "scene.png", figure)
    print("\n".join(summary + [f"saved {path}"]))
    return 0


def _export(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from .export import export_muses

    try:
        if len(args.size) == 1:
            size = _parse_hw(args.size[0])
        elif len(args.size) == 2:
            size = _parse_hw("x".join(args.size))
        else:
            raise ValueError(f"--size takes H W or HxW, got {' '.join(args.size)}")
        for c in args.conditions or ():
            Condition.parse(c)
        if args.scenes < 1:
            raise ValueError(f"--scenes must be positive, got {args.scenes}")
    except ValueError as err:
        parser.error(str(err))
    t0 = time.perf_counter()
    try:
        summary = export_muses(args.out, args.scenes, splits=args.split,
                               conditions=args.conditions, size_hw=size, seed=args.seed)
    except ValueError as err:  # e.g. OUT holds an export with another calibration
        print(f"error: {err}", file=sys.stderr)
        return 2
    for key, n in sorted(summary["counts"].items()):
        print(f"{key}: {n} scenes")
    print(f"wrote {len(summary['scenes'])} scenes (frame camera {size[0]}x{size[1]}, HxW) in "
          f"the MUSES layout to {args.out} in {time.perf_counter() - t0:.1f} s")
    return 0


def _parse_hw(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"size must look like 288x512 (height x width), got {text!r}") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"size must be positive, got {text!r}")
    return h, w


if __name__ == "__main__":
    sys.exit(main())
