"""The cross-sensor experiment (issue 28): a checkpoint trained on one rig, run on others.

    python scripts/cross_sensor_experiment.py [--rows all|xs_rand,...] [--jobs N]
        [--runs runs/cross_sensor] [--results docs/results/cross_sensor]
        [--eval-samples 200] [--steps 1500] [--report-only]

Every row is the winning recipe of docs/results.md (row ``sup_init``: the anymodal student
with L_sup only, started from the published teacher's weights, 1500 steps) trained in
another world: on the MUSES-like rig (``xs_muses``: sup_init itself, the demo model before
this experiment, whose fp16 weights are committed as docs/results/weights/sup_init.safetensors:
not trained again), on a rig drawn per scene (``data.rig=random``), with the LiDAR sensor-shift
augmentation (``augment.lidar_*``), with both, and with the per-sweep intensity
normalisation (``data.lidar_intensity=p95``). Each is evaluated with
``python -m anyseg_core.evaluate --rig R`` on every rig of :data:`EVAL_RIGS` (200
validation scenes, every modality subset); its JSON lands in ``--results`` with the figures
per rig, the commands, and its training metrics and command log in ``<results>/logs/``.

Rows run as in scripts/synthetic_experiment.py (whose helpers this script uses): a row whose
JSON holds the same commands is done, an interrupted training resumes, ``--jobs N`` trains N
rows at a time (OMP_NUM_THREADS=1 each unless set). Each row first renders its training set
into ``<runs>/cache`` (``python -m anyseg_core.prefill``, one process; the cache's key holds
the rig and the intensity normalisation, so no row reads another world's items) and trains
from a copy of ``anyseg_core`` and ``config`` taken when the script starts
(``<runs>/code-<digest>``): DataLoader workers import the package afresh every epoch, and an
edit of the working tree during a run of hours must not reach them. The commands recorded are
those to run from the repository root.

After the rows it writes ``<results>/tables.md`` (mean mIoU over the subsets per rig, and the
LiDAR-only and camera-only subsets) from the JSONs present.

Real frames (``--real``, for the rows whose checkpoints are there; evaluation only, never
training or the choice of a checkpoint): each checkpoint through the node's inference path
(:class:`~anyseg_core.runtime.Runtime` at the checkpoint's own input size, the node's default,
labels at the camera's size) on ../shared/data/real/: KITTI 000008 (camera, LiDAR, both;
the Velodyne's 0..1 reflectance x255 as ``lidar.intensity_scale=255`` documents, and as
published, x1): the fraction of the six annotated cars' box pixels labelled car, the
fraction of the pixels outside the boxes labelled car, and the fraction labelled road; the
Cityscapes frame, camera only: pixel accuracy and mean IoU over the classes of its label.
The figures join the row's JSON (``real``) and the tables.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shlex
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import synthetic_experiment as base  # noqa: E402  (its helpers: run, figures, ...)

REAL = base.REPO.parent / "shared" / "data" / "real"

REPO = base.REPO
PY = sys.executable
STUDENT = "config/train_synthetic_student.yaml"
TEACHER = "docs/results/weights/teacher.safetensors"
#: sup_init's weights (the demo model of the node until issue 28 chose xs_norm; fp16).
SUP_INIT = "docs/results/weights/sup_init.safetensors"
#: The overrides of row sup_init (docs/results.md's winning recipe).
SUP_INIT_SETS = ["model.init=teacher", *base.SUP_ONLY]
#: The LiDAR sensor-shift augmentation (each with probability 0.5); the intensity scale
#: jitter is left out where the intensity is normalised (it would only undo that).
RINGS_DENSITY = ["augment.lidar_ring_p=0.5", "augment.lidar_density_p=0.5"]
AUG = [*RINGS_DENSITY, "augment.lidar_intensity_p=0.5"]
RANDOM = ["data.rig=random"]
NORM = ["data.lidar_intensity=p95"]

#: name -> (label, overrides of sup_init's training; None: sup_init's committed weights)
ROWS: dict[str, tuple[str, list[str] | None]] = {
    "xs_muses": ("sup_init: the MUSES-like rig (the demo model before issue 28)", None),
    "xs_rand": ("sensor rig drawn per scene", RANDOM),
    "xs_aug": ("MUSES-like rig + LiDAR augmentation (rings, density, intensity scale)", AUG),
    "xs_both": ("rig drawn per scene + ring and density augmentation + intensity "
                "normalised (p95)", [*RANDOM, *RINGS_DENSITY, *NORM]),
    "xs_norm": ("MUSES-like rig + intensity normalised (p95) (the demo model)", NORM),
    "xs_randnorm": ("rig drawn per scene + intensity normalised (p95)", [*RANDOM, *NORM]),
    # More seeds of the row that leads on the synthetic rigs (the config's seed is 3407).
    **{f"xs_norm_s{s}": (f"MUSES-like rig + intensity normalised (p95), seed {s}",
                         [*NORM, f"seed={s}"]) for s in (1, 2)},
}
#: The rigs every row is evaluated on (anyseg_core/data/synthetic/sensor_variants.py).
EVAL_RIGS = ("muses", "hdl64", "vlp16", "os128", "wide_camera", "kitti")


def say(text: str) -> None:
    base.say(text)


def snapshot(args) -> Path:
    """A copy of ``anyseg_core`` and ``config`` (and the committed weights) under ``--runs``,
    named by a digest of their sources: training runs from it (module docstring)."""
    h = hashlib.sha1()
    files = sorted([*(REPO / "anyseg_core").rglob("*.py"), *(REPO / "config").glob("*")])
    for f in files:
        h.update(f.relative_to(REPO).as_posix().encode())
        h.update(f.read_bytes())
    dest = Path(args.runs).resolve() / f"code-{h.hexdigest()[:12]}"
    if not (dest / "done").exists():
        if dest.exists():
            shutil.rmtree(dest)
        for f in files:
            (dest / f.relative_to(REPO)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dest / f.relative_to(REPO))
        (dest / "docs" / "results").mkdir(parents=True, exist_ok=True)
        (dest / "docs" / "results" / "weights").symlink_to(REPO / "docs" / "results" / "weights")
        (dest / "done").write_text("")
    return dest


def train_sets(name: str, args) -> list[str]:
    out = Path(args.runs) / name
    steps = args.steps
    return [f"out_dir={out}", f"optim.steps={steps}",
            f"optim.warmup_steps={max(1, steps // 15)}", "train.eval_samples=0",
            f"teacher.checkpoint={TEACHER}", *SUP_INIT_SETS, *ROWS[name][1], *args.extra]


def checkpoint_of(name: str, args) -> str:
    return SUP_INIT if ROWS[name][1] is None else str(Path(args.runs) / name /
                                                       "final.safetensors")


def commands(name: str, args) -> dict:
    """``train`` (None for xs_muses) and ``evaluate`` (rig -> command), as run from the
    repository root, without the data cache (it decides no figure)."""
    train = None
    if ROWS[name][1] is not None:
        train = [PY, "-m", "anyseg_core.train", "--config", STUDENT]
        for s in train_sets(name, args):
            train += ["--set", s]
    evaluate = {rig: [PY, "-m", "anyseg_core.evaluate", "--checkpoint", checkpoint_of(name, args),
                      "--dataset", "synthetic", "--split", "val", "--num-samples",
                      str(args.eval_samples), "--rig", rig, "--out",
                      str(Path(args.runs) / name / f"eval_{rig}")]
                for rig in EVAL_RIGS}
    return {"train": train, "evaluate": evaluate}


def all_commands(name: str, args) -> list[list[str]]:
    c = commands(name, args)
    return ([c["train"]] if c["train"] else []) + list(c["evaluate"].values())


def row_key(name: str, args) -> str:
    cmds = [base.portable(cmd) for cmd in all_commands(name, args)]
    return hashlib.sha1(json.dumps(cmds).encode()).hexdigest()[:12]


def is_done(name: str, args) -> bool:
    path = Path(args.results) / f"{name}.json"
    return path.exists() and json.loads(path.read_text()).get("key") == row_key(name, args)


def _absolute(cmd: list[str], runs: Path) -> list[str]:
    """``cmd`` with the paths under ``--runs`` made absolute (it runs from the code snapshot,
    which holds ``config`` and the committed weights too)."""
    out = []
    for part in cmd:
        out.append(part.replace(str(runs), str(runs.resolve())))
    return out


def run_row(name: str, args, code: Path, env: dict) -> None:
    if is_done(name, args):
        say(f"[{name}] done already")
        return
    runs = Path(args.runs)
    out = runs / name
    out.mkdir(parents=True, exist_ok=True)
    log = out / "experiment.log"
    cmds = commands(name, args)
    t0 = time.time()

    def run(cmd: list[str]) -> None:
        cmd = _absolute(cmd, runs)
        say("$ " + shlex.join(cmd) + f"   (in {code})")
        with open(log, "a") as f:
            f.write("$ " + shlex.join(cmd) + f"   (in {code})\n")
            f.flush()
            import subprocess
            proc = subprocess.run(cmd, cwd=code, stdout=f, stderr=subprocess.STDOUT, env=env)
        if proc.returncode:
            raise base.RowFailed(f"command failed ({proc.returncode}); see {log}")

    if cmds["train"] and not (out / "final.safetensors").exists():
        cache = ["--set", f"data.cache={runs / 'cache'}"]
        sets = [a for s in train_sets(name, args) if s.startswith(("data.", "augment."))
                for a in ("--set", s)]
        run([PY, "-m", "anyseg_core.prefill", "--config", STUDENT, *sets, *cache,
             "--jobs", "1"])
        resume = ["--resume"] if (out / "last.train.safetensors").exists() else []
        run(cmds["train"] + cache + resume)
    rigs = {}
    for rig, cmd in cmds["evaluate"].items():
        run(cmd)
        rep = json.loads((out / f"eval_{rig}" / "anymodal.json").read_text())
        rigs[rig] = {**base.figures(rep), "per_class": base.per_class(rep),
                     "protocol": rep["protocol"]}
        say(f"[{name}] {rig}: mean {rep['mean_miou']:.2f}")
    row = {"row": name, "label": ROWS[name][0], "key": row_key(name, args),
           "commands": [shlex.join(base.portable(c)) for c in all_commands(name, args)],
           "minutes": round((time.time() - t0) / 60, 1),
           "train_minutes": base.training_minutes(out) if cmds["train"] else None,
           "rigs": rigs}
    if REAL.is_dir():
        row["real"] = evaluate_real(checkpoint_of(name, args))
        row["real_command"] = f"python scripts/cross_sensor_experiment.py --real --rows {name}"
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{name}.json").write_text(json.dumps(row, indent=2))
    logs = results / "logs"
    logs.mkdir(exist_ok=True)
    for src, dst in (("metrics.jsonl", f"{name}.metrics.jsonl"),
                     ("experiment.log", f"{name}.log")):
        if (out / src).exists():
            shutil.copyfile(out / src, logs / dst)


def run_rows(rows: list[str], args) -> list[str]:
    code = snapshot(args)
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    failed = []

    def one(name: str) -> None:
        try:
            run_row(name, args, code, env)
        except base.RowFailed as err:
            say(f"[{name}] {err}")
            failed.append(f"{name}: {err}")

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(one, rows))
    return failed


# --------------------------------------------------------------------------- real frames

CAR, ROAD = 13, 0  # Cityscapes train ids


def _png(path: Path) -> np.ndarray:
    from anyseg_core.data.readers import open_png
    return np.asarray(open_png(path))


def kitti_frame(intensity_scale: float = 255.0):
    """KITTI 000008 as a RawFrame (camera and LiDAR) and the union of its car boxes."""
    from anyseg_core.sensors import RawFrame
    folder = REAL / "kitti_000008"
    calib = json.loads((folder / "calib.json").read_text())
    image = _png(folder / calib["image"])[..., :3].copy()
    points = np.fromfile(folder / calib["lidar"], dtype="<f4").reshape(-1, 4).copy()
    points[:, 3] *= intensity_scale
    H, W = image.shape[:2]
    boxes = np.zeros((H, W), bool)
    for car in calib["cars"]:
        x0, y0, x1, y1 = car["bbox_xyxy"]
        boxes[math.ceil(y0):math.floor(y1) + 1, math.ceil(x0):math.floor(x1) + 1] = True
    frame = RawFrame(image_hw=(H, W), K=np.array(calib["K"]), camera=image,
                     camera_encoding="rgb8", lidar=points,
                     T_cam_lidar=np.array(calib["T_cam_lidar"]))
    return frame, boxes


def _kitti_figures(rt, out: dict, prefix: str) -> None:
    """KITTI's figures of runtime ``rt`` into ``out[prefix + "_x<scale>_<subset>"]``."""
    for scale in (255.0, 1.0):
        frame, boxes = kitti_frame(scale)
        inputs = rt.prepare(frame)
        for name, mods in (("C", ["camera"]), ("L", ["lidar"]), ("CL", ["camera", "lidar"])):
            if scale != 255.0 and name == "C":
                continue  # the camera alone does not see the LiDAR's scale
            labels = rt.predict({m: inputs[m] for m in mods},
                                output_size=frame.image_hw).labels.numpy()
            car = labels == CAR
            out[f"{prefix}_x{int(scale)}_{name}"] = {
                "car_in_boxes": round(100 * float(car[boxes].mean()), 2),
                "car_outside": round(100 * float(car[~boxes].mean()), 2),
                "road": round(100 * float((labels == ROAD).mean()), 2)}


