"""How strongly each loss term of the student pulls on the encoder at the start of training.

    python scripts/loss_balance.py [--teacher docs/results/weights/teacher.safetensors]
        [--config config/train_synthetic_student.yaml] [--batch 8] [--seed 0]

One augmented batch of the configured data, a student at its own initialisation (as the
training command builds it) with a per-sample dropout mask, and the frozen teacher: the norm
of the gradient on the encoder's parameters of L_sup and of each weighted distillation term,
at both KL scales (``mean``: the authors', ``sum``: the earlier per-pixel one), and their
ratio to L_sup's. The figures of docs/results.md ("at step 0 ...") come from it.
"""
from __future__ import annotations

import argparse

import torch

from anyseg_core.checkpoint import build_model
from anyseg_core.config import load_config
from anyseg_core.data import build_dataset, class_info, collate, normalization_info, rescale_info
from anyseg_core.data.transforms import JointAugment
from anyseg_core.losses import (crossmodal_distillation, prediction_distillation,
                                supervised_loss, unimodal_distillation)
from anyseg_core.train import TrainItems, build_trained_model, sample_present


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--teacher", default="docs/results/weights/teacher.safetensors")
    ap.add_argument("--config", default="config/train_synthetic_student.yaml")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cfg = load_config(args.config, [])
    loss = cfg["loss"]
    items = TrainItems(build_dataset(cfg, "train"),
                       JointAugment.from_config(cfg["augment"], normalization_info(cfg),
                                                rescale_info(cfg)), cfg["seed"])
    batch = collate([items[(0, i)] for i in range(args.batch)])
    torch.manual_seed(cfg["seed"])
    student = build_trained_model(cfg, len(class_info(cfg)[0])).train()
    teacher, _ = build_model(args.teacher)
    mods = len(cfg["data"]["modalities"])
    present = sample_present("per_sample", args.batch, mods,
                             torch.Generator().manual_seed(args.seed))
    with torch.no_grad():
        t_out = teacher(batch["inputs"])
    out = student(batch["inputs"], present)

    def norm(term: torch.Tensor) -> float:
        student.zero_grad()
        term.backward(retain_graph=True)
        grads = [p.grad for p in student.encoder.parameters() if p.grad is not None]
        return float(torch.sqrt(sum((g ** 2).sum() for g in grads)))

    sup = norm(supervised_loss(out.logits, batch["label"], ohem_thresh=loss["ohem_thresh"]))
    print(f"encoder gradient norm of each term at step 0 (ratio to L_sup's); {args.batch} "
          f"samples of {cfg['data']['dataset']}, teacher {args.teacher}")
    print("| term | KL scale | norm | / L_sup |\n|---|---|---:|---:|")
    print(f"| L_sup | - | {sup:.4g} | 1 |")
    for reduction in ("mean", "sum"):
        terms = {
            f"{loss['lambda_mad']:g} L_mad": loss["lambda_mad"] * prediction_distillation(
                out.logits, t_out.logits, batch["label"], reduction=reduction),
            f"{loss['alpha_umd']:g} L_umd": loss["alpha_umd"] * unimodal_distillation(
                out.features, t_out.features, present, reduction=reduction),
            f"{loss['beta_cmd']:g} L_cmd": loss["beta_cmd"] * crossmodal_distillation(
                out.features, t_out.features, present, reduction=reduction)}
        for name, term in terms.items():
            n = norm(term)
            print(f"| {name} | {reduction} | {n:.4g} | {n / sup:.3g} |")


if __name__ == "__main__":
    main()
