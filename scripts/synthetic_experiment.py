"""The experiment behind docs/results.md: the structure of the paper's Tables 1 and 3 on the
synthetic world, every row with the same budget (but ``teacher_long`` and the rows of
STEP_FACTORS, which ask what more training changes).

    python scripts/synthetic_experiment.py [--rows all|baseline,teacher,...] [--steps N]
        [--runs runs/experiment] [--results docs/results] [--eval-samples 200]
        [--jobs N] [--cache DIR | --no-cache]

Rows: a naive camera-primary multimodal baseline without modality dropout (CMNeXt-like), the
PML teacher, and students with anymodal dropout and L_sup only, + L_mad, + L_umd, + L_cmd
(the full method), the fused-feature KD variant (section 5.4), the full method started
from the teacher's weights (at the from-scratch peak learning rate, at half and at a quarter
of it, and with the distillation weights divided by 10), and L_sup only started from the
teacher's weights. Then a teacher trained 1500 steps more from its own weights
(``teacher_long``), and students started from it (the full AnySeg at the paper's weights and
at a tenth of them, L_sup only, and the full AnySeg with a dropout that keeps every modality
in half the samples, ``dropout.all_prob=0.5``: does the uniform dropout cost the all-modality
subset?), and the full AnySeg from it trained twice as long (``full_init_tl_long``: does the
gap to the targets close with training?), and the full AnySeg and L_sup only from it again with
another seed (``*_tl_seed``: is the gap between them more than run-to-run noise?). Each row
trains with ``python -m anyseg_core.train`` and is scored with ``python -m
anyseg_core.evaluate`` over every modality subset; its JSON lands in ``--results``. A row
whose JSON exists for the same commands is skipped and a row
whose training was interrupted resumes, so the script can be re-run until every row is done
(also across machine sessions, as long as ``--runs`` survives). After the rows it writes
``<results>/tables.md`` (the tables, generated from the JSONs present; ``--report-only``
does only that); docs/results.md holds the reading of them.

The training set is rendered once into ``--cache`` (default ``<runs>/cache``, see
anyseg_core/data/cache.py) with every core, and every row reads it from there; the cache does
not change any figure, so it is left out of a row's key (so is the interpreter's path).
``--jobs N`` trains up to N rows at a time; a row starts as soon as the row it starts from is
done, and the rows running share the cores (OMP_NUM_THREADS = free cores / rows starting,
unless OMP_NUM_THREADS is set; a row waits rather than oversubscribe the cores): on a 2-core
CPU two one-thread processes train faster together than one two-thread process
(docs/results.md), and a GPU has room for several small runs.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
SUBSETS = ["C", "E", "L", "CE", "CL", "EL", "CEL"]

# name -> (label in the tables, config file, overrides); students need the teacher.
ROWS = {
    "baseline": ("Camera-primary fusion, no dropout (CMNeXt-like)", "train_synthetic_teacher.yaml",
                 ["model.fusion=primary"]),
    "teacher": ("PML teacher (mean fusion, all modalities)", "train_synthetic_teacher.yaml", []),
    "sup": ("Student: anymodal dropout, L_sup only", "train_synthetic_student.yaml",
            ["loss.lambda_mad=0", "loss.alpha_umd=0", "loss.beta_cmd=0"]),
    "mad": ("Student: + L_mad", "train_synthetic_student.yaml",
            ["loss.alpha_umd=0", "loss.beta_cmd=0"]),
    "umd": ("Student: + L_mad + L_umd", "train_synthetic_student.yaml", ["loss.beta_cmd=0"]),
    "full": ("Student: + L_mad + L_umd + L_cmd (AnySeg)", "train_synthetic_student.yaml", []),
    "fkd": ("Student: L_mad + fused-feature KD (sec. 5.4)", "train_synthetic_student.yaml",
            ["loss.alpha_umd=0", "loss.beta_cmd=0", "loss.gamma_fkd=5"]),
    "full_init": ("Student: AnySeg, initialised from the teacher", "train_synthetic_student.yaml",
                  ["model.init=teacher"]),
    "full_init_lr": ("Student: AnySeg, initialised from the teacher, peak lr 1e-4",
                     "train_synthetic_student.yaml", ["model.init=teacher", "optim.lr=1e-4"]),
    "full_init_lr2": ("Student: AnySeg, initialised from the teacher, peak lr 2e-4",
                      "train_synthetic_student.yaml", ["model.init=teacher", "optim.lr=2e-4"]),
    "full_init_light": ("Student: AnySeg, initialised from the teacher, distillation weights / 10",
                        "train_synthetic_student.yaml",
                        ["model.init=teacher", "loss.lambda_mad=5", "loss.alpha_umd=0.5",
                         "loss.beta_cmd=1"]),
    "sup_init": ("Student: L_sup only, initialised from the teacher",
                 "train_synthetic_student.yaml",
                 ["model.init=teacher", "loss.lambda_mad=0", "loss.alpha_umd=0",
                  "loss.beta_cmd=0"]),
    "teacher_long": ("PML teacher, trained again from its own weights (1500 + 1500 steps)",
                     "train_synthetic_teacher.yaml", ["model.init=teacher"]),
    "full_init_tl": ("Student: AnySeg, initialised from the longer-trained teacher",
                     "train_synthetic_student.yaml", ["model.init=teacher"]),
    "full_init_light_tl": ("Student: AnySeg, distillation weights / 10, from the longer-trained "
                           "teacher", "train_synthetic_student.yaml",
                           ["model.init=teacher", "loss.lambda_mad=5", "loss.alpha_umd=0.5",
                            "loss.beta_cmd=1"]),
    "sup_init_tl": ("Student: L_sup only, initialised from the longer-trained teacher",
                    "train_synthetic_student.yaml",
                    ["model.init=teacher", "loss.lambda_mad=0", "loss.alpha_umd=0",
                     "loss.beta_cmd=0"]),
    "full_init_tl_all": ("Student: AnySeg from the longer-trained teacher, every modality kept "
                         "in half the samples (not the paper's dropout)",
                         "train_synthetic_student.yaml",
                         ["model.init=teacher", "dropout.all_prob=0.5"]),
    "full_init_tl_long": ("Student: AnySeg from the longer-trained teacher, twice the steps",
                          "train_synthetic_student.yaml", ["model.init=teacher"]),
    "full_init_tl_seed": ("Student: AnySeg from the longer-trained teacher, another seed",
                          "train_synthetic_student.yaml", ["model.init=teacher", "seed=1"]),
    "sup_init_tl_seed": ("Student: L_sup only from the longer-trained teacher, another seed",
                         "train_synthetic_student.yaml",
                         ["model.init=teacher", "loss.lambda_mad=0", "loss.alpha_umd=0",
                          "loss.beta_cmd=0", "seed=1"]),
    "full_init_tl_ohem": ("Student: AnySeg from the longer-trained teacher, L_sup as OHEM "
                          "cross-entropy (threshold 0.7)", "train_synthetic_student.yaml",
                          ["model.init=teacher", "loss.ohem_thresh=0.7"]),
    "sup_init_tl_ohem": ("Student: L_sup only from the longer-trained teacher, as OHEM "
                         "cross-entropy (threshold 0.7)", "train_synthetic_student.yaml",
                         ["model.init=teacher", "loss.lambda_mad=0", "loss.alpha_umd=0",
                          "loss.beta_cmd=0", "loss.ohem_thresh=0.7"]),
}
# Rows whose code changed after their figures were committed, though not their commands:
# the revision joins the row's key, so `make results` runs them again, and until it has, the
# tables mark the committed figures as the earlier code's.
REVISIONS = {"baseline": "fusion=primary averages the auxiliary modalities that are present "
                         "(earlier: a missing one counted as zeros in the mean)"}
# Rows trained for a multiple of --steps (the others: --steps). Not part of the fixed-budget
# comparison: they ask whether a gap closes with more training.
STEP_FACTORS = {"full_init_tl_long": 2}
# The row whose checkpoint a row starts from or distils, where it is not the teacher's (every
# student's, when it is not named here).
SOURCES = {"teacher_long": "teacher", "full_init_tl": "teacher_long",
           "full_init_light_tl": "teacher_long", "sup_init_tl": "teacher_long",
           "full_init_tl_all": "teacher_long", "full_init_tl_long": "teacher_long",
           "full_init_tl_seed": "teacher_long", "sup_init_tl_seed": "teacher_long",
           "full_init_tl_ohem": "teacher_long", "sup_init_tl_ohem": "teacher_long"}

# The rows with the full method (all three distillation losses): the targets apply.
FULL_STUDENTS = ("full", "full_init", "full_init_lr2", "full_init_lr", "full_init_light",
                 "full_init_tl", "full_init_light_tl", "full_init_tl_all", "full_init_tl_long",
                 "full_init_tl_seed", "full_init_tl_ohem")
# Tables that set rows differing in one setting side by side (those of a group that have run,
# when there are two or more): (title, the setting's column, [(student, [(row, value), ...])]).
COMPARISONS = [
    ("Student initialisation: backbone's own vs the teacher's weights", "init",
     [("L_sup only", [("sup", "backbone"), ("sup_init", "teacher")]),
      ("AnySeg, all three losses", [("full", "backbone"), ("full_init", "teacher")])]),
    ("Peak learning rate of the AnySeg student started from the teacher", "peak lr",
     [("AnySeg, initialised from the teacher",
       [("full_init", "4e-4"), ("full_init_lr2", "2e-4"), ("full_init_lr", "1e-4")])]),
    ("Distillation weights of a student started from the teacher", "lambda, alpha, beta",
     [("started from the teacher", [("sup_init", "0, 0, 0"), ("full_init_light", "5, 0.5, 1"),
                                    ("full_init", "50, 5, 10")]),
      ("started from the longer-trained teacher", [("sup_init_tl", "0, 0, 0"),
                                                   ("full_init_light_tl", "5, 0.5, 1"),
                                                   ("full_init_tl", "50, 5, 10")])]),
    ("Teacher trained for 1500 steps, or for 1500 more from its own weights", "teacher's steps",
     [("PML teacher", [("teacher", "1500"), ("teacher_long", "1500 + 1500")]),
      ("AnySeg from the teacher", [("full_init", "1500"), ("full_init_tl", "1500 + 1500")]),
      ("AnySeg, weights / 10, from the teacher", [("full_init_light", "1500"),
                                                  ("full_init_light_tl", "1500 + 1500")]),
      ("L_sup only from the teacher", [("sup_init", "1500"), ("sup_init_tl", "1500 + 1500")])]),
    ("Anymodal dropout: uniform over the 7 subsets, or every modality in half the samples",
     "P(all modalities kept)",
     [("AnySeg from the longer-trained teacher", [("full_init_tl", "1/7 (uniform, the paper's)"),
                                                 ("full_init_tl_all", "1/2")])]),
    ("Student's training steps, from the longer-trained teacher", "student's steps",
     [("AnySeg from the longer-trained teacher", [("full_init_tl", "1500"),
                                                 ("full_init_tl_long", "3000")])]),
    ("Seed of the student's training (data order, augmentation, dropout draws)", "seed",
     [("AnySeg from the longer-trained teacher", [("full_init_tl", "3407"),
                                                 ("full_init_tl_seed", "1")]),
      ("L_sup only from the longer-trained teacher", [("sup_init_tl", "3407"),
                                                     ("sup_init_tl_seed", "1")])]),
    ("L_sup: plain cross-entropy, or OHEM cross-entropy (the authors' released training code)",
     "L_sup",
     [("AnySeg from the longer-trained teacher", [("full_init_tl", "cross-entropy"),
                                                 ("full_init_tl_ohem", "OHEM 0.7")]),
      ("L_sup only from the longer-trained teacher", [("sup_init_tl", "cross-entropy"),
                                                     ("sup_init_tl_ohem", "OHEM 0.7")])]),
]


class RowFailed(Exception):
    pass


def say(text: str) -> None:
    """One line to stdout in one write: rows run on threads (--jobs) print side by side."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def run(cmd: list[str], log: Path, env: dict | None = None) -> None:
    say("$ " + shlex.join(cmd))
    with open(log, "a") as f:
        f.write("$ " + shlex.join(cmd) + "\n")
        f.flush()
        proc = subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, env=env)
    if proc.returncode:
        raise RowFailed(f"command failed ({proc.returncode}); see {log}")