def aspect_size(input_size, image_hw) -> tuple[int, int]:
    """The network size of the checkpoint's height whose width keeps the image's aspect
    ratio (a multiple of 32): what ``network.height`` / ``network.width`` give the node."""
    h = int(input_size[0])
    return h, max(32, round(h * image_hw[1] / image_hw[0] / 32) * 32)


def evaluate_real(checkpoint: str) -> dict:
    """The real-frame figures of one checkpoint (module docstring), in %."""
    import torch
    from anyseg_core.runtime import Runtime

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    rt = Runtime(checkpoint, device="cpu", warmup=False)
    out = {"input_size": list(rt.input_size), "lidar_intensity": rt.lidar_intensity}
    _kitti_figures(rt, out, "kitti")
    # The same at the camera's aspect ratio (1242x375 squeezed to 224x128 narrows the cars).
    wide = aspect_size(rt.input_size, kitti_frame()[0].image_hw)
    out["kitti_aspect_size"] = list(wide)
    _kitti_figures(Runtime(checkpoint, device="cpu", warmup=False, input_size=wide), out,
                   "kitti_aspect")
    image, label = cityscapes_frame()
    out["cityscapes_C"] = _cityscapes_figures(rt, image, label)
    wide = aspect_size(rt.input_size, image.shape[:2])
    out["cityscapes_aspect_size"] = list(wide)
    out["cityscapes_aspect_C"] = _cityscapes_figures(
        Runtime(checkpoint, device="cpu", warmup=False, input_size=wide), image, label)
    return out


