"""Benchmark the inference backends against PyTorch eager, each in a process of its own.

    python benchmarks/bench_backends.py [--checkpoint PATH] [--sizes 128x224 288x512]
        [--calls 40] [--frames 30] [--period-ms 100] [--threads 2]
        [--out docs/benchmarks/bench_backends_cpu.json] [--markdown bench_backends.md]
    python benchmarks/bench_backends.py --quick        # a check that it runs (seconds per runner)
    python benchmarks/bench_backends.py --device cuda --sizes 512x1024   # a GPU

CPU (the default). Every runner is measured in a fresh process of its own (this script in
``--child`` mode; it hands its figures back as JSON), one after the other, never beside
another runner: ONNX Runtime's worker threads spin for a while after a run, and libgomp's
(PyTorch's) do too, so runners taking turns in one process slow whichever comes next. The
runners, in this order: torch (PyTorch eager, fp32), openvino fp32, openvino bf16 (where the
CPU has native bf16; its per-subset agreement with fp32 is the Runtime's own check,
``Runtime.bf16_agreement``), onnxruntime with its intra-op threads spinning (ONNX Runtime's
default) and with spinning off (``Runtime(spinning=False)``), and torch again: the two torch
runs show the drift of the machine over the run, and each ratio is over their mean. The
checkpoint (default: the bundled demo model) is exported once per size before any runner
starts (into a temporary cache, or ``--cache``), so no runner pays for it.

Each child, on real inputs (frames of the synthetic world, rendered before anything is
timed), measures:

- predict: ``--calls`` calls of ``Runtime.predict`` of prepared inputs back to back, for
  camera + events + LiDAR and for camera only (median ms; process CPU ms per call);
- frames: the node's worker loop, ``--frames`` frames at one every ``--period-ms`` (a 10 Hz
  camera by default; a frame that overruns starts the next at once): ``Runtime.prepare`` of
  a raw frame (the sensor processing, PyTorch whatever the backend) then ``predict``; the
  medians of each, and the process's CPU time per frame, which counts the time the
  backend's idle threads spin between frames;
- the same loop beside a competing thread (numpy element-wise work in chunks, which releases
  the GIL, as the node's executor decoding events and converting messages does): the
  competitor's chunks per second during the loop over its rate alone in the same process
  before the Runtime was built (1 = the backend took nothing from it), and the loop's
  medians under that competition.

The load average (1, 5, 15 min) is printed and kept before and after the run and each child:
measure on an idle machine. Labels of every runner are compared with the first torch run's
(share of equal pixels; ``--all-subsets`` also compares every subset on 3 frames).

``--device cuda`` keeps the earlier method (one process, runners taking turns call by call):
torch fp32 and fp16 (autocast), onnxruntime fp32 and fp16 graphs (TensorRT's execution
provider where onnxruntime-gpu has it, else CUDA's), inputs and outputs on the GPU, every
call ending with a CUDA synchronisation, agreement on every subset.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from anyseg_core.data.synthetic.dataset import SyntheticDataset  # noqa: E402
from anyseg_core.deploy import agreement, cached_export  # noqa: E402
from anyseg_core.runtime import Runtime, backend_installed  # noqa: E402

DEMO = REPO / "anyseg_ros" / "checkpoints" / "demo.safetensors"
SUBSETS = (("camera", "events", "lidar"), ("camera",))
#: The CPU runners: name -> Runtime arguments. ``torch`` runs first and last.
RUNNERS = {
    "torch": {"backend": "torch"},
    "openvino": {"backend": "openvino"},
    "openvino-bf16": {"backend": "openvino", "precision": "bf16"},
    "onnxruntime-spin": {"backend": "onnxruntime", "spinning": True},
    "onnxruntime-nospin": {"backend": "onnxruntime", "spinning": False},
}
RAW_FRAMES = 3  # the frames a child renders and cycles through
QUICK = {"sizes": ["64x96"], "calls": 3, "frames": 4, "period_ms": 30.0}


def load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ------------------------------------------------------------------------------ a child

class Competitor(threading.Thread):
    """Chunks of numpy element-wise work (they release the GIL) until stopped; ``rate``
    gives the chunks per second between two marks."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        import numpy as np

        self.a = np.random.default_rng(0).random(1 << 18, dtype=np.float32)
        self.b = np.empty_like(self.a)
        self.chunks = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        import numpy as np

        a, b = self.a, self.b
        while not self._stop_event.is_set():
            np.multiply(a, 1.0001, out=b)
            np.add(b, a, out=b)
            np.sqrt(b, out=b)
            self.chunks += 1

    def mark(self) -> tuple[float, int]:
        return time.perf_counter(), self.chunks

    @staticmethod
    def rate(start: tuple[float, int], end: tuple[float, int]) -> float:
        return (end[1] - start[1]) / (end[0] - start[0])

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def competitor_alone(seconds: float) -> float:
    c = Competitor()
    c.start()
    time.sleep(0.1)
    start = c.mark()
    time.sleep(seconds)
    rate = Competitor.rate(start, c.mark())
    c.stop()
    return rate