def cache_dir(args) -> str | None:
    return None if args.no_cache else (args.cache or str(Path(args.runs) / "cache"))


def commands(name: str, args, cache: bool = True) -> tuple[list[str], list[str]]:
    """The train and evaluate commands of row ``name``; ``cache=False`` leaves out the data
    cache, which decides no figure (the row's key is taken without it)."""
    _, config, overrides = ROWS[name]
    out = Path(args.runs) / name
    steps = args.steps * STEP_FACTORS.get(name, 1)
    sets = [f"out_dir={out}", f"optim.steps={steps}",
            f"optim.warmup_steps={max(1, steps // 15)}", "train.eval_samples=0", *overrides]
    if cache and cache_dir(args):
        sets.append(f"data.cache={cache_dir(args)}")
    if source(name):
        sets.append(f"teacher.checkpoint={Path(args.runs) / source(name) / 'final.safetensors'}")
    train = [PY, "-m", "anyseg_core.train", "--config", f"config/{config}"]
    for s in sets:
        train += ["--set", s]
    evaluate = [PY, "-m", "anyseg_core.evaluate", "--checkpoint", str(out / "final.safetensors"),
                "--dataset", "synthetic", "--split", "val", "--num-samples",
                str(args.eval_samples), "--out", str(out / "eval")]
    return train, evaluate