def cityscapes_frame() -> tuple[np.ndarray, np.ndarray]:
    """The shared Cityscapes frame (RGB) and its train-id label (255: ignore)."""
    folder = REAL / "cityscapes_pseudo"
    stem = "frankfurt_000000_000294"
    image = _png(folder / f"{stem}_leftImg8bit.png")[..., :3].copy()
    return image, _png(folder / f"{stem}_gtFine_labelTrainIds.png").astype(np.int64)


def _cityscapes_figures(rt, image: np.ndarray, label: np.ndarray) -> dict:
    """Pixel accuracy and mean IoU over the label's classes of runtime ``rt``, camera only."""
    from anyseg_core.sensors import RawFrame

    frame = RawFrame(image_hw=image.shape[:2], K=None, camera=image, camera_encoding="rgb8")
    pred = rt.predict({"camera": rt.prepare(frame)["camera"]},
                      output_size=image.shape[:2]).labels.numpy().astype(np.int64)
    valid = label != 255
    ious = []
    for c in np.unique(label[valid]):
        inter = np.sum((pred == c) & (label == c) & valid)
        union = np.sum(((pred == c) | (label == c)) & valid)
        ious.append(inter / union)
    return {"pixel_acc": round(100 * float((pred == label)[valid].mean()), 2),
            "miou": round(100 * float(np.mean(ious)), 2), "classes": int(len(ious))}