def node_loop(runtime: Runtime, raws: list, frames: int, period: float) -> dict:
    """The node's worker: prepare a raw frame, predict, one frame every ``period`` s."""
    prepare, predict = [], []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    due = wall0
    for i in range(frames):
        now = time.perf_counter()
        if now < due:
            time.sleep(due - now)
        due = max(due + period, time.perf_counter())
        t0 = time.perf_counter()
        inputs = runtime.prepare(raws[i % len(raws)])
        t1 = time.perf_counter()
        runtime.predict(inputs, confidence=True)
        t2 = time.perf_counter()
        prepare.append(t1 - t0)
        predict.append(t2 - t1)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {"prepare_ms": 1e3 * statistics.median(prepare),
            "predict_ms": 1e3 * statistics.median(predict),
            "frame_ms": 1e3 * statistics.median(a + b for a, b in zip(prepare, predict)),
            "cpu_ms_per_frame": 1e3 * cpu / frames, "wall_ms_per_frame": 1e3 * wall / frames}


def child(spec: dict) -> dict:
    """One runner, measured in this process (see the module docstring)."""
    torch.set_num_threads(spec["threads"])
    size = tuple(spec["size"])
    work = Path(spec["work"])
    data = SyntheticDataset(num_samples=RAW_FRAMES, split="val", seed=3, size_hw=size)
    raws = [data.raw(i) for i in range(RAW_FRAMES)]
    out = {"runner": spec["runner"], "load_start": load(), "pid": os.getpid()}
    period = spec["period_ms"] / 1e3
    duration = max(0.5, spec["frames"] * period)
    out["competitor_alone_per_s"] = competitor_alone(duration)
    import warnings
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # bf16 asked on a CPU without it
        runtime = Runtime(spec["checkpoint"], device="cpu", input_size=size,
                          threads=spec["threads"], **RUNNERS[spec["runner"]])
    out["start_s"] = time.perf_counter() - start
    out["precision"] = runtime.precision
    if runtime.bf16_agreement is not None:
        out["bf16_agreement"] = runtime.bf16_agreement.subsets
    prepared = runtime.prepare(raws[0])
    out["predict"] = {}
    for subset in SUBSETS:
        inputs = {m: prepared[m] for m in subset}
        labels = runtime.predict(inputs, confidence=True).labels  # untimed
        times, cpus = [], []
        for _ in range(spec["calls"]):
            c0, t0 = time.process_time(), time.perf_counter()
            runtime.predict(inputs, confidence=True)
            times.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
        key = "+".join(subset)
        save_file({"labels": labels.cpu().contiguous()},
                  work / f"{spec['tag']}-{key}.safetensors")
        out["predict"][key] = {"median_ms": 1e3 * statistics.median(times),
                               "cpu_ms": 1e3 * statistics.median(cpus)}
    out["frames"] = node_loop(runtime, raws, spec["frames"], period)
    competitor = Competitor()
    competitor.start()
    time.sleep(0.1)
    mark = competitor.mark()
    out["frames_with_competitor"] = node_loop(runtime, raws, spec["frames"], period)
    out["frames_with_competitor"]["competitor_per_s"] = Competitor.rate(mark, competitor.mark())
    competitor.stop()
    out["competitor_ratio"] = (out["frames_with_competitor"]["competitor_per_s"]
                               / out["competitor_alone_per_s"])
    out["load_end"] = load()
    if spec["all_subsets"]:  # untimed: labels of every subset of every frame
        labels = {}
        for i, raw in enumerate(raws):
            x = runtime.prepare(raw)
            for subset in runtime.subsets():
                labels[f"{i}:{'+'.join(subset)}"] = runtime.predict(
                    {m: x[m] for m in subset}).labels.cpu()
        save_file({k: v.contiguous() for k, v in labels.items()},
                  work / f"{spec['tag']}-all.safetensors")
    return out


