"""Benchmark the inference backends against PyTorch eager: latency ratios and agreement.

    python benchmarks/bench_backends.py [--checkpoint PATH] [--sizes 128x224 288x512]
        [--calls 40] [--threads 2] [--out docs/benchmarks/bench_backends_cpu.json]
    python benchmarks/bench_backends.py --device cuda --sizes 512x1024   # a GPU

On ``--device cuda`` the runners are torch fp32 and fp16 (autocast) and onnxruntime fp32 and
fp16 graphs (TensorRT's execution provider where onnxruntime-gpu has it, with fp16 engines
for the fp16 graphs, else CUDA's), inputs and outputs on the GPU (IO binding); every call
ends with a CUDA synchronisation; agreement is also checked on every subset (``--all-subsets``
does that on the CPU too).

For each network size, one Runtime per backend is built on the CPU from the same checkpoint
(default: the bundled demo model): torch (eager, fp32), onnxruntime (fp32), openvino (fp32)
and openvino bf16 where this CPU has bf16 instructions (OpenVINO runs f32 otherwise and the
row is left out). The exported backends export the checkpoint once into a temporary cache.
Inputs are real: a frame of the synthetic world, prepared once (sensor processing is not
timed; it is the same code for every backend). For two subsets, camera + events + LiDAR and
camera only, each call is ``Runtime.predict`` of the prepared inputs (class ids and
confidence on the CPU). The runners take turns call by call, in a rotating order, so drift
and background load fall on all alike; the figure is each runner's median over torch's
median in the same run (below 1 is faster). Agreement is the share of pixels whose labels
equal torch's, over the same inputs, per subset (every subset is checked by the tests).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from anyseg_core.data.synthetic.dataset import SyntheticDataset  # noqa: E402
from anyseg_core.deploy import agreement  # noqa: E402
from anyseg_core.runtime import Runtime, backend_installed  # noqa: E402

DEMO = REPO / "anyseg_ros" / "checkpoints" / "demo.safetensors"
SUBSETS = (("camera", "events", "lidar"), ("camera",))


def cuda_runners(checkpoint: Path, size: tuple[int, int]) -> dict[str, Runtime]:
    out = {"torch": Runtime(checkpoint, device="cuda", input_size=size),
           "torch fp16": Runtime(checkpoint, device="cuda", input_size=size, precision="fp16")}
    if backend_installed("onnxruntime"):
        for precision in ("fp32", "fp16"):
            try:
                r = Runtime(checkpoint, device="cuda", input_size=size, backend="onnxruntime",
                            precision=precision)
            except ValueError as e:  # no CUDA execution provider in this onnxruntime
                print(f"onnxruntime {precision} on cuda: {e}", flush=True)
                break
            out[f"onnxruntime {precision} ({r.engine.providers[0]})"] = r
    return out


def runners(checkpoint: Path, size: tuple[int, int], threads: int) -> dict[str, Runtime]:
    out = {"torch": Runtime(checkpoint, device="cpu", input_size=size)}
    if backend_installed("onnxruntime"):
        out["onnxruntime"] = Runtime(checkpoint, device="cpu", input_size=size,
                                     backend="onnxruntime", threads=threads)
    if backend_installed("openvino"):
        out["openvino"] = Runtime(checkpoint, device="cpu", input_size=size,
                                  backend="openvino", threads=threads)
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            bf16 = Runtime(checkpoint, device="cpu", input_size=size, backend="openvino",
                           precision="bf16", threads=threads)
        if bf16.precision == "bf16":
            out["openvino bf16"] = bf16
    return out


def measure(runtimes: dict[str, Runtime], inputs: dict, calls: int) -> dict[str, dict]:
    times = {name: [] for name in runtimes}
    names = list(runtimes)
    for name in names:  # one untimed call each
        runtimes[name].predict(inputs, confidence=True)
    for i in range(calls):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            start = time.perf_counter()
            runtimes[name].predict(inputs, confidence=True)
            if runtimes[name].device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    reference = runtimes["torch"].predict(inputs).labels
    base = statistics.median(times["torch"])
    return {name: {"median_ms": 1e3 * statistics.median(t), "ratio": statistics.median(t) / base,
                   "agreement": float((runtimes[name].predict(inputs).labels
                                       == reference).float().mean())}
            for name, t in times.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, default=DEMO)
    ap.add_argument("--sizes", nargs="+", default=["128x224", "288x512"])
    ap.add_argument("--calls", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2, help="torch and backend CPU threads")
    ap.add_argument("--out", type=Path, help="also write the figures as JSON")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--all-subsets", action="store_true",
                    help="also the agreement of every subset on 3 frames (always on cuda)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows, agreements = [], {}
    with tempfile.TemporaryDirectory(prefix="bench_backends_") as cache:
        os.environ["ANYSEG_CACHE"] = cache
        for text in args.sizes:
            size = tuple(int(v) for v in text.split("x"))
            runtimes = (cuda_runners(args.checkpoint, size) if args.device == "cuda"
                        else runners(args.checkpoint, size, args.threads))
            data = SyntheticDataset(num_samples=3, split="val", seed=3, size_hw=size)
            prepared = runtimes["torch"].prepare(data.raw(0))
            if args.all_subsets or args.device == "cuda":
                frames = [data.raw(i) for i in range(3)]
                for name, r in runtimes.items():
                    if name != "torch":
                        scores = agreement(runtimes["torch"], r, frames)
                        agreements.setdefault(text, {})[name] = scores
                        print(f"{text} {name}: agreement per subset, worst "
                              f"{100 * min(scores.values()):.2f} % "
                              f"({min(scores, key=scores.get)})", flush=True)
            for subset in SUBSETS:
                inputs = {m: prepared[m] for m in subset}
                for name, r in measure(runtimes, inputs, args.calls).items():
                    rows.append({"size": text, "subset": "+".join(subset), "backend": name,
                                 **r})
                    print(f"{text} {'+'.join(subset):22s} {name:14s} "
                          f"{r['median_ms']:8.1f} ms  x{r['ratio']:.2f}  "
                          f"agree {100 * r['agreement']:.2f} %", flush=True)
    print("\n| size | subset | " + " | ".join(
        n for n in dict.fromkeys(r["backend"] for r in rows) if n != "torch")
          + " |")
    backends = [n for n in dict.fromkeys(r["backend"] for r in rows) if n != "torch"]
    print("|---|---|" + "---|" * len(backends))
    for (size, subset) in dict.fromkeys((r["size"], r["subset"]) for r in rows):
        cells = {r["backend"]: r for r in rows if (r["size"], r["subset"]) == (size, subset)}
        torch_ms = cells["torch"]["median_ms"]
        print(f"| {size} | {subset} (torch {torch_ms:.0f} ms) | " + " | ".join(
            f"{cells[b]['ratio']:.2f} ({100 * cells[b]['agreement']:.2f} %)" for b in backends)
              + " |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "command": "python benchmarks/bench_backends.py " + " ".join(argv or sys.argv[1:]),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "device": args.device, "threads": args.threads, "calls": args.calls, "rows": rows,
            "agreement_per_subset": agreements}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
