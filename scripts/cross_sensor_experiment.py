"""The cross-sensor experiment (issue 28): a checkpoint trained on one rig, run on others.

    python scripts/cross_sensor_experiment.py [--rows all|xs_rand,...] [--jobs N]
        [--runs runs/cross_sensor] [--results docs/results/cross_sensor]
        [--eval-samples 200] [--steps 1500] [--report-only]

Every row is the winning recipe of docs/results.md (row ``sup_init``: the anymodal student
with L_sup only, started from the published teacher's weights, 1500 steps) trained in
another world: on the MUSES-like rig (``xs_muses``: sup_init itself, the demo model, whose
fp16 weights are committed as docs/results/weights/sup_init.safetensors: not trained
again), on a rig drawn per scene (``data.rig=random``), with the LiDAR sensor-shift
augmentation (``augment.lidar_*``), with both, and with the per-sweep intensity
normalisation (``data.lidar_intensity=p95``). Each is evaluated with
``python -m anyseg_core.evaluate --rig R`` on every rig of :data:`EVAL_RIGS` (200
validation scenes, every modality subset); its JSON lands in ``--results`` with the figures
per rig, the commands, and its training metrics and command log in ``<results>/logs/``.

Rows run as in scripts/synthetic_experiment.py (whose helpers this script uses): a row whose
JSON holds the same commands is done, an interrupted training resumes, ``--jobs N`` trains N
rows at a time (OMP_NUM_THREADS=1 each unless set). Each row first renders its training set
into ``<runs>/cache`` (``python -m anyseg_core.data.cache``, one process; the cache's key holds
the rig and the intensity normalisation, so no row reads another world's items) and trains
from a copy of ``anyseg_core`` and ``config`` taken when the script starts
(``<runs>/code-<digest>``): DataLoader workers import the package afresh every epoch, and an
edit of the working tree during a run of hours must not reach them. The commands recorded are
those to run from the repository root.

After the rows it writes ``<results>/tables.md`` (mean mIoU over the subsets per rig, and the
LiDAR-only and camera-only subsets) from the JSONs present.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import synthetic_experiment as base  # noqa: E402  (its helpers: run, figures, ...)

REPO = base.REPO
PY = sys.executable
STUDENT = "config/train_synthetic_student.yaml"
TEACHER = "docs/results/weights/teacher.safetensors"
#: sup_init's weights (the demo model of the node as of issue 28, exported in fp16).
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
    "xs_muses": ("sup_init: the MUSES-like rig (the demo model)", None),
    "xs_rand": ("sensor rig drawn per scene", RANDOM),
    "xs_aug": ("MUSES-like rig + LiDAR augmentation (rings, density, intensity scale)", AUG),
    "xs_both": ("rig drawn per scene + ring and density augmentation + intensity "
                "normalised (p95)", [*RANDOM, *RINGS_DENSITY, *NORM]),
    "xs_norm": ("MUSES-like rig + intensity normalised (p95)", NORM),
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
        run([PY, "-m", "anyseg_core.data.cache", "--config", STUDENT, *sets, *cache,
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
    lines += ["## Commands", ""]
    for r, row in rows.items():
        took = ("" if row.get("train_minutes") is None
                else f" ({row['train_minutes']} min training)")
        lines += [f"- {r}{took}:", "  ```", *(f"  {c}" for c in row["commands"]), "  ```"]
    missing = [r for r in ROWS if r not in rows]
    if missing:
        lines += ["", f"Rows not run yet: {', '.join(missing)}."]
    path = results / "tables.md"
    results.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default="all", help=f"comma list of {list(ROWS)} or all")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--eval-samples", type=int, default=200)
    ap.add_argument("--runs", default="runs/cross_sensor")
    ap.add_argument("--results", default="docs/results/cross_sensor")
    ap.add_argument("--jobs", type=int, default=1, help="rows trained at a time")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--extra", action="append", default=[], metavar="KEY=VALUE",
                    help="another training override for every row (a smoke test: "
                         "data.train_samples=16); it joins the rows' commands and keys")
    args = ap.parse_args()
    rows = list(ROWS) if args.rows == "all" else args.rows.split(",")
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        ap.error(f"unknown rows {unknown}; choose from {list(ROWS)}")
    failed = [] if args.report_only else run_rows(rows, args)
    print(f"wrote {write_tables(Path(args.results))}")
    if failed:
        sys.exit("rows failed: " + "; ".join(failed))


if __name__ == "__main__":
    main()