def is_student(name: str) -> bool:
    return ROWS[name][1].endswith("student.yaml")


def source(name: str) -> str | None:
    """The row whose checkpoint row ``name`` starts from or distils (None: from scratch)."""
    return SOURCES.get(name, "teacher" if is_student(name) else None)


def figures(report: dict) -> dict:
    """The figures kept from an ``anymodal.json``: mIoU per subset, mean and worst."""
    return {"miou": {s: report["subsets"][s]["miou"] for s in report["subsets"]},
            "mean": report["mean_miou"], "worst": report["worst_miou"],
            "worst_subset": report["worst_subset"]}


def portable(cmd: list[str]) -> list[str]:
    """``cmd`` as a reader runs it anywhere: ``python`` instead of this interpreter's path."""
    return ["python", *cmd[1:]] if cmd and cmd[0] == PY else list(cmd)


def row_key(name: str, args) -> str:
    """A hash of the row's commands, less what decides no figure: the data cache and the
    interpreter's path (a clone in another folder finds its committed rows done)."""
    cmds = [portable(cmd) for cmd in commands(name, args, cache=False)]
    if name in REVISIONS:
        cmds.append(["revision", REVISIONS[name]])
    return hashlib.sha1(json.dumps(cmds).encode()).hexdigest()[:12]


