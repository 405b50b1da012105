"""Everything that needs a CUDA GPU, in one timed run: the CUDA tests, the GPU benchmarks (the
model, the exported backends at 512x1024 with TensorRT where installed), a one-process NCCL
training run, and the synthetic experiment at the largest step budget that
fits the time left.

    python scripts/device_checks.py --out DIR [--minutes 9] [--rows ROWS] [--jobs 8]
        [--max-steps 6000]

Written for a GPU lent for a few minutes. Each stage has its own time limit and its output
goes to DIR (``log.txt``, ``bench_*.json``, ``experiment.tar.gz``); a stage that fails is
logged and the next one runs. The experiment's step budget is chosen here: after the
training set is rendered into the cache, teacher runs of ``--probe-steps`` steps are timed
side by side on the GPU (as many as will share it: the teacher and the baseline, then
``--jobs``), and the largest multiple of ``--step-unit`` steps (at most ``--max-steps``)
whose rows fit the minutes left is used for every row (one budget for all rows, the teacher
twice it, as in docs/results.md). The rows train ``--jobs`` at a time (scripts/synthetic_experiment.py).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
STUDENT_ROWS = ("sup,sup_s1,sup_s2,full,full_s1,full_s2,full_tr,full_tr_s1,full_tr_s2,full_init,"
                "sup_init,full_sum")


class Session:
    def __init__(self, out: Path, minutes: float) -> None:
        self.out = out
        self.deadline = time.monotonic() + minutes * 60
        self.log = open(out / "log.txt", "a")

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def say(self, text: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')} {self.left():5.0f}s left] {text}"
        print(line, flush=True)
        self.log.write(line + "\n")
        self.log.flush()

    def run(self, name: str, cmd: list[str], limit: float, env: dict | None = None) -> bool:
        limit = min(limit, self.left() - 5)
        if limit < 10:
            self.say(f"{name}: skipped, {self.left():.0f} s left")
            return False
        self.say(f"{name}: $ {shlex.join(cmd)}  (limit {limit:.0f} s)")
        t0 = time.monotonic()
        try:
            # a session of its own: on timeout the whole tree goes (the experiment's rows too)
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, env=env,
                                    start_new_session=True)
            try:
                text = proc.communicate(timeout=limit)[0]
                ok, status = proc.returncode == 0, f"exit {proc.returncode}"
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                text = proc.communicate()[0]
                ok, status = False, "timed out"
        except OSError as err:
            ok, text, status = False, "", f"could not start ({err})"
        self.log.write(text[-20000:] + "\n")
        self.say(f"{name}: {status} after {time.monotonic() - t0:.0f} s")
        print(text[-1500:], flush=True)
        return ok


def probe_steps_per_s(s: Session, runs: Path, cache: str, jobs: int,
                      steps: int, env: dict) -> float | None:
    """Steps per second of one teacher run when ``jobs`` of them share the GPU (its last two
    thirds of ``steps``)."""
    procs, outs = [], []
    for k in range(jobs):
        out = runs / "probe" / str(k)
        outs.append(out)
        cmd = [PY, "-m", "anyseg_core.train", "--config", "config/train_synthetic_teacher.yaml",
               "--set", f"out_dir={out}", "--set", f"optim.steps={steps}", "--set",
               "optim.warmup_steps=1", "--set", f"train.log_every={max(1, steps // 6)}", "--set",
               "train.checkpoint_every=1000", "--set", "train.eval_samples=0", "--set",
               f"data.cache={cache}"]
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "probe.log", "w") as log:  # kept for the record when a probe fails
            procs.append(subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                          env=env))
    try:
        for p in procs:
            p.wait(timeout=max(10.0, min(180.0, s.left() - 60)))
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        s.say("probe: timed out")
        return None
    rates = []
    for out in outs:
        lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()
                 if x.strip()] if (out / "metrics.jsonl").exists() else []
        sps = [r["samples_per_s"] for r in lines if "samples_per_s" in r and r["step"] > steps // 3]
        if sps:
            rates.append(min(sps) / 8)  # batch 8 in the synthetic configs
    if not rates:
        s.say("probe: no metrics; the end of its log:\n" + "\n".join(
            (outs[0] / "probe.log").read_text().splitlines()[-15:]))
        return None
    s.say(f"probe: {jobs} teacher runs side by side, steps/s per run {min(rates):.2f} "
          f"(slowest) to {max(rates):.2f}")
    return min(rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--minutes", type=float, default=9.0)
    ap.add_argument("--rows", default=f"teacher,{STUDENT_ROWS}")
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--max-steps", type=int, default=6000)
    ap.add_argument("--runs", type=Path, default=Path("runs/device"))
    ap.add_argument("--skip-tests", action="store_true")
    ap.add_argument("--probe-steps", type=int, default=150)
    ap.add_argument("--step-unit", type=int, default=500, help="the budget is a multiple of it")
    args = ap.parse_args()
    args.runs = REPO / args.runs  # the subprocesses run in the repository root
    args.out.mkdir(parents=True, exist_ok=True)
    s = Session(args.out, args.minutes)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    s.run("gpu", ["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                  "--format=csv"], 20)
    s.run("versions", [PY, "-c", "import sys, torch, timm; print(sys.version); print('torch', "
                       "torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available(),"
                       " torch.cuda.get_device_name() if torch.cuda.is_available() else ''); "
                       "print('timm', timm.__version__)"], 60, env)
    # Everything below would quietly run on the CPU (train.device=auto) for the whole lease.
    if not s.run("cuda available", [PY, "-c", "import torch, sys; "
                                    "sys.exit(0 if torch.cuda.is_available() else 1)"], 60, env):
        s.say("no CUDA device for this Python: stopping (nothing here is worth a GPU lease "
              "on the CPU)")
        return
    if not args.skip_tests:
        s.run("cuda tests", [PY, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                             "test/core/test_sensors_pipeline.py", "test/core/test_evaluate.py",
                             "test/core/test_train.py", "-k", "cuda or precision"], 180, env)
    for name, extra in (("bench_model_cuda", []),
                        ("bench_model_cuda_288x512", ["--size", "288x512"])):
        s.run(name, [PY, "benchmarks/bench_model.py", "--device", "cuda", "--repeats", "20",
                     "--json", str(args.out / f"{name}.json"), *extra], 90, env)
    # The deployment path: one ONNX graph per subset, onnxruntime on CUDA / TensorRT (where
    # onnxruntime-gpu is installed), fp16, agreement per subset, next to PyTorch.
    s.run("bench_backends_cuda_512x1024", [PY, "benchmarks/bench_backends.py", "--device",
                                          "cuda", "--sizes", "512x1024", "--calls", "20",
                                          "--out", str(args.out / "bench_backends_cuda.json")],
          240, env)
    s.run("bench_sensors_cuda", [PY, "benchmarks/bench_sensors.py", "--device", "cuda",
                                 "--json", str(args.out / "bench_sensors_cuda.json")], 90, env)
    tiny = args.runs / "tiny_nccl"
    s.run("train on cuda (torchrun, NCCL, bf16)",
          [PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m",
           "anyseg_core.train", "--config", "config/train_tiny.yaml", "--set",
           f"out_dir={tiny}", "--set", "optim.steps=6", "--set", "train.device=cuda"], 120, env)

    cache = str(args.runs / "cache")
    env_n = dict(env, OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 1) // args.jobs)))
    if not s.run("render the training set", [PY, "-m", "anyseg_core.prefill", "--config",
                                             "config/train_synthetic_teacher.yaml", "--set",
                                             f"data.cache={cache}"], 120, env):
        return
    students = [r for r in args.rows.split(",") if r != "teacher"]
    first = [r for r in args.rows.split(",") if r == "teacher"]
    rate_1 = probe_steps_per_s(s, args.runs, cache, max(1, len(first)), args.probe_steps,
                               env_n)
    rate_n = probe_steps_per_s(s, args.runs, cache, min(args.jobs, max(1, len(students))),
                               args.probe_steps, env_n)
    if not rate_1 or not rate_n:
        return
    # A student step runs a teacher forward too: its cost in teacher steps as bench_model
    # measured it on this GPU above, else 1.7 (launch-bound small models cost what their
    # kernel count does: 1.68 x a teacher step's, counted on a CPU).
    factor = 1.7
    bench = args.out / "bench_model_cuda.json"
    if bench.exists():
        factor = max(1.0, float(json.loads(bench.read_text()).get("student_over_teacher_step",
                                                                   factor)))
    waves = -(-len(students) // args.jobs)
    # the teacher trains twice the students' steps (STEP_FACTORS of the experiment)
    per_step = 2 / rate_1 + factor * waves / rate_n
    # the teacher's evaluation (before the students), the last wave's, tables and archive;
    # 0.85 for what the probes do not see (the students' losses beyond a teacher forward)
    budget = (s.left() - 150) * 0.85
    steps = min(args.max_steps, int(budget / per_step) // args.step_unit * args.step_unit)
    s.say(f"experiment: {per_step * 1e3:.0f} ms per step for all rows (student step = "
          f"{factor:.2f} teacher steps); {budget:.0f} s -> {steps} steps")
    if steps < args.step_unit:
        s.say(f"experiment: not enough time for {args.step_unit} steps; skipped")
        return
    results = args.runs / "results"
    experiment = [PY, "scripts/synthetic_experiment.py", "--rows", args.rows, "--steps",
                  str(steps), "--jobs", str(args.jobs), "--runs", str(args.runs / "exp"),
                  "--results", str(results), "--cache", cache]
    if not s.run("experiment", experiment, s.left() - 35, env_n):
        # the rows that finished have their JSON; the tables of those
        s.run("experiment tables", [*experiment, "--report-only"], min(20, s.left() - 12), env)
    with tarfile.open(args.out / "experiment.tar.gz", "w:gz") as tar:
        if results.exists():
            tar.add(results, arcname="results")
        for log in sorted((args.runs / "exp").glob("*/experiment.log")):
            tar.add(log, arcname=f"logs/{log.parent.name}.log")
        for m in sorted((args.runs / "exp").glob("*/metrics.jsonl")):
            tar.add(m, arcname=f"metrics/{m.parent.name}.jsonl")
    # the teacher's fp16 weights travel inside results/weights/ (PUBLISHED rows)
    s.say("done")


if __name__ == "__main__":
    main()
