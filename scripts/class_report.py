"""Where each class's pixels go: a per-class reading of one or more evaluations.

    python scripts/class_report.py EVAL_DIR [EVAL_DIR ...] [--subset CEL]
        [--classes wall,pole,...] [--top 2] [--names teacher,student,...]

Each EVAL_DIR is an ``--out`` of ``python -m anyseg_core.evaluate`` (it holds
``confusion.json``). For the chosen subset, prints one markdown table per class with a row per
evaluation: IoU, recall (share of the class's labelled pixels predicted as it), precision,
predicted / labelled pixels (under 1: the model predicts the class less often than it occurs),
and the ``--top`` classes its missed pixels are predicted as, with their share of its labelled
pixels. Evaluations are named after their folder's parent (``runs/experiment/<row>/eval``)
unless ``--names`` is given.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def load(eval_dir: Path, subset: str) -> tuple[list[str], list[list[int]]]:
    path = eval_dir / "confusion.json"
    if not path.exists():
        raise SystemExit(f"{path} is missing: evaluate with `python -m anyseg_core.evaluate "
                         f"--out {eval_dir}` (confusion.json is written since this script exists)")
    data = json.loads(path.read_text())
    if subset not in data["subsets"]:
        raise SystemExit(f"{path} has no subset {subset!r}; it has {list(data['subsets'])}")
    return data["classes"], data["subsets"][subset]


def class_rows(classes: list[str], matrix: list[list[int]], top: int) -> dict:
    """Per class: IoU, recall, precision (%, None where undefined), predicted / labelled
    pixels, and the ``top`` other classes its labelled pixels are predicted as (% of them)."""
    k = len(classes)
    gt = [sum(matrix[i]) for i in range(k)]
    pr = [sum(matrix[j][i] for j in range(k)) for i in range(k)]
    out = {}
    for i, c in enumerate(classes):
        tp = matrix[i][i]
        union = gt[i] + pr[i] - tp
        others = sorted(((matrix[i][j], classes[j]) for j in range(k) if j != i), reverse=True)
        out[c] = {
            "iou": 100 * tp / union if union else None,
            "recall": 100 * tp / gt[i] if gt[i] else None,
            "precision": 100 * tp / pr[i] if pr[i] else None,
            "pred_over_label": pr[i] / gt[i] if gt[i] else None,
            "missed_to": [(o, 100 * n / gt[i]) for n, o in others[:top] if n and gt[i]],
        }
    return out


def fmt(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("evals", nargs="+", type=Path)
    ap.add_argument("--subset", default="CEL", help="subset name as in anymodal.json (CEL, C, ...)")
    ap.add_argument("--classes", default=None, help="comma list (default: every class)")
    ap.add_argument("--top", type=int, default=2, help="classes the missed pixels go to")
    ap.add_argument("--names", default=None, help="comma list naming the evaluations")
    args = ap.parse_args(argv)
    names = args.names.split(",") if args.names else [d.resolve().parent.name for d in args.evals]
    if len(names) != len(args.evals):
        ap.error(f"--names has {len(names)} names for {len(args.evals)} evaluations")
    tables, classes = [], None
    for d, name in zip(args.evals, names):
        cls, matrix = load(d, args.subset)
        if classes is not None and cls != classes:
            ap.error(f"{d} has other classes than {args.evals[0]}")
        classes = cls
        tables.append((name, class_rows(cls, matrix, args.top)))
    wanted = args.classes.split(",") if args.classes else classes
    unknown = [c for c in wanted if c not in classes]
    if unknown:
        ap.error(f"unknown classes {unknown}; the evaluations have {classes}")
    print(f"Subset {args.subset}; IoU, recall and precision in %; missed pixels as % of the "
          f"class's labelled pixels.\n")
    for c in wanted:
        print(f"**{c}**\n")
        print("| evaluation | IoU | recall | precision | predicted / labelled | missed, "
              "predicted as |")
        print("|---|---|---|---|---|---|")
        for name, rows in tables:
            r = rows[c]
            missed = ", ".join(f"{o} {p:.1f}" for o, p in r["missed_to"]) or "-"
            print(f"| {name} | {fmt(r['iou'])} | {fmt(r['recall'])} | {fmt(r['precision'])} | "
                  f"{fmt(r['pred_over_label'], 2)} | {missed} |")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