# ----------------------------------------------------------------------------- the parent

def run_child(spec: dict) -> dict:
    path = Path(spec["work"]) / f"{spec['tag']}.json"
    spec = {**spec, "result": str(path)}
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                          cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"runner {spec['runner']} at {spec['size']} failed "
                           f"(exit {proc.returncode}):\n{proc.stdout[-4000:]}")
    return json.loads(path.read_text())


def equal_share(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a == b).float().mean())


def runners_here(requested: list[str]) -> list[str]:
    out = []
    for name in requested:
        backend = RUNNERS[name]["backend"]
        if backend_installed(backend):
            out.append(name)
        else:
            print(f"{name}: {backend} is not installed here, left out", flush=True)
    return out


def measure_size(args, size: tuple[int, int], text: str, work: Path) -> list[dict]:
    if any(RUNNERS[n]["backend"] != "torch" for n in args.runners):
        start = time.perf_counter()
        cached_export(args.checkpoint, size, "fp32")
        print(f"{text}: export ready ({time.perf_counter() - start:.1f} s)", flush=True)
    order = [n for n in args.runners if n != "torch"]
    order = ["torch", *order, "torch"] if "torch" in args.runners else order
    results = []
    for k, name in enumerate(order):
        spec = {"runner": name, "size": list(size), "checkpoint": str(args.checkpoint),
                "threads": args.threads, "calls": args.calls, "frames": args.frames,
                "period_ms": args.period_ms, "work": str(work), "tag": f"{text}-{k}",
                "all_subsets": args.all_subsets}
        r = run_child(spec)
        r.update(size=text, order=k)
        if name == "openvino-bf16" and r["precision"] != "bf16":
            print(f"{text} openvino-bf16: this CPU has no bf16 (it ran fp32), left out",
                  flush=True)
            continue
        results.append(r)
        p = r["predict"]
        f, fc = r["frames"], r["frames_with_competitor"]
        print(f"{text} {name:18s} " + "  ".join(
            f"{key} {v['median_ms']:.1f} ms" for key, v in p.items())
              + f" | frame {f['frame_ms']:.1f} ms, CPU {f['cpu_ms_per_frame']:.1f} ms/frame"
              f" | with competitor: predict {fc['predict_ms']:.1f} ms, competitor x"
              f"{r['competitor_ratio']:.2f} | load {r['load_start'][0]:.2f}->"
              f"{r['load_end'][0]:.2f}", flush=True)
    torches = [r for r in results if r["runner"] == "torch"]
    first = torches[0] if torches else None
    for r in results:
        for key, v in r["predict"].items():
            if torches:
                base = statistics.mean(t["predict"][key]["median_ms"] for t in torches)
                v["ratio"] = v["median_ms"] / base
                v["agreement"] = equal_share(
                    load_file(work / f"{text}-{r['order']}-{key}.safetensors")["labels"],
                    load_file(work / f"{text}-{first['order']}-{key}.safetensors")["labels"])
        if torches:
            base = statistics.mean(t["frames"]["frame_ms"] for t in torches)
            r["frames"]["ratio"] = r["frames"]["frame_ms"] / base
        if args.all_subsets and first is not None and r is not first:
            mine = load_file(work / f"{text}-{r['order']}-all.safetensors")
            ref = load_file(work / f"{text}-{first['order']}-all.safetensors")
            per = {}
            for k2, labels in mine.items():
                per.setdefault(k2.split(":", 1)[1], []).append(equal_share(labels, ref[k2]))
            r["agreement_per_subset"] = {k2: statistics.mean(v) for k2, v in per.items()}
    return results