def real_rows(rows: list[str], args) -> None:
    """Add the real-frame figures to each done row's JSON (``real``)."""
    for name in rows:
        path = Path(args.results) / f"{name}.json"
        ckpt = checkpoint_of(name, args)
        if not path.exists() or not Path(ckpt).exists():
            say(f"[{name}] no JSON or checkpoint yet: real frames skipped")
            continue
        row = json.loads(path.read_text())
        row["real"] = evaluate_real(ckpt)
        row["real_command"] = "python scripts/cross_sensor_experiment.py --real --rows " + name
        path.write_text(json.dumps(row, indent=2))
        say(f"[{name}] real frames: {json.dumps(row['real'])}")


def write_tables(results: Path) -> Path:
    rows = {p.stem: json.loads(p.read_text()) for p in sorted(results.glob("*.json"))}
    rows = {r: rows[r] for r in ROWS if r in rows}
    lines = ["# Cross-sensor experiment (generated)", "",
             "Written by `python scripts/cross_sensor_experiment.py`; do not edit by hand. "
             "mIoU in % on 200 validation scenes of the synthetic world rendered by each rig "
             "(anyseg_core/data/synthetic/sensor_variants.py), missing modalities dropped "
             "from the fusion.", ""]
    for title, pick in (("Mean over the seven modality subsets", lambda f: f["mean"]),
                        ("LiDAR alone (L)", lambda f: f["miou"]["L"]),
                        ("Camera alone (C)", lambda f: f["miou"]["C"]),
                        ("Camera + LiDAR (CL)", lambda f: f["miou"]["CL"])):
        lines += [f"## {title}", "", "| row | " + " | ".join(EVAL_RIGS) + " | other rigs |",
                  "|---|" + "---|" * (len(EVAL_RIGS) + 1)]
        for r, row in rows.items():
            vals = [pick(row["rigs"][g]) if g in row["rigs"] else None for g in EVAL_RIGS]
            other = [v for g, v in zip(EVAL_RIGS, vals) if g != "muses" and v is not None]
            mean_other = sum(other) / len(other) if other else None
            lines.append(f"| {r}: {row['label']} | " + " | ".join(
                "-" if v is None else f"{v:.2f}" for v in vals)
                + f" | {'-' if mean_other is None else f'**{mean_other:.2f}**'} |")
        lines.append("")
    real = {r: row["real"] for r, row in rows.items() if "real" in row}
    if real:
        lines += ["## Real frames (evaluation only)", "",
                  "The node's inference path at the checkpoint's own input size (the node's "
                  "default); % of pixels. KITTI 000008: car in the six cars' boxes (of their "
                  "pixels) / car outside them (of the other pixels) / road (of all pixels), "
                  "the LiDAR's 0..1 reflectance x255 (`lidar.intensity_scale=255`) and x1 (as "
                  "published). Cityscapes frame, camera only: pixel accuracy and mean IoU over "
                  "the classes of its label.", "",
                  *REAL_HEAD, *(real_row(r, f, "kitti", "cityscapes_C")
                                for r, f in real.items())]
        lines += aspect_table(real)
        lines += ["", "Regenerate: `python scripts/cross_sensor_experiment.py --real` (the rows "
                  "whose checkpoints are in --runs).", ""]
    path = base.write_tables_file(results, lines, rows, ROWS)
    report = results.parent.parent / "results.md"
    if results.parent.name == "results" and report.is_file():
        copy_table(report, lines, "## Mean over the seven modality subsets", "synthetic")
        copy_table(report, lines, "## Real frames (evaluation only)", "real")
        copy_table(report, lines, ASPECT_TITLE, "aspect")
    return path


