"""Anymodal evaluation: every modality subset in one command.

    python -m anyseg_core.evaluate --checkpoint CKPT --dataset synthetic --out DIR \
        [--root DIR] [--split val] [--subsets all | camera,lidar events ...] \
        [--missing drop|zero] [--num-samples N] [--seed S] [--size HxW] [--device auto]
        [--rig muses|random|hdl64|...]

For each subset the whole evaluation set runs with only that subset present, through one
confusion matrix per subset (docs/method.md). Prints the paper's Table 1 shape as markdown
(one column per subset, then the mean) and writes ``anymodal.json`` (per subset: mIoU, pixel
accuracy, and per class IoU, recall and precision), ``confusion.json`` (the confusion matrix of
each subset and its per-class pixels predicted as no class), ``anymodal.csv``, ``miou_per_subset.png`` and ``montage.png`` into ``--out``.
Inputs are prepared once per sample and reused for every subset.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from .data import build_dataset
from .data.readers import DataFileError
from .data.registry import DATASETS
from .metrics import ConfusionMatrix
from .modalities import ABBREV, ALL_MODALITIES, all_subsets
from .model.segmentor import MISSING
from .runtime import BACKENDS, PRECISIONS, Runtime

def subset_name(subset: Sequence[str]) -> str:
    return "".join(ABBREV[m] for m in subset)


def parse_subsets(specs: Iterable[str], modalities: Sequence[str]) -> list[tuple[str, ...]]:
    """``all`` or subsets written ``camera,lidar`` / ``camera+lidar`` / ``CL``, in the
    checkpoint's modality order."""
    specs = list(specs)
    if not specs or specs == ["all"]:
        return all_subsets(modalities)
    by_letter = {ABBREV[m]: m for m in modalities}
    out = []
    for spec in specs:
        parts = [p for p in spec.replace("+", ",").split(",") if p]
        if len(parts) == 1 and parts[0] not in ALL_MODALITIES and set(parts[0]) <= set(by_letter):
            parts = [by_letter[c] for c in parts[0]]
        unknown = [p for p in parts if p not in modalities]
        if unknown or not parts:
            raise ValueError(f"subset {spec!r}: unknown modalities {unknown}; the checkpoint "
                             f"has {list(modalities)}")
        out.append(tuple(m for m in modalities if m in parts))
    return list(dict.fromkeys(out))


def evaluate(predict: Callable, dataset, subsets: Sequence[Sequence[str]], num_classes: int,
             missing: str = "drop", num_samples: int | None = None, montage_samples: int = 3,
             progress: bool = True):
    """Per-subset metrics over ``dataset`` (items with ``inputs`` and ``label``), plus a few
    predictions per subset for the montage. ``predict(inputs, output_size, missing)`` returns
    uint8 class ids (``Runtime.predict_labels`` or :func:`model_predictor`)."""
    n = len(dataset) if num_samples is None else min(num_samples, len(dataset))
    cms = {tuple(s): ConfusionMatrix(num_classes) for s in subsets}
    shown: list[dict] = []
    it = range(n)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="evaluate", disable=not sys.stderr.isatty())
    for i in it:
        item = dataset[i]
        label = item["label"]
        keep = {"label": label, "inputs": item["inputs"], "pred": {}} \
            if len(shown) < montage_samples else None
        for s in cms:
            pred = predict({m: item["inputs"][m] for m in s}, tuple(label.shape), missing)
            cms[s].update(pred.cpu(), label)
            if keep is not None:
                keep["pred"][s] = pred.cpu()
        if keep is not None:
            shown.append(keep)
    return {s: cm.compute() for s, cm in cms.items()}, shown, n


def model_predictor(model: torch.nn.Module, device: torch.device) -> Callable:
    """A ``predict`` for :func:`evaluate` from a bare model (used during training)."""
    @torch.inference_mode()
    def predict(inputs, output_size, missing):
        x = {m: v[None].to(device) for m, v in inputs.items()}
        logits = model(x, missing=missing).logits[0]
        return logits.argmax(0).to(torch.uint8)
    return predict


def _percent(names: Sequence[str], values: Sequence[float | None]) -> dict:
    return {c: (None if v is None else v * 100) for c, v in zip(names, values)}


def report(results: Mapping[tuple, dict], class_names: Sequence[str]) -> dict:
    per = {subset_name(s): {"modalities": list(s), "miou": r["miou"] * 100,
                            "pixel_acc": r["pixel_acc"] * 100,
                            "iou": _percent(class_names, r["iou"]),
                            "recall": _percent(class_names, r["recall"]),
                            "precision": _percent(class_names, r["precision"])}
           for s, r in results.items()}
    mious = [v["miou"] for v in per.values()]
    return {"subsets": per, "mean_miou": float(np.mean(mious)),
            "worst_miou": float(np.min(mious)),
            "worst_subset": min(per, key=lambda k: per[k]["miou"])}