def markdown(results: list[dict], info: dict) -> str:
    lines = [f"CPU: {info['cpu']}, {info['cores']} cores; {info['threads']} threads per "
             f"runner; load average before {info['load_before']}, after "
             f"{info['load_after']}; `{info['command']}`", ""]
    keys = ["+".join(s) for s in SUBSETS]
    names = {"camera+events+lidar": "camera + events + LiDAR", "camera": "camera only"}
    lines += ["| network size | runner (own process) | " + " | ".join(
        f"{names.get(k, k)} ms (x torch)" for k in keys)
        + " | labels = first torch run's | bf16 = fp32, worst subset | load 1 min, start -> end |",
        "|---|---|" + "---:|" * len(keys) + "---:|---:|---:|"]
    for r in results:
        p = r["predict"]
        cells = [f"{p[k]['median_ms']:.1f} ({p[k].get('ratio', float('nan')):.2f})"
                 for k in keys]
        agree = " / ".join(f"{100 * p[k].get('agreement', float('nan')):.2f} %" for k in keys)
        bf16 = (f"{100 * min(r['bf16_agreement'].values()):.2f} % "
                f"({min(r['bf16_agreement'], key=r['bf16_agreement'].get)})"
                if r.get("bf16_agreement") else "")
        lines.append(f"| {r['size']} | {r['runner']} | " + " | ".join(cells)
                     + f" | {agree} | {bf16} | {r['load_start'][0]:.2f} -> "
                     f"{r['load_end'][0]:.2f} |")
    lines += ["", "| network size | runner (own process) | frame: prepare ms | predict ms | "
              "prepare + predict ms (x torch) | CPU ms per frame | beside a competing thread: "
              "prepare ms | predict ms | the competitor's rate, during frames / alone |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        f, fc = r["frames"], r["frames_with_competitor"]
        lines.append(f"| {r['size']} | {r['runner']} | {f['prepare_ms']:.1f} | "
                     f"{f['predict_ms']:.1f} | {f['frame_ms']:.1f} "
                     f"({f.get('ratio', float('nan')):.2f}) | {f['cpu_ms_per_frame']:.1f} | "
                     f"{fc['prepare_ms']:.1f} | {fc['predict_ms']:.1f} | "
                     f"{r['competitor_ratio']:.2f} |")
    return "\n".join(lines) + "\n"


def main_cpu(args, argv) -> int:
    if args.quick:
        for k, v in QUICK.items():
            if getattr(args, k) == ARG_DEFAULTS[k]:
                setattr(args, k, v)
    args.runners = runners_here(args.runners)
    info = {"command": "python benchmarks/bench_backends.py " + " ".join(
                argv if argv is not None else sys.argv[1:]),
            "cpu": cpu_name(), "cores": os.cpu_count(), "threads": args.threads,
            "torch": torch.__version__, "checkpoint": str(args.checkpoint),
            "calls": args.calls, "frames": args.frames, "period_ms": args.period_ms,
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
            "load_before": load()}
    for module in ("onnxruntime", "openvino"):
        try:
            info[module] = __import__(module).__version__
        except ImportError:
            pass
    print(f"load average before: {info['load_before']} ({info['cores']} cores; measure on "
          f"an idle machine)", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_backends_") as tmp:
        cache = args.cache or Path(tmp) / "cache"
        os.environ["ANYSEG_CACHE"] = str(cache)  # the children inherit it
        for text in args.sizes:
            size = tuple(int(v) for v in text.split("x"))
            work = Path(tmp) / "work"
            work.mkdir(exist_ok=True)
            results += measure_size(args, size, text, work)
    info["load_after"] = load()
    print(f"load average after: {info['load_after']}", flush=True)
    table = markdown(results, info)
    print("\n" + table)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"method": "each runner in a process of its own",
                                        "device": "cpu", **info, "results": results},
                                       indent=1))
    return 0