ASPECT_TITLE = "## Real frames at the camera's aspect ratio (evaluation only)"


def aspect_table(real: dict) -> list[str]:
    """The real frames at the network size that keeps each image's aspect ratio (rows whose
    figures hold it); [] when none does."""
    wide = {r: f for r, f in real.items() if "kitti_aspect_size" in f}
    if not wide:
        return []
    first = next(iter(wide.values()))
    kitti, city = ("x".join(map(str, first[k]))
                   for k in ("kitti_aspect_size", "cityscapes_aspect_size"))
    lines = ["", ASPECT_TITLE, "",
             "The same figures with the network at the checkpoint's height and the width "
             f"that keeps each image's aspect ratio (KITTI {kitti}, Cityscapes {city}; the "
             "node's `network.height` and `network.width`) instead of the training size.", "",
             *REAL_HEAD]
    return lines + [real_row(r, f, "kitti_aspect", "cityscapes_aspect_C")
                    for r, f in wide.items()]


#: The header of the real-frame tables (:func:`real_row`).
REAL_HEAD = ["| row | KITTI C | KITTI L x255 | KITTI CL x255 | KITTI L x1 | KITTI CL x1 "
             "| Cityscapes C acc | Cityscapes C mIoU |", "|---|" + "---|" * 7]


