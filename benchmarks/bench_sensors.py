"""Benchmark the sensor converters against straightforward numpy implementations.

    python benchmarks/bench_sensors.py [--device cpu|cuda] [--repeats N] [--threads T] [--json OUT]

Workload: 120k LiDAR points (mostly in front, some behind) projected into a 1920x1080
camera, and 1M events over 1920x1080 in 30 ms (raw pixels, and warped by a small rotation
as in the pipeline). Both implementations run in the same process on the same inputs; their
outputs are checked to agree before anything is timed. Times are medians; numpy and torch
take turns in short warmed-up blocks (see measure). A second table gives the cost of lens
distortion (a plumb_bob camera: the LiDAR projection, and events of a separate event camera
warped into it) as a ratio to the same call without it, taken in the same run.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from anyseg_core.sensors import project_lidar, render_events  # noqa: E402

H, W = 1080, 1920
K = np.array([[1000.0, 0.0, 959.5], [0.0, 1000.0, 539.5], [0.0, 0.0, 1.0]])
# LiDAR x forward, y left, z up -> camera x right, y down, z forward; 10 cm below, 20 cm back.
T_CAM_LIDAR = np.array([[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, -0.1], [1.0, 0.0, 0.0, -0.2],
                        [0.0, 0.0, 0.0, 1.0]])
WINDOW = 0.03


def make_lidar(n: int, rng: np.random.Generator) -> np.ndarray:
    """n x 4 float64 points: 85 % within +-90 deg of forward, 15 % behind, +-15 deg elevation."""
    behind = rng.random(n) < 0.15
    azimuth = np.where(behind, rng.uniform(np.pi / 2, 3 * np.pi / 2, n),
                       rng.uniform(-np.pi / 2, np.pi / 2, n))
    elevation = np.deg2rad(rng.uniform(-15.0, 15.0, n))
    r = rng.uniform(0.5, 80.0, n)
    horizontal = r * np.cos(elevation)
    xyz = np.stack([horizontal * np.cos(azimuth), horizontal * np.sin(azimuth),
                    r * np.sin(elevation)], axis=1)
    return np.concatenate([xyz, rng.random((n, 1))], axis=1)


def make_events(n: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """n events, time-sorted, absolute UNIX seconds (float64), uint16 pixels, uint8 polarity."""
    x = rng.integers(0, W, n).astype(np.uint16)
    y = rng.integers(0, H, n).astype(np.uint16)
    t = 1.7e9 + np.sort(rng.uniform(0.0, WINDOW, n))
    p = rng.integers(0, 2, n).astype(np.uint8)
    return x, y, t, p


def small_rotation_homography() -> np.ndarray:
    a = np.deg2rad(0.5)
    R = np.array([[np.cos(a), 0.0, np.sin(a)], [0.0, 1.0, 0.0], [-np.sin(a), 0.0, np.cos(a)]])
    return K @ R @ np.linalg.inv(K)


def numpy_project_lidar(points: np.ndarray, K: np.ndarray, T: np.ndarray, min_range: float = 1.0
                        ) -> np.ndarray:
    p = points[:, :4].astype(np.float64)
    rng = np.linalg.norm(p[:, :3], axis=1)
    cam = p[:, :3] @ T[:3, :3].T + T[:3, 3]
    z = cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = cam @ K.T
        u = uv[:, 0] / z + 0.5
        v = uv[:, 1] / z + 0.5
    keep = (np.isfinite(p).all(1) & (rng >= min_range) & (z > 1e-6)
            & (u >= 0) & (u < W) & (v >= 0) & (v < H))
    idx = np.nonzero(keep)[0][::-1]
    # Far to near, and for equal depth larger index first: the last write (nearest) wins.
    order = idx[np.argsort(-z[idx], kind="stable")]
    rows, cols = np.floor(v[order]).astype(np.int64), np.floor(u[order]).astype(np.int64)
    out = np.zeros((3, H, W), np.float32)
    out[0, rows, cols] = rng[order]
    out[1, rows, cols] = p[order, 3]
    out[2, rows, cols] = p[order, 2]
    return out


def numpy_render_events(x: np.ndarray, y: np.ndarray, t: np.ndarray, p: np.ndarray,
                        warp: np.ndarray | None = None) -> np.ndarray:
    dt = t - t.max()
    keep = (dt > -WINDOW) & (dt <= 0)
    if warp is None:
        col, row = x.astype(np.int64), y.astype(np.int64)
    else:
        xf, yf = x.astype(np.float64), y.astype(np.float64)
        w = warp[2, 0] * xf + warp[2, 1] * yf + warp[2, 2]
        col = np.floor((warp[0, 0] * xf + warp[0, 1] * yf + warp[0, 2]) / w + 0.5)
        row = np.floor((warp[1, 0] * xf + warp[1, 1] * yf + warp[1, 2]) / w + 0.5)
        keep &= w > 0
    keep &= (col >= 0) & (col < W) & (row >= 0) & (row < H)
    lin = (row[keep] * W + col[keep]).astype(np.int64)
    neg = (p[keep] == 0).astype(np.int64)
    out = np.zeros((3, H * W), np.float32)
    out[:2] = np.bincount(lin + neg * (H * W), minlength=2 * H * W).reshape(2, H * W)
    np.maximum.at(out[2], lin, ((dt[keep] + WINDOW) / WINDOW).astype(np.float32))
    return out.reshape(3, H, W)


def page_faults() -> int:
    """Minor page faults of this process so far (0 where the platform cannot tell)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def measure(fns: list[Callable[[], object]], repeats: int, sync: Callable[[], None],
            block: int = 5) -> list[tuple[float, float]]:
    """Median wall time (ms) and median page faults of each function over ``repeats`` calls.

    The functions take turns in blocks of ``block`` calls, each block after an untimed call:
    every function is timed in its own steady state (allocator and caches warmed by itself,
    as in a process that does one thing per frame), while load from other processes on a
    shared machine falls on all of them alike. Page faults are reported because first
    touches of freshly mapped memory can cost as much as the computation on some machines."""
    times: list[list[float]] = [[] for _ in fns]
    faults: list[list[int]] = [[] for _ in fns]
    while len(times[0]) < repeats:
        for fn, ts, fs in zip(fns, times, faults):
            fn()
            sync()
            for _ in range(min(block, repeats - len(ts))):
                f0, start = page_faults(), time.perf_counter()
                fn()
                sync()
                ts.append((time.perf_counter() - start) * 1e3)
                fs.append(page_faults() - f0)
    return [(statistics.median(ts), statistics.median(fs)) for ts, fs in zip(times, faults)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    gen = np.random.default_rng(0)
    points = make_lidar(120_000, gen)
    x, y, t, p = make_events(1_000_000, gen)
    warp = small_rotation_homography()
    pts_t = torch.from_numpy(points).to(device)
    ev_t = [torch.from_numpy(a).to(device) for a in (x, y, t, p)]

    cases = {
        "lidar 120k pts -> 1920x1080": (
            lambda: numpy_project_lidar(points, K, T_CAM_LIDAR),
            lambda: project_lidar(pts_t, K, T_CAM_LIDAR, (H, W))),
        "events 1M -> 1920x1080": (
            lambda: numpy_render_events(x, y, t, p),
            lambda: render_events(*ev_t, (H, W), window=WINDOW)),
        "events 1M, rotation warp": (
            lambda: numpy_render_events(x, y, t, p, warp),
            lambda: render_events(*ev_t, (H, W), window=WINDOW, warp=warp)),
    }
    results = []
    for name, (np_fn, torch_fn) in cases.items():
        ref, ours = np_fn(), torch_fn().cpu().numpy()
        differing = int((ref != ours).any(0).sum())
        if differing:
            raise SystemExit(f"{name}: numpy and torch disagree on {differing} pixels")
        (t_np, f_np), (t_torch, f_torch) = measure([np_fn, torch_fn], args.repeats, sync)
        results.append({"case": name, "numpy_ms": t_np, "torch_ms": t_torch,
                        "ratio": t_np / t_torch, "numpy_page_faults": f_np,
                        "torch_page_faults": f_torch,
                        "filled_pixels": int((ours != 0).any(0).sum())})

    distortion = ("plumb_bob", (-0.28, 0.07, 0.0005, -0.0004, 0.0))
    lens_cases = {
        "lidar 120k pts -> 1920x1080": (
            lambda: project_lidar(pts_t, K, T_CAM_LIDAR, (H, W)),
            lambda: project_lidar(pts_t, K, T_CAM_LIDAR, (H, W), distortion=distortion)),
        "events 1M, rotation warp": (
            lambda: render_events(*ev_t, (H, W), window=WINDOW, warp=warp),
            lambda: render_events(*ev_t, (H, W), window=WINDOW, warp=warp,
                                  distortion=distortion, K=K)),
    }
    lens = []
    for name, (plain_fn, lens_fn) in lens_cases.items():
        (t_plain, _), (t_lens, _) = measure([plain_fn, lens_fn], args.repeats, sync)
        lens.append({"case": name, "plain_ms": t_plain, "distorted_ms": t_lens,
                     "ratio": t_lens / t_plain})

    print(f"device {device}, torch threads {torch.get_num_threads()}, repeats {args.repeats}, "
          f"torch {torch.__version__}, numpy {np.__version__}; outputs identical\n")
    print("| case | numpy ms | torch ms | numpy / torch | page faults per call (numpy, torch) |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['case']} | {r['numpy_ms']:.1f} | {r['torch_ms']:.1f} | {r['ratio']:.2f} "
              f"| {r['numpy_page_faults']:.0f}, {r['torch_page_faults']:.0f} |")
    print("\n| case (torch) | no distortion ms | plumb_bob ms | plumb_bob / none |")
    print("|---|---:|---:|---:|")
    for r in lens:
        print(f"| {r['case']} | {r['plain_ms']:.1f} | {r['distorted_ms']:.1f} | "
              f"{r['ratio']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps({"device": str(device), "threads": torch.get_num_threads(),
                                         "repeats": args.repeats, "results": results,
                                         "distortion": lens}, indent=1))


if __name__ == "__main__":
    main()