# ------------------------------------------------------------------ CUDA: one process

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


def measure_interleaved(runtimes: dict[str, Runtime], inputs: dict, calls: int
                        ) -> dict[str, dict]:
    times = {name: [] for name in runtimes}
    names = list(runtimes)
    for name in names:  # one untimed call each
        runtimes[name].predict(inputs, confidence=True)
    for i in range(calls):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            start = time.perf_counter()
            runtimes[name].predict(inputs, confidence=True)
            torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    reference = runtimes["torch"].predict(inputs).labels
    base = statistics.median(times["torch"])
    return {name: {"median_ms": 1e3 * statistics.median(t), "ratio": statistics.median(t) / base,
                   "agreement": float((runtimes[name].predict(inputs).labels
                                       == reference).float().mean())}
            for name, t in times.items()}


def main_cuda(args, argv) -> int:
    rows, agreements = [], {}
    with tempfile.TemporaryDirectory(prefix="bench_backends_") as cache:
        os.environ["ANYSEG_CACHE"] = str(args.cache or cache)
        for text in args.sizes:
            size = tuple(int(v) for v in text.split("x"))
            runtimes = cuda_runners(args.checkpoint, size)
            data = SyntheticDataset(num_samples=3, split="val", seed=3, size_hw=size)
            prepared = runtimes["torch"].prepare(data.raw(0))
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
                for name, r in measure_interleaved(runtimes, inputs, args.calls).items():
                    rows.append({"size": text, "subset": "+".join(subset), "backend": name,
                                 **r})
                    print(f"{text} {'+'.join(subset):22s} {name:14s} "
                          f"{r['median_ms']:8.1f} ms  x{r['ratio']:.2f}  "
                          f"agree {100 * r['agreement']:.2f} %", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "command": "python benchmarks/bench_backends.py " + " ".join(
                argv if argv is not None else sys.argv[1:]),
            "method": "runners taking turns call by call in one process",
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "device": "cuda", "calls": args.calls, "rows": rows,
            "agreement_per_subset": agreements}, indent=1))
    return 0


ARG_DEFAULTS = {"sizes": ["128x224", "288x512"], "calls": 40, "frames": 30, "period_ms": 100.0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, default=DEMO)
    ap.add_argument("--sizes", nargs="+", default=ARG_DEFAULTS["sizes"])
    ap.add_argument("--calls", type=int, default=ARG_DEFAULTS["calls"],
                    help="timed predict calls per subset and runner")
    ap.add_argument("--frames", type=int, default=ARG_DEFAULTS["frames"],
                    help="frames of the node-like loop, alone and beside the competitor")
    ap.add_argument("--period-ms", type=float, default=ARG_DEFAULTS["period_ms"],
                    help="one frame every this many ms in the loop (100: a 10 Hz camera)")
    ap.add_argument("--threads", type=int, default=2, help="torch and backend CPU threads")
    ap.add_argument("--runners", nargs="+", choices=list(RUNNERS), default=list(RUNNERS),
                    help="CPU runners (torch runs first and last)")
    ap.add_argument("--quick", action="store_true",
                    help=f"a check that it runs: {QUICK} unless given")
    ap.add_argument("--cache", type=Path,
                    help="export cache (ANYSEG_CACHE) to use; default a temporary one")
    ap.add_argument("--out", type=Path, help="also write the figures as JSON")
    ap.add_argument("--markdown", type=Path, help="also write the tables as markdown")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--all-subsets", action="store_true",
                    help="also the agreement of every subset on 3 frames (always on cuda)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        Path(spec["result"]).write_text(json.dumps(child(spec)))
        return 0
    torch.set_num_threads(args.threads)
    return main_cuda(args, argv) if args.device == "cuda" else main_cpu(args, argv)


if __name__ == "__main__":
    sys.exit(main())