def markdown_table(rep: Mapping, title: str = "model") -> str:
    names = list(rep["subsets"])
    head = "| " + " | ".join(["", *names, "Mean"]) + " |"
    sep = "|" + "---|" * (len(names) + 2)
    row = "| " + " | ".join([title, *(f"{rep['subsets'][n]['miou']:.2f}" for n in names),
                            f"{rep['mean_miou']:.2f}"]) + " |"
    return "\n".join([head, sep, row])


def _bar_chart(rep: Mapping, path: Path) -> None:
    import cv2

    from . import viz
    names = list(rep["subsets"])
    vals = [rep["subsets"][n]["miou"] for n in names] + [rep["mean_miou"]]
    labels = names + ["Mean"]
    W, H, pad = 80 * len(labels) + 60, 320, 40
    img = np.full((H, W, 3), 255, np.uint8)
    top = max(max(vals), 1.0)
    for i, (v, lab) in enumerate(zip(vals, labels)):
        x0 = pad + i * 80
        y0 = H - pad - int((H - 2 * pad) * v / top)
        colour = (70, 130, 180) if lab != "Mean" else (220, 120, 40)
        cv2.rectangle(img, (x0 + 10, y0), (x0 + 60, H - pad), colour, -1)
        cv2.putText(img, f"{v:.1f}", (x0 + 12, y0 - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(img, lab, (x0 + 18, H - pad + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "mIoU (%) per modality subset", (pad, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.55,
                (0, 0, 0), 1, cv2.LINE_AA)
    viz.save_png(path, img)


def _montage(shown: list[dict], palette, path: Path) -> None:
    from . import viz
    from .sensors import denormalize
    rows = []
    for item in shown:
        cells = []
        if "camera" in item["inputs"]:
            cam = denormalize(item["inputs"]["camera"], "camera").clamp(0, 1)
            cells.append(viz.titled((cam.permute(1, 2, 0).numpy() * 255).astype(np.uint8),
                                    "camera"))
        cells.append(viz.titled(viz.colorize_labels(item["label"], palette), "ground truth"))
        for s, pred in item["pred"].items():
            cells.append(viz.titled(viz.colorize_labels(pred, palette), subset_name(s)))
        rows.append(cells)
    viz.save_png(path, viz.grid(rows))


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m anyseg_core.evaluate",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, type=Path)
    ap.add_argument("--dataset", default="synthetic", choices=list(DATASETS))
    ap.add_argument("--root", type=Path, default=None, help="dataset folder (muses, deliver)")
    ap.add_argument("--split", default="val")
    ap.add_argument("--subsets", nargs="+", default=["all"],
                    help="'all', or subsets such as camera,lidar events (or CL E)")
    ap.add_argument("--missing", default="drop", choices=MISSING)
    ap.add_argument("--num-samples", type=int, default=None)
    ap.add_argument("--seed", type=int, default=None,
                    help="synthetic: which world (default: the checkpoint's training world)")
    ap.add_argument("--size", default=None, help="network input HxW (default: the checkpoint's)")
    ap.add_argument("--rig", default=None,
                    help="synthetic: the sensor rig that renders the world: muses, random or "
                         "a named rig (anyseg_core/data/synthetic/sensor_variants.py; "
                         "default: the checkpoint's training rig)")
    ap.add_argument("--conditions", nargs="+", default=None,
                    help="synthetic: evaluate only these conditions (e.g. fog-night)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="fp32", choices=PRECISIONS)
    ap.add_argument("--backend", default="torch", choices=BACKENDS,
                    help="torch, or an exported graph per subset in onnxruntime / openvino "
                         "(the deploy extra); auto: the fastest installed")
    ap.add_argument("--out", type=Path, required=True)
    return ap


def _check_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> list[int] | None:
    """The checks of the arguments that need no checkpoint (``ap.error`` on the first that
    fails); returns ``--size`` as [H, W] (None: the checkpoint's)."""
    if args.num_samples is not None and args.num_samples < 1:
        ap.error(f"--num-samples must be at least 1, got {args.num_samples}")
    if args.rig is not None:
        from .data.synthetic.sensor_variants import rig_names
        if args.rig not in rig_names():
            ap.error(f"--rig must be one of {', '.join(rig_names())}, got {args.rig!r}")
        if args.dataset != "synthetic":
            ap.error("--rig renders the synthetic world; a real data set has its own sensors")
    if DATASETS[args.dataset].needs_root and args.root is None:
        ap.error(f"--dataset {args.dataset} needs --root, the {args.dataset.upper()} folder")
    if not args.size:
        return None
    try:
        return [int(v) for v in args.size.lower().split("x")]
    except ValueError:
        ap.error(f"--size must look like 288x512, got {args.size!r}")


def _data_config(args: argparse.Namespace, rt: Runtime) -> dict:
    """The config (its ``data`` section) that builds the evaluation set: the checkpoint's
    training data, changed by the arguments, at the runtime's modalities and input size."""
    cfg = {"data": dict(rt.meta.get("train_config", {}).get("data", {}))}
    cfg["data"].pop("cache", None)  # a training-time folder, maybe of another machine
    cfg["data"].update(dataset=args.dataset, root=str(args.root) if args.root else None,
                       modalities=list(rt.modalities), size=list(rt.input_size))
    if args.seed is not None:
        cfg["data"]["seed"] = args.seed
    cfg["data"].setdefault("seed", 0)
    cfg["data"]["conditions"] = args.conditions
    if args.rig is not None:
        cfg["data"]["rig"] = args.rig
    elif args.dataset != "synthetic":
        cfg["data"]["rig"] = "muses"
    cfg["data"].setdefault("rig", "muses")
    # the LiDAR prepared as the checkpoint's training prepared it (its metadata)
    cfg["data"]["lidar_intensity"] = rt.lidar_intensity
    return cfg


def _dataset(ap: argparse.ArgumentParser, args: argparse.Namespace, rt: Runtime, cfg: dict):
    """The evaluation set, or ``ap.error`` when it cannot be read, has other classes than the
    checkpoint or is empty."""
    n_default = cfg["data"].get("val_samples", 100)
    try:
        dataset = build_dataset(cfg, args.split, num_samples=args.num_samples or n_default)
    except DataFileError as err:  # a missing root or index: one line naming it
        ap.error(str(err))
    classes = getattr(dataset, "classes", None)
    if classes is not None and len(classes) != len(rt.class_names):
        # the confusion matrix would silently drop the labels beyond the checkpoint's classes
        ap.error(f"{args.checkpoint} predicts {len(rt.class_names)} classes but the "
                 f"{args.dataset} labels have {len(classes)}: use a checkpoint trained on it")
    if len(dataset) == 0:
        ap.error(f"the {args.dataset} {args.split} split has no samples"
                 + (f" under {args.root}" if args.root else ""))
    return dataset


def _protocol(args: argparse.Namespace, rt: Runtime, cfg: Mapping, n: int) -> dict:
    """How the figures were made (``anymodal.json``'s ``protocol``)."""
    return {
        "checkpoint": str(args.checkpoint), "dataset": args.dataset, "split": args.split,
        "root": str(args.root) if args.root else None, "num_samples": n,
        "seed": cfg["data"]["seed"], "conditions": args.conditions, "missing": args.missing,
        "rig": cfg["data"]["rig"], "lidar_intensity": rt.lidar_intensity,
        "input_size": list(rt.input_size), "precision": rt.precision,
        "backend": rt.backend,
        "miou": "one confusion matrix per subset over all samples; classes absent from both "
                "labels and predictions are left out of the mean; label 255 ignored",
    }


def _write_outputs(out: Path, rep: Mapping, results: Mapping[tuple, dict], shown: list[dict],
                   rt: Runtime) -> None:
    """``anymodal.json``, ``confusion.json``, ``anymodal.csv``, ``miou_per_subset.png`` and
    ``montage.png`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "anymodal.json").write_text(json.dumps(rep, indent=2))
    confusion = {"rows": "ground truth", "columns": "prediction", "classes": list(rt.class_names),
                 "subsets": {subset_name(s): r["matrix"] for s, r in results.items()},
                 "unpredicted": {subset_name(s): r["unpredicted"] for s, r in results.items()}}
    (out / "confusion.json").write_text(json.dumps(confusion))
    with open(out / "anymodal.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["subset", "modalities", "miou", "pixel_acc", *rt.class_names])
        for name, r in rep["subsets"].items():
            w.writerow([name, "+".join(r["modalities"]), f"{r['miou']:.3f}",
                        f"{r['pixel_acc']:.3f}",
                        *("" if r["iou"][c] is None else f"{r['iou'][c]:.3f}"
                          for c in rt.class_names)])
        w.writerow(["Mean", "", f"{rep['mean_miou']:.3f}", "", *[""] * len(rt.class_names)])
    _bar_chart(rep, out / "miou_per_subset.png")
    _montage(shown, rt.meta["palette"], out / "montage.png")


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    size = _check_args(ap, args)
    try:
        rt = Runtime(args.checkpoint, device=args.device, precision=args.precision,
                     input_size=size, warmup=False, backend=args.backend)
        subsets = parse_subsets(args.subsets, rt.modalities)
    except (ValueError, FileNotFoundError) as err:
        ap.error(str(err))
    cfg = _data_config(args, rt)
    dataset = _dataset(ap, args, rt, cfg)
    try:
        results, shown, n = evaluate(rt.predict_labels, dataset, subsets, len(rt.class_names),
                                     missing=args.missing, num_samples=args.num_samples)
    except DataFileError as err:  # a sample file that cannot be read, found on the way
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 1
    rep = report(results, rt.class_names)
    rep["protocol"] = _protocol(args, rt, cfg, n)
    _write_outputs(args.out, rep, results, shown, rt)
    legend = ", ".join(f"{ABBREV[m]} = {m}" for m in rt.modalities)
    print(markdown_table(rep, args.checkpoint.stem))
    print(f"\n{legend}; mIoU in %, {n} {args.split} samples, missing modalities: {args.missing}")
    print(f"wrote {args.out}/anymodal.json, confusion.json, anymodal.csv, miou_per_subset.png, "
          "montage.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