def is_done(name: str, args) -> bool:
    """Whether the row's JSON exists for the commands this run would use."""
    target = Path(args.results) / f"{name}.json"
    return target.exists() and json.loads(target.read_text()).get("key") == row_key(name, args)


def must_run(name: str, args, needed: bool) -> bool:
    """Whether run_row has work to do: the row is not done, or rows still to train start from
    it (``needed``) and its checkpoint or evaluation is missing from ``--runs``."""
    out = Path(args.runs) / name
    return not is_done(name, args) or (needed and not (
        (out / "final.safetensors").exists() and (out / "eval" / "anymodal.json").exists()))


def training_minutes(out: Path) -> float | None:
    """Minutes the row's training ran, summed over every invocation that trained it (a row
    resumed across sessions included), from its metrics.jsonl: each line's steps x batch size
    / samples per second. Start-up, checkpoints and evaluation are not counted. None when the
    files are missing."""
    seconds, prev = 0.0, 0
    try:
        batch = yaml.safe_load((out / "config.yaml").read_text())["optim"]["batch_size"]
        for line in (out / "metrics.jsonl").read_text().splitlines():
            rec = json.loads(line)
            seconds += (rec["step"] - prev) * batch / rec["samples_per_s"]
            prev = rec["step"]
    except (OSError, KeyError, TypeError, ValueError, ZeroDivisionError):
        return None  # missing or damaged files: no figure rather than a wrong one
    return round(seconds / 60, 1)