def real_row(row: str, f: dict, kitti: str, city: str) -> str:
    """One row of a real-frame table from a row's figures ``f``: KITTI's under the prefix
    ``kitti``, Cityscapes' under the key ``city``."""
    k = [f[f"{kitti}_x{s}_{n}"] for s, n in ((255, "C"), (255, "L"), (255, "CL"),
                                              (1, "L"), (1, "CL"))]
    return (f"| {row} | " + " | ".join(
        f"{v['car_in_boxes']:.0f} / {v['car_outside']:.0f} / {v['road']:.0f}" for v in k)
        + f" | {f[city]['pixel_acc']:.1f} | {f[city]['miou']:.1f} |")


def copy_table(report: Path, lines: list[str], title: str, which: str) -> None:
    """Copy the table under ``title`` into ``report`` (docs/results.md) between its
    ``<!-- cross-sensor WHICH table ... -->`` and ``<!-- end of the cross-sensor WHICH table
    -->`` lines, when it has them."""
    start_mark = (f"<!-- cross-sensor {which} table: written by "
                  "scripts/cross_sensor_experiment.py -->")
    end_mark = f"<!-- end of the cross-sensor {which} table -->"
    text = report.read_text()
    if title not in lines or start_mark not in text or end_mark not in text:
        return
    start = next(i for i in range(lines.index(title), len(lines)) if lines[i].startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")),
               len(lines))
    head, rest = text.split(start_mark, 1)
    tail = rest.split(end_mark, 1)[1]
    report.write_text(head + start_mark + "\n" + "\n".join(lines[start:end]) + "\n"
                      + end_mark + tail)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default="all", help=f"comma list of {list(ROWS)} or all")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--eval-samples", type=int, default=200)
    ap.add_argument("--runs", default="runs/cross_sensor")
    ap.add_argument("--results", default="docs/results/cross_sensor")
    ap.add_argument("--jobs", type=int, default=1, help="rows trained at a time")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--real", action="store_true",
                    help="only the real frames, for the rows whose checkpoints are there")
    ap.add_argument("--extra", action="append", default=[], metavar="KEY=VALUE",
                    help="another training override for every row (a smoke test: "
                         "data.train_samples=16); it joins the rows' commands and keys")
    args = ap.parse_args()
    rows = list(ROWS) if args.rows == "all" else args.rows.split(",")
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        ap.error(f"unknown rows {unknown}; choose from {list(ROWS)}")
    if args.real:
        real_rows(rows, args)
    failed = [] if args.report_only or args.real else run_rows(rows, args)
    print(f"wrote {write_tables(Path(args.results))}")
    if failed:
        sys.exit("rows failed: " + "; ".join(failed))


if __name__ == "__main__":
    main()
