"""Segmentation metrics from one confusion matrix (docs/method.md, "Anymodal evaluation")."""
from __future__ import annotations

from typing import Sequence

import torch

from .modalities import IGNORE_INDEX


class ConfusionMatrix:
    """Accumulates a K x K confusion matrix (rows: ground truth, columns: prediction) on the
    device of the first update; pixels labelled ``ignore_index`` are skipped, and any other
    label outside [0, K) is a ValueError (a class mapping that does not fit). A labelled
    pixel predicted as no class (255, e.g. a Runtime's ``min_confidence``, or any id
    outside [0, K)) is a miss of its class, counted in ``unpredicted`` (per ground-truth
    class), and a false positive of none."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.matrix: torch.Tensor | None = None
        self.unpredicted: torch.Tensor | None = None

    def update(self, pred: torch.Tensor, label: torch.Tensor) -> None:
        """``pred`` and ``label``: integer class ids of the same shape."""
        if pred.shape != label.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and label {tuple(label.shape)} "
                             f"differ in shape")
        K = self.num_classes
        if self.matrix is None:
            self.matrix = torch.zeros(K, K, dtype=torch.int64, device=label.device)
        if self.unpredicted is None:
            self.unpredicted = torch.zeros(K, dtype=torch.int64, device=self.matrix.device)
        label = label.reshape(-1).long()
        pred = pred.reshape(-1).long().to(label.device)
        valid = label != self.ignore_index
        outside = valid & ((label < 0) | (label >= K))
        if bool(outside.any()):  # a wrong class mapping must not pass as fewer pixels
            bad = sorted(set(label[outside].unique().tolist()))[:8]
            raise ValueError(f"labels {bad} are outside [0, {K}) and not the ignore index "
                             f"{self.ignore_index}: the labels and the model's {K} classes "
                             "do not match")
        label, pred = label[valid], pred[valid]
        known = (pred >= 0) & (pred < K)
        self.matrix += torch.bincount(label[known] * K + pred[known],
                                      minlength=K * K).view(K, K)
        self.unpredicted += torch.bincount(label[~known], minlength=K)

    def merge(self, other: "ConfusionMatrix") -> None:
        for name in ("matrix", "unpredicted"):
            theirs, mine = getattr(other, name), getattr(self, name)
            if theirs is not None:
                setattr(self, name, theirs.clone() if mine is None
                        else mine + theirs.to(mine.device))

    def compute(self) -> dict:
        """``miou`` over the classes that occur in the labels or the predictions (classes seen
        by neither are left out, unlike the reference code which counts them as 0),
        ``iou`` per class (None where left out), ``recall`` per class (share of its labelled
        pixels predicted as it; None where it has none), ``precision`` per class (share of the
        pixels predicted as it that are it; None where none is), ``pixel_acc``, ``pixels``,
        ``matrix``, the counts (rows: ground truth, columns: prediction) as lists, and
        ``unpredicted``, per class the labelled pixels predicted as no class."""
        K = self.num_classes
        m = self.matrix if self.matrix is not None else torch.zeros(K, K, dtype=torch.int64)
        m = m.double().cpu()
        missed = (self.unpredicted.double().cpu() if self.unpredicted is not None
                  else torch.zeros(K, dtype=torch.float64))
        tp = m.diag()
        gt, pr = m.sum(1) + missed, m.sum(0)
        union = gt + pr - tp
        seen = union > 0
        iou = torch.where(seen, tp / union.clamp(min=1), torch.zeros_like(tp))
        total = gt.sum()

        def share(den: torch.Tensor) -> list:
            return [float(t / d) if d > 0 else None for t, d in zip(tp.tolist(), den.tolist())]
        return {
            "miou": float(iou[seen].mean()) if seen.any() else 0.0,
            "iou": [float(v) if s else None for v, s in zip(iou.tolist(), seen.tolist())],
            "recall": share(gt),
            "precision": share(pr),
            "pixel_acc": float(tp.sum() / total) if total > 0 else 0.0,
            "pixels": int(total),
            "matrix": m.long().tolist(),
            "unpredicted": missed.long().tolist(),
        }


def miou(preds: Sequence[torch.Tensor], labels: Sequence[torch.Tensor], num_classes: int) -> float:
    cm = ConfusionMatrix(num_classes)
    for p, l in zip(preds, labels):
        cm.update(p, l)
    return cm.compute()["miou"]