def run_row(name: str, args, needed: bool = False, env: dict | None = None) -> None:
    """Train (or resume) and evaluate one row, then write its JSON.

    A row whose JSON holds the same commands is done. The exception is a row that rows still
    to train start from (``needed``: the teacher, say) whose checkpoint is not in ``--runs``
    (a new machine): it is trained again with the same command and evaluated, but its JSON is
    kept, because the rows already in the tables were trained from that first run. Every
    student's JSON records the figures of the checkpoint it was distilled from, and the
    tables judge it against those.
    """
    results = Path(args.results)
    train, evaluate = commands(name, args)
    key = row_key(name, args)
    target = results / f"{name}.json"
    out = Path(args.runs) / name
    if not must_run(name, args, needed):
        say(f"[{name}] done already ({target})")
        return
    rerun = is_done(name, args)  # done, but needed again and its checkpoint is gone
    out.mkdir(parents=True, exist_ok=True)
    log = out / "experiment.log"
    t0 = time.time()
    if not (out / "final.safetensors").exists():
        resume = ["--resume"] if (out / "last.train.safetensors").exists() else []
        run(train + resume, log, env)
    run(evaluate, log, env)
    rep = json.loads((out / "eval" / "anymodal.json").read_text())
    say(f"[{name}] mean {rep['mean_miou']:.2f}, worst {rep['worst_miou']:.2f} "
        f"({rep['worst_subset']})")
    if rerun:
        say(f"[{name}] trained again for the rows that start from it; {target} keeps the "
            "first run")
        return
    row = {"row": name, "label": ROWS[name][0], "key": key, "revision": REVISIONS.get(name),
           "commands": [shlex.join(portable(train)), shlex.join(portable(evaluate))],
           "minutes": round((time.time() - t0) / 60, 1),
           "train_minutes": training_minutes(out), **figures(rep),
           "protocol": rep["protocol"]}
    if is_student(name):
        teacher_eval = Path(args.runs) / source(name) / "eval" / "anymodal.json"
        row["teacher"] = figures(json.loads(teacher_eval.read_text()))
    results.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(row, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default="all", help=f"comma list of {list(ROWS)} or all")
    ap.add_argument("--steps", type=int, default=1500, help="training steps of every row")
    ap.add_argument("--eval-samples", type=int, default=200)
    ap.add_argument("--runs", default="runs/experiment")
    ap.add_argument("--results", default="docs/results")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--jobs", type=int, default=1, help="rows trained at a time")
    ap.add_argument("--cache", default=None, help="folder of the rendered training set "
                    "(default <runs>/cache)")
    ap.add_argument("--no-cache", action="store_true", help="render samples as training reads "
                    "them")
    args = ap.parse_args()
    rows = list(ROWS) if args.rows == "all" else args.rows.split(",")
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        ap.error(f"unknown rows {unknown}; choose from {list(ROWS)}")
    if args.jobs < 1:
        ap.error("--jobs must be at least 1")
    failed = []
    if not args.report_only:
        failed = run_rows(rows, args)
    path = write_tables(Path(args.results))
    print(f"wrote {path}")
    if failed:
        sys.exit("rows failed: " + "; ".join(failed))


