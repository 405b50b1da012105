"""Segmentor speed and memory: one-pass encoding vs a per-modality loop, and training steps.

    python benchmarks/bench_model.py [--size 128x224] [--batch 8] [--embed 128] [--repeats 5]
        [--device cpu|cuda] [--json OUT] [--profile]

1. Inference: the AnymodalSegmentor encodes every present (sample, modality) pair in ONE
   backbone pass; the reference code loops over modalities (and samples). Both variants run
   here on the same weights and inputs (3 modalities, every sample complete), their outputs
   are checked to agree, and the ratio loop / one-pass is printed (> 1: one pass is faster).
2. Training: samples per second of a teacher step (PML, supervised loss) and of a student
   step (anymodal dropout, frozen teacher forward, L_sup + L_mad + L_umd + L_cmd), and the
   ratio student / teacher step time.
3. Peak memory: CUDA max_memory_allocated on a GPU; on CPU the growth of the process's peak
   resident set over the run (coarse: the allocator keeps freed memory).
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from anyseg_core.losses import AnySegLoss
from anyseg_core.model import AnymodalSegmentor
from anyseg_core.train import sample_present

MODS = ("camera", "events", "lidar")


def per_modality_loop(model: AnymodalSegmentor, inputs: dict) -> torch.Tensor:
    """The reference code's way: encode each modality on its own, then fuse and decode."""
    per_stage = None
    for m in MODS:
        feats = model.encoder(inputs[m])
        per_stage = [list(f[None]) for f in feats] if per_stage is None else \
            [acc + [f] for acc, f in zip(per_stage, feats)]
    fused = [torch.stack(fs).mean(0) for fs in per_stage]
    logits = model.head(fused)
    H, W = inputs[MODS[0]].shape[-2:]
    return F.interpolate(logits, size=(H, W), mode="bilinear", align_corners=False)


def timed(fn, repeats: int, sync) -> float:
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="128x224")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--embed", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--profile", action="store_true",
                    help="also time the bare encoder on all pairs vs one modality at a time, "
                         "and print torch.profiler's top operators of one forward")
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(0)
    B = args.batch
    inputs = {m: torch.randn(B, 3, h, w, device=device) for m in MODS}
    labels = torch.randint(0, 19, (B, h, w), device=device)

    model = AnymodalSegmentor(MODS, 19, embed_dim=args.embed).to(device).eval()
    with torch.inference_mode():
        # The agreement check in full fp32: TF32 (cuDNN's default on CUDA) rounds inputs to
        # 10-bit mantissas, and the two paths' batch sizes may pick different kernels.
        tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        try:
            a = model(inputs).logits
            b = per_modality_loop(model, inputs)
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
        max_diff = float((a - b).abs().max())
        tolerance = 1e-3 if cuda else 1e-4  # other GPU kernels per batch size round otherwise
        assert torch.allclose(a, b, atol=tolerance, rtol=tolerance), (
            f"the two encodings disagree (largest difference {max_diff:.2e})")
        t_one = timed(lambda: model(inputs), args.repeats, sync)
        t_loop = timed(lambda: per_modality_loop(model, inputs), args.repeats, sync)
        if args.profile:
            x_all = torch.cat([inputs[m] for m in MODS])
            t_enc_all = timed(lambda: model.encoder(x_all), args.repeats, sync)
            t_enc_each = timed(lambda: [model.encoder(inputs[m]) for m in MODS], args.repeats,
                               sync)
            print(f"bare encoder: all {len(x_all)} pairs at once {t_enc_all * 1e3:.1f} ms, "
                  f"{len(MODS)} calls of {B} {t_enc_each * 1e3:.1f} ms")
            with torch.profiler.profile() as prof:
                model(inputs)
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))

    teacher = AnymodalSegmentor(MODS, 19, embed_dim=args.embed).to(device).eval()
    teacher.requires_grad_(False)
    student = AnymodalSegmentor(MODS, 19, embed_dim=args.embed).to(device).train()
    opt_t = torch.optim.AdamW(teacher.parameters(), lr=1e-4)
    opt_s = torch.optim.AdamW(student.parameters(), lr=1e-4)
    sup_only, full = AnySegLoss(0, 0, 0), AnySegLoss()
    g = torch.Generator().manual_seed(0)

    def teacher_step():
        teacher.train().requires_grad_(True)
        loss = sup_only(teacher(inputs), None, labels)["loss"]
        opt_t.zero_grad()
        loss.backward()
        opt_t.step()
        teacher.eval().requires_grad_(False)

    def student_step():
        present = sample_present("per_sample", B, 3, g).to(device)
        out = student(inputs, present)
        with torch.no_grad():
            t_out = teacher(inputs)
        loss = full(out, t_out, labels, present)["loss"]
        opt_s.zero_grad()
        loss.backward()
        opt_s.step()

    t_teacher = timed(teacher_step, args.repeats, sync)
    t_student = timed(student_step, args.repeats, sync)
    peak = (torch.cuda.max_memory_allocated(device) / 2**20 if cuda else
            (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024)
    res = {
        "device": str(device), "threads": torch.get_num_threads(), "size_hw": [h, w],
        "batch": B, "embed_dim": args.embed,
        "inference_ms": {"one_pass": t_one * 1e3, "per_modality_loop": t_loop * 1e3},
        "loop_over_one_pass": t_loop / t_one,
        "train_samples_per_s": {"teacher": B / t_teacher, "student": B / t_student},
        "student_over_teacher_step": t_student / t_teacher,
        "peak_memory_mib": peak,
        "peak_memory_kind": "cuda max_memory_allocated" if cuda else "growth of peak RSS",
        "one_pass_vs_loop_max_abs_diff": max_diff,
    }
    print(f"{device}, {res['threads']} threads, batch {B}, {w}x{h}, 3 modalities, "
          f"pvt_v2_b0 + head {args.embed}")
    print("| measure | value |\n|---|---|")
    print(f"| inference, one pass (ms / batch) | {t_one * 1e3:.1f} |")
    print(f"| inference, per-modality loop (ms / batch) | {t_loop * 1e3:.1f} |")
    print(f"| loop / one pass | {res['loop_over_one_pass']:.2f} |")
    print(f"| teacher training (samples/s) | {B / t_teacher:.2f} |")
    print(f"| student training (samples/s) | {B / t_student:.2f} |")
    print(f"| student step / teacher step | {res['student_over_teacher_step']:.2f} |")
    print(f"| peak memory (MiB, {res['peak_memory_kind']}) | {peak:.0f} |")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
