"""Training throughput on this machine: samples/s of a teacher step and a student step, for
each way of running the same step, as ratios taken in one run.

    python benchmarks/bench_train.py [--threads 1] [--repeats 6] [--variants all|fp32,bf16,...]
        [--size 128x224] [--batch 8] [--json OUT]

The step is the one `python -m anyseg_core.train` runs for config/train_synthetic_*.yaml
(pvt_v2_b0, 128-wide head, batch 8, OHEM L_sup; the student with per-sample anymodal dropout,
the frozen teacher's forward and L_mad + L_umd + L_cmd), on real augmented samples of the
synthetic world. Variants (each with its own model copy, started from the same weights):

* ``fp32``: what training does on a CPU today (the reference of every ratio);
* ``channels_last``: model and inputs in channels_last, as training does on CUDA;
* ``bf16``: bf16 autocast (``train.amp=bf16``; on a CPU only where it has native bf16, e.g.
  AVX-512 BF16 or AMX): computes in another precision, so not for rows compared with fp32 ones;
* ``compile``: ``torch.compile`` of the encoder (its compile time is left out).

The variants are interleaved (one step of each in turn, ``--repeats`` rounds after a warm-up)
so that a machine whose speed drifts slows them alike; the median step time is reported. The
first round of ``compile`` includes the compilation and is reported apart. Training runs one
OpenMP thread per process on these 2-core machines (two rows at a time, docs/results.md), so
``--threads 1`` is the default.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import statistics
import time
from pathlib import Path

import torch

from anyseg_core.config import load_config
from anyseg_core.data import build_dataset, class_info, collate, normalization_info, rescale_info
from anyseg_core.data.transforms import JointAugment
from anyseg_core.losses import AnySegLoss
from anyseg_core.model import AnymodalSegmentor
from anyseg_core.train import TrainItems, cpu_has_bf16, sample_present

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("fp32", "channels_last", "bf16", "compile")


def batch_of(size: tuple[int, int], batch: int) -> dict:
    """One augmented training batch of the synthetic world, as the training loop sees it."""
    cfg = load_config(REPO / "config" / "train_synthetic_student.yaml",
                      [f"data.size=[{size[0]}, {size[1]}]", "data.train_samples=64"])
    items = TrainItems(build_dataset(cfg, "train"),
                       JointAugment.from_config(cfg["augment"], normalization_info(cfg),
                                                rescale_info(cfg)), cfg["seed"])
    return collate([items[(0, i)] for i in range(batch)]), cfg


class Runner:
    """One variant: a student (trained), a frozen teacher and an optimiser of its own."""

    def __init__(self, variant: str, student: torch.nn.Module, teacher: torch.nn.Module,
                 cfg: dict) -> None:
        self.variant = variant
        self.student, self.teacher = copy.deepcopy(student), copy.deepcopy(teacher)
        if variant == "channels_last":
            self.student.to(memory_format=torch.channels_last)
            self.teacher.to(memory_format=torch.channels_last)
        if variant == "compile":
            self.student.encoder = torch.compile(self.student.encoder)
            self.teacher.encoder = torch.compile(self.teacher.encoder)
        self.optimizer = torch.optim.AdamW(self.student.parameters(), lr=1e-4)
        self.student_loss = AnySegLoss.from_config(cfg["loss"])
        self.teacher_loss = AnySegLoss(lambda_mad=0, alpha_umd=0, beta_cmd=0,
                                       ohem_thresh=cfg["loss"]["ohem_thresh"])

    def autocast(self):
        if self.variant == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step(self, batch: dict, stage: str, g: torch.Generator) -> float:
        inputs = batch["inputs"]
        if self.variant == "channels_last":
            inputs = {k: v.contiguous(memory_format=torch.channels_last)
                      for k, v in inputs.items()}
        labels = batch["label"]
        B, M = labels.shape[0], len(inputs)
        t0 = time.perf_counter()
        present = sample_present("per_sample" if stage == "student" else "none", B, M, g)
        with self.autocast():
            out = self.student(inputs, present)
            if stage == "student":
                with torch.no_grad():
                    t_out = self.teacher(inputs)
                losses = self.student_loss(out, t_out, labels, present)
            else:
                losses = self.teacher_loss(out, None, labels, present)
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        self.optimizer.step()
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--variants", default="fp32,channels_last,bf16",
                    help=f"comma list of {VARIANTS} or all (compile takes minutes to compile)")
    ap.add_argument("--size", default="128x224")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    variants = list(VARIANTS) if args.variants == "all" else args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or "fp32" not in variants:
        ap.error(f"--variants: choose from {VARIANTS}, fp32 included (the reference)")
    if "bf16" in variants and not cpu_has_bf16():
        print("bf16: this CPU has no native bf16; left out")
        variants.remove("bf16")
    size = tuple(int(v) for v in args.size.split("x"))
    batch, cfg = batch_of(size, args.batch)
    torch.manual_seed(0)
    mods = tuple(cfg["data"]["modalities"])
    classes = len(class_info(cfg)[0])
    student = AnymodalSegmentor(mods, classes, embed_dim=cfg["model"]["embed_dim"],
                                backbone_kwargs={"drop_path_rate": 0.1})
    teacher = AnymodalSegmentor(mods, classes, embed_dim=cfg["model"]["embed_dim"]).eval()
    teacher.requires_grad_(False)
    runners = {v: Runner(v, student, teacher, cfg) for v in variants}
    result = {"threads": args.threads, "size": list(size), "batch": args.batch,
              "repeats": args.repeats, "cpu_bf16": cpu_has_bf16(), "stages": {}}
    for stage in ("teacher", "student"):
        times = {v: [] for v in variants}
        first = {}
        for r in range(args.repeats + 1):  # round 0: warm-up (and compilation)
            for v, runner in runners.items():
                g = torch.Generator().manual_seed(r)  # the same dropout draws for every variant
                dt = runner.step(batch, stage, g)
                if r == 0:
                    first[v] = dt
                else:
                    times[v].append(dt)
        ref = statistics.median(times["fp32"])
        rows = {}
        for v in variants:
            med = statistics.median(times[v])
            rows[v] = {"ms_per_step": round(med * 1e3, 1),
                       "samples_per_s": round(args.batch / med, 2),
                       "speedup_vs_fp32": round(ref / med, 3),
                       "first_step_s": round(first[v], 1)}
        result["stages"][stage] = rows
        print(f"\n{stage} step, batch {args.batch} at {size[0]}x{size[1]}, "
              f"{args.threads} thread(s), median of {args.repeats}:")
        print("| variant | ms / step | samples/s | speed-up vs fp32 | first step (s) |")
        print("|---|---|---|---|---|")
        for v, row in rows.items():
            print(f"| {v} | {row['ms_per_step']} | {row['samples_per_s']} | "
                  f"{row['speedup_vs_fp32']:.2f} | {row['first_step_s']} |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