def run_rows(rows: list[str], args) -> list[str]:
    """Train and evaluate ``rows`` (and the rows they start from), up to ``args.jobs`` at a
    time. A row starts as soon as the row it starts from is done (not in waves: a student of
    a finished teacher need not wait for the baseline), and takes a share of the cores that
    are free (OMP_NUM_THREADS, unless the user set it): free cores / rows that could start now.
    A row that would find no free core waits, because oversubscribed OpenMP threads slow every
    run down several times. Returns the failures."""
    for r in list(rows):
        while source(r) and source(r) not in rows:
            rows = [source(r), *rows]
            r = source(r)
    pending = [r for r in rows if source(r) and not is_done(r, args)]
    needed = {source(r) for r in pending}
    user_threads = os.environ.get("OMP_NUM_THREADS")
    cores = os.cpu_count() or 1

    if cache_dir(args) and any(not is_done(r, args) for r in rows):
        Path(args.runs).mkdir(parents=True, exist_ok=True)
        run([PY, "-m", "anyseg_core.data.cache", "--config",
             "config/train_synthetic_teacher.yaml", "--set", f"data.cache={cache_dir(args)}"],
            Path(args.runs) / "cache.log",
            dict(os.environ, OMP_NUM_THREADS=user_threads or str(cores)))
    failed: dict[str, str] = {}

    def one(name: str, threads: int) -> None:
        if source(name) in failed:
            failed[name] = f"not run: {source(name)} failed"
            return
        env = dict(os.environ, OMP_NUM_THREADS=user_threads or str(threads))
        try:
            run_row(name, args, needed=name in needed, env=env)
        except RowFailed as err:
            say(f"[{name}] {err}")
            failed[name] = str(err)

    waiting, finished = list(rows), set()  # finished: done or failed
    running: dict = {}  # future -> (row, threads)
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        while waiting or running:
            ready = [r for r in waiting if source(r) is None or source(r) in finished]
            quick = [r for r in ready if source(r) in failed
                     or not must_run(r, args, r in needed)]
            for r in quick:
                one(r, 1)  # nothing to train: reports the row (or its failure) at once
                waiting.remove(r)
                finished.add(r)
            if quick:
                continue  # the rows that start from them may be ready now
            free = cores - sum(t for _, t in running.values())
            while ready and len(running) < args.jobs and (user_threads or free > 0):
                threads = max(1, free // min(args.jobs - len(running), len(ready)))
                r = ready.pop(0)
                waiting.remove(r)
                running[pool.submit(one, r, threads)] = (r, threads)
                free -= threads
            if not running:
                if waiting:  # a source outside ``rows`` that never finishes: cannot happen
                    raise RuntimeError(f"rows that cannot start: {waiting}")
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                fut.result()
                finished.add(running.pop(fut)[0])
    return [f"{name}: {why}" for name, why in failed.items()]


def target_rows(t: dict, f: dict) -> list[str]:
    """The issue's three targets for student ``f`` against teacher ``t``, as table rows."""
    checks = [("mean over subsets: student >= teacher + 5", t["mean"], f["mean"],
               f["mean"] - t["mean"] >= 5),
              ("worst subset: student >= teacher + 10", t["worst"], f["worst"],
               f["worst"] - t["worst"] >= 10),
              ("all modalities: within 2 of the teacher", t["miou"]["CEL"], f["miou"]["CEL"],
               abs(f["miou"]["CEL"] - t["miou"]["CEL"]) <= 2)]
    return ["| target | teacher | student | difference | met |", "|---|---|---|---|---|",
            *(f"| {name} | {a:.2f} | {b:.2f} | {b - a:+.2f} | {'yes' if ok else 'no'} |"
              for name, a, b, ok in checks)]


def retrained_teachers(rows: dict) -> dict:
    """Students distilled from another run of the teacher than the one in teacher.json (the
    teacher trained again on a new machine), grouped by that run's figures."""
    first = rows.get("teacher")
    groups: dict = {}
    for r in ROWS:
        t = rows.get(r, {}).get("teacher")
        if not t or source(r) != "teacher":
            continue
        if first and all(round(t["miou"][s], 2) == round(first["miou"][s], 2) for s in SUBSETS):
            continue
        groups.setdefault(tuple(round(t["miou"][s], 2) for s in SUBSETS), []).append(r)
    return groups


def write_tables(results: Path) -> Path:
    rows = {p.stem: json.loads(p.read_text()) for p in sorted(results.glob("*.json"))}
    order = [r for r in ROWS if r in rows]
    lines = ["# Synthetic world: anymodal results (generated)", "",
             "Written by `python scripts/synthetic_experiment.py`; do not edit by hand. mIoU in %",
             "over the validation split, one confusion matrix per subset (classes absent from",
             "both labels and predictions left out), missing modalities dropped from the fusion.",
             "C = camera, E = events, L = LiDAR.", "",
             "## Table 1 shape: every subset", "",
             "| row | " + " | ".join(SUBSETS) + " | Mean | Worst |",
             "|---|" + "---|" * (len(SUBSETS) + 2)]
    def label(r: str) -> str:
        stale = r in REVISIONS and rows[r].get("revision") != REVISIONS[r]
        return rows[r]["label"] + (" (earlier code; to run again: " + REVISIONS[r] + ")"
                                   if stale else "")
    table = [(label(r), rows[r]) for r in order]
    for students in retrained_teachers(rows).values():
        label = (f"PML teacher, trained again with the same command (the teacher of "
                 f"{', '.join(students)})")
        table.insert(order.index("teacher") + 1 if "teacher" in order else 0,
                     (label, rows[students[0]]["teacher"]))
    for label, f in table:
        m = f["miou"]
        lines.append(f"| {label} | " + " | ".join(f"{m[s]:.2f}" for s in SUBSETS)
                     + f" | **{f['mean']:.2f}** | {f['worst']:.2f} |")
    ablation = [r for r in ("sup", "mad", "umd", "full", "fkd") if r in rows]
    if ablation:
        lines += ["", "## Table 3 shape: the losses, one by one", "",
                  "| row | Mean | change vs L_sup only | CEL | Worst |", "|---|---|---|---|---|"]
        base = rows["sup"]["mean"] if "sup" in rows else None
        for r in ablation:
            d = "" if base is None else f"{rows[r]['mean'] - base:+.2f}"
            lines.append(f"| {rows[r]['label']} | {rows[r]['mean']:.2f} | {d} | "
                         f"{rows[r]['miou']['CEL']:.2f} | {rows[r]['worst']:.2f} |")
    for title, column, groups in COMPARISONS:
        groups = [(name, [(r, v) for r, v in pair if r in rows]) for name, pair in groups]
        groups = [(name, pair) for name, pair in groups if len(pair) >= 2]
        if groups:
            lines += ["", f"## {title}", "", f"| model | {column} | Mean | Worst | CEL |",
                      "|---|---|---|---|---|"]
            for name, pair in groups:
                for r, value in pair:
                    lines.append(f"| {name} | {value} | {rows[r]['mean']:.2f} | "
                                 f"{rows[r]['worst']:.2f} | {rows[r]['miou']['CEL']:.2f} |")
    for student in FULL_STUDENTS:
        teacher = rows.get(student, {}).get("teacher", rows.get("teacher"))
        if student in rows and teacher:
            what = ("the PML teacher" if source(student) == "teacher"
                    else f"the {source(student)} row")
            lines += ["", f"## Targets ({student} student vs {what} it was distilled from)",
                      "", *target_rows(teacher, rows[student])]
    lines += ["", "## Commands", ""]
    for r in order:
        took = (f"{rows[r]['train_minutes']} min training"
                if rows[r].get("train_minutes") is not None  # rows written before it existed
                else f"{rows[r]['minutes']} min in the invocation that finished it")
        lines += [f"- {r} ({took}):", "  ```", *(f"  {c}" for c in rows[r]["commands"]),
                  "  ```"]
    missing = [r for r in ROWS if r not in rows]
    if missing:
        lines += ["", f"Rows not run yet: {', '.join(missing)}."]
    path = results / "tables.md"
    results.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


if __name__ == "__main__":
    main()
