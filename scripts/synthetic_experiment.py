"""The experiment behind docs/results.md: the structure of the paper's Tables 1 and 3 on the
synthetic world, with three seeds where it matters.

    python scripts/synthetic_experiment.py [--rows all|teacher,sup,...] [--steps N]
        [--runs runs/experiment] [--results docs/results] [--eval-samples 200]
        [--jobs N] [--cache DIR | --no-cache] [--report-only]

Rows: the PML teacher (twice the students' steps), then students with anymodal dropout:
L_sup only (the paper's baseline; it needs no teacher and trains beside it), the full AnySeg
at the authors' loss scale, and this project's variant that takes L_mad only where the
teacher is right (three seeds each: the config's 3407, 1 and 2); the full AnySeg and L_sup
only started from the teacher's weights (one seed each); the full AnySeg at the earlier
per-pixel scale (one seed); L_sup only from its own initialisation for as many steps as the
teacher and ``sup_init`` together (one seed). Each row trains with
``python -m anyseg_core.train`` and is scored with ``python -m anyseg_core.evaluate`` over
every modality subset; its JSON lands in ``--results`` (its metrics and command log in
``<results>/logs/``). The teacher is
PUBLISHED: exported in fp16 to ``<results>/weights/``, evaluated from that file, and
distilled from it by every student; commit it with its JSON and a new machine never trains
it again. A row whose JSON exists for the same commands is skipped and a
row whose training was interrupted resumes (as long as ``--runs`` survives), so the script can
be re-run until every row is done. After the rows it writes ``<results>/tables.md`` (means and
spreads over seeds, differences, the targets, a per-class reading, the commands; generated
from the JSONs present; ``--report-only`` does only that); docs/results.md holds the reading.

The training set is rendered once into ``--cache`` (default ``<runs>/cache``, see
anyseg_core/data/cache.py) and every row reads it from there; the cache does not change any
figure, so it is left out of a row's key (so is the interpreter's path). ``--jobs N`` trains
up to N rows at a time; a row starts as soon as the row it starts from is done, and the rows
running share the cores (OMP_NUM_THREADS = free cores / rows starting, unless
OMP_NUM_THREADS is set; a row waits rather than oversubscribe the cores): on a 2-core CPU two
one-thread processes train faster together than one two-thread process, and a GPU has room
for several small runs.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
SUBSETS = ["C", "E", "L", "CE", "CL", "EL", "CEL"]

# The overrides that turn the student config into L_sup only (anymodal dropout, no teacher).
SUP_ONLY = ["loss.lambda_mad=0", "loss.alpha_umd=0", "loss.beta_cmd=0"]
# The variant of this project (docs/method.md, "Distilling where the teacher is right").
TEACHER_RIGHT = ["loss.mad_pixels=teacher_correct"]
# Seeds of the rows trained three times: the config's (3407), 1 and 2.
SEEDS = {"": [], "_s1": ["seed=1"], "_s2": ["seed=2"]}
STUDENT = "train_synthetic_student.yaml"

# name -> (label in the tables, config file, overrides); students need the teacher.
ROWS = {
    "teacher": ("PML teacher (mean fusion, every modality)", "train_synthetic_teacher.yaml", []),
    **{f"sup{s}": ("Student: anymodal dropout, L_sup only", STUDENT, [*SUP_ONLY, *seed])
       for s, seed in SEEDS.items()},
    **{f"full{s}": ("Student: AnySeg (L_sup + 50 L_mad + 5 L_umd + 10 L_cmd)", STUDENT, seed)
       for s, seed in SEEDS.items()},
    **{f"full_tr{s}": ("Student: AnySeg, L_mad only where the teacher is right (ours)", STUDENT,
                       [*TEACHER_RIGHT, *seed]) for s, seed in SEEDS.items()},
    "full_init": ("Student: AnySeg, started from the teacher's weights", STUDENT,
                  ["model.init=teacher"]),
    "sup_init": ("Student: L_sup only, started from the teacher's weights", STUDENT,
                 ["model.init=teacher", *SUP_ONLY]),
    "sup_long": ("Student: L_sup only, from its own initialisation, for sup_init's total "
                 "steps (the teacher's and the student's)", STUDENT, SUP_ONLY),
    "full_sum": ("Student: AnySeg at the earlier scale (KL summed over classes / channels)",
                 STUDENT, ["loss.kl_reduction=sum"]),
}
# Rows whose code changed after their figures were committed, though not their commands:
# the revision joins the row's key, so `make results` runs them again, and until it has, the
# tables mark the committed figures as the earlier code's.
REVISIONS: dict[str, str] = {}
# Rows trained for a multiple of --steps (the others: --steps): the teacher trains twice the
# students' budget (3000 steps at the default, the earlier `teacher_long` budget); sup_long
# as many steps as the teacher and sup_init together, so that sup_init's lead over sup tells
# the teacher's weights from the steps.
STEP_FACTORS = {"teacher": 2, "sup_long": 3}
# The row whose checkpoint a row starts from or distils, where it is not the teacher's (every
# student's, when it is not named here).
SOURCES: dict[str, str] = {}
# Rows that others start from: their weights are committed in fp16 under <results>/weights
# (a new machine does not train them again), and that copy is what is evaluated and distilled.
PUBLISHED = ("teacher",)

# Groups of rows that differ only in their seed: the tables report their mean and spread.
GROUPS = {"sup": ("sup", "sup_s1", "sup_s2"), "full": ("full", "full_s1", "full_s2"),
          "full_tr": ("full_tr", "full_tr_s1", "full_tr_s2")}
# The rows with all three distillation losses: the targets apply to them.
FULL_STUDENTS = ("full", "full_tr", "full_init", "full_sum")


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


def weights(name: str, args) -> Path:
    """Where a PUBLISHED row's fp16 weights are committed (beside its JSON)."""
    return Path(args.results) / "weights" / f"{name}.safetensors"


def commands(name: str, args, cache: bool = True) -> tuple[list[str], list[str]]:
    """The train and evaluate commands of row ``name``; ``cache=False`` leaves out the data
    cache, which decides no figure (the row's key is taken without it). A PUBLISHED row is
    evaluated from its committed fp16 copy, and its students distil that copy."""
    _, config, overrides = ROWS[name]
    out = Path(args.runs) / name
    steps = args.steps * STEP_FACTORS.get(name, 1)
    sets = [f"out_dir={out}", f"optim.steps={steps}",
            f"optim.warmup_steps={max(1, steps // 15)}", "train.eval_samples=0", *overrides]
    if cache and cache_dir(args):
        sets.append(f"data.cache={cache_dir(args)}")
    if source(name):
        sets.append(f"teacher.checkpoint={weights(source(name), args)}")
    train = [PY, "-m", "anyseg_core.train", "--config", f"config/{config}"]
    for s in sets:
        train += ["--set", s]
    model = weights(name, args) if name in PUBLISHED else out / "final.safetensors"
    evaluate = [PY, "-m", "anyseg_core.evaluate", "--checkpoint", str(model),
                "--dataset", "synthetic", "--split", "val", "--num-samples",
                str(args.eval_samples), "--out", str(out / "eval")]
    return train, evaluate


def is_student(name: str) -> bool:
    return ROWS[name][1].endswith("student.yaml")


def source(name: str) -> str | None:
    """The row whose checkpoint row ``name`` starts from or distils (None: from scratch, and
    an L_sup-only student that starts from the backbone's own initialisation)."""
    if name in SOURCES:
        return SOURCES[name]
    overrides = ROWS[name][2]
    uses_teacher = "model.init=teacher" in overrides or not set(SUP_ONLY) <= set(overrides)
    return "teacher" if is_student(name) and uses_teacher else None


def per_class(report: dict) -> dict:
    """IoU per class (%) of every subset, from an ``anymodal.json`` (None: not scored)."""
    return {s: r.get("iou") for s, r in report["subsets"].items()}


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
    """Whether the row's JSON exists for the commands this run would use, and (a student) was
    distilled from the run of its source that is in the tables now (``teacher_key``; a JSON
    written before that field existed counts as the present one's)."""
    target = Path(args.results) / f"{name}.json"
    if not target.exists():
        return False
    row = json.loads(target.read_text())
    if row.get("key") != row_key(name, args):
        return False
    src = source(name)
    return not src or row.get("teacher_key", row_key(src, args)) == row_key(src, args)


def published(name: str, args) -> bool:
    """Whether a PUBLISHED row's committed weights are those of its present commands (the
    row key is written beside them, ``<weights>.key``)."""
    path = weights(name, args)
    key = path.with_name(path.name + ".key")
    return path.exists() and key.exists() and key.read_text().strip() == row_key(name, args)


def must_run(name: str, args, needed: bool) -> bool:
    """Whether run_row has work to do: the row is not done, or (an unpublished row) rows
    still to train start from it (``needed``) and its checkpoint is missing from ``--runs``.
    A PUBLISHED row done is never trained again: its students read its committed weights."""
    if not is_done(name, args):
        return True
    if name in PUBLISHED:
        return not published(name, args)
    return needed and not (Path(args.runs) / name / "final.safetensors").exists()


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

    A row whose JSON holds the same commands is done. A PUBLISHED row is exported in fp16 to
    :func:`weights` after training (commit that file with the JSON) and evaluated from it.
    An unpublished row that rows still to train start from (``needed``) whose checkpoint is
    not in ``--runs`` (a new machine) is trained again with the same command, but its JSON is
    kept: the rows already in the tables were trained from that first run. Every student's
    JSON records the figures of the row it was distilled from (that row's JSON).
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
    fresh = name in PUBLISHED and published(name, args)  # committed for these commands
    if not (out / "final.safetensors").exists() and not fresh:
        resume = ["--resume"] if (out / "last.train.safetensors").exists() else []
        run(train + resume, log, env)
    if name in PUBLISHED and not fresh:
        path = weights(name, args)
        path.parent.mkdir(parents=True, exist_ok=True)
        run([PY, "-m", "anyseg_core.export", str(out / "final.safetensors"), str(path),
             "--dtype", "float16"], log, env)
        path.with_name(path.name + ".key").write_text(key + "\n")
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
           "per_class": per_class(rep), "protocol": rep["protocol"]}
    if source(name):
        row["teacher"] = {k: v for k, v in json.loads(
            (results / f"{source(name)}.json").read_text()).items()
            if k in ("miou", "mean", "worst", "worst_subset")}
        row["teacher_key"] = row_key(source(name), args)
    results.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(row, indent=2))
    keep_logs(name, args)


def keep_logs(name: str, args) -> None:
    """Copy the row's training metrics and its command log beside its JSON
    (``<results>/logs/``), to be committed with it: ``--runs`` does not outlive a machine."""
    out, logs = Path(args.runs) / name, Path(args.results) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for src, dst in (("metrics.jsonl", f"{name}.metrics.jsonl"),
                     ("experiment.log", f"{name}.log")):
        if (out / src).exists():
            shutil.copyfile(out / src, logs / dst)


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
        run([PY, "-m", "anyseg_core.prefill", "--config",
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


def stats(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    n = len(values)
    mean = sum(values) / n
    sd = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5 if n > 1 else None
    return mean, sd


def group_rows(rows: dict) -> dict[str, list[str]]:
    """The rows present, grouped by seed: a GROUPS entry with those of its rows that ran, and
    every other row on its own."""
    grouped = {g: [r for r in members if r in rows] for g, members in GROUPS.items()}
    grouped = {g: members for g, members in grouped.items() if members}
    inside = {r for members in grouped.values() for r in members}
    grouped.update({r: [r] for r in ROWS if r in rows and r not in inside})
    return {g: grouped[g] for g in sorted(grouped, key=lambda g: list(ROWS).index(
        grouped[g][0]))}


def summary(rows: dict, members: list[str]) -> dict:
    """Per subset, mean over subsets and worst subset of a group: (mean, sd) over its seeds.
    The mean and the worst are taken per seed first, then averaged."""
    out = {s: stats([rows[r]["miou"][s] for r in members]) for s in SUBSETS}
    out["Mean"] = stats([rows[r]["mean"] for r in members])
    out["Worst"] = stats([rows[r]["worst"] for r in members])
    return out


def cell(value: tuple[float, float | None], bold: bool = False) -> str:
    mean, sd = value
    text = f"{mean:.2f}" + ("" if sd is None else f" ± {sd:.2f}")
    return f"**{text}**" if bold else text


def difference(rows: dict, a: list[str], b: list[str]) -> dict:
    """``a - b`` per subset and for the mean over subsets: the difference of the group means,
    its spread sqrt(sd_a^2 + sd_b^2) (None with a single seed on either side), and the
    differences of the runs paired by seed (same data order, augmentation and dropout)."""
    sa, sb = summary(rows, a), summary(rows, b)
    paired = [(x, y) for x in a for y in b if seed_of(x) == seed_of(y)]
    out = {}
    for key in [*SUBSETS, "Mean"]:
        (ma, da), (mb, db) = sa[key], sb[key]
        spread = None if da is None or db is None else (da ** 2 + db ** 2) ** 0.5
        pick = (lambda r: rows[r]["mean"]) if key == "Mean" else (lambda r: rows[r]["miou"][key])
        out[key] = (ma - mb, spread, [pick(x) - pick(y) for x, y in paired])
    return out


def seed_of(row: str) -> str:
    """The seed suffix of a row ('' for the config's seed)."""
    return next((suffix for suffix in SEEDS if suffix and row.endswith(suffix)), "")


def target_rows(t: dict, f: dict) -> list[str]:
    """The issue's three targets for figures ``f`` (of a student, or a group's means) against
    teacher ``t``, as table rows."""
    checks = [("mean over subsets: student >= teacher + 5", t["mean"], f["mean"],
               f["mean"] - t["mean"] >= 5),
              ("worst subset: student >= teacher + 10", t["worst"], f["worst"],
               f["worst"] - t["worst"] >= 10),
              ("all modalities: within 2 of the teacher", t["miou"]["CEL"], f["miou"]["CEL"],
               abs(f["miou"]["CEL"] - t["miou"]["CEL"]) <= 2)]
    return ["| target | teacher | student | difference | met |", "|---|---|---|---|---|",
            *(f"| {name} | {a:.2f} | {b:.2f} | {b - a:+.2f} | {'yes' if ok else 'no'} |"
              for name, a, b, ok in checks)]


def group_figures(rows: dict, members: list[str]) -> dict:
    """A group's figures in the shape of one row's: the means over its seeds."""
    sm = summary(rows, members)
    return {"miou": {s: sm[s][0] for s in SUBSETS}, "mean": sm["Mean"][0],
            "worst": sm["Worst"][0]}


def class_table(rows: dict, teacher: str, members: list[str]) -> list[str]:
    """IoU per class of the teacher and of a group (mean over its seeds) with every modality
    and on the teacher's worst subset; classes scored in neither are left out."""
    t = rows[teacher]
    worst = t["worst_subset"]
    def iou(r, subset, name):
        return ((rows[r].get("per_class") or {}).get(subset) or {}).get(name)
    names = list(((t.get("per_class") or {}).get("CEL") or {}))
    if not names:
        return []
    lines = [f"| class | teacher CEL | student CEL | teacher {worst} | student {worst} |",
             "|---|---|---|---|---|"]
    for name in names:
        vals = []
        for subset in ("CEL", worst):
            vals.append(iou(teacher, subset, name))
            got = [iou(r, subset, name) for r in members]
            got = [v for v in got if v is not None]
            vals.append(sum(got) / len(got) if got else None)
        if all(v is None for v in vals):
            continue
        lines.append(f"| {name} | " + " | ".join("-" if v is None else f"{v:.1f}" for v in vals)
                     + " |")
    return lines


def write_tables(results: Path) -> Path:
    rows = {p.stem: json.loads(p.read_text()) for p in sorted(results.glob("*.json"))}
    rows = {r: v for r, v in rows.items() if r in ROWS}
    groups = group_rows(rows)
    lines = ["# Synthetic world: anymodal results (generated)", "",
             "Written by `python scripts/synthetic_experiment.py`; do not edit by hand. mIoU in %",
             "over the validation split, one confusion matrix per subset (classes absent from",
             "both labels and predictions left out), missing modalities dropped from the fusion.",
             "C = camera, E = events, L = LiDAR. Mean ± standard deviation over the seeds that",
             "have run (n); Mean and Worst are taken per run, then averaged.", "",
             "## Every subset, over seeds", "",
             "| model | n | " + " | ".join(SUBSETS) + " | Mean | Worst |",
             "|---|---|" + "---|" * (len(SUBSETS) + 2)]
    for g, members in groups.items():
        sm = summary(rows, members)
        label = rows[members[0]]["label"]
        stale = [r for r in members if r in REVISIONS and rows[r].get("revision") != REVISIONS[r]]
        if stale:
            label += f" (earlier code in {', '.join(stale)}; to run again: " + "; ".join(
                sorted({REVISIONS[r] for r in stale})) + ")"
        lines.append(f"| {label} | {len(members)} | " + " | ".join(cell(sm[s]) for s in SUBSETS)
                     + f" | {cell(sm['Mean'], bold=True)} | {cell(sm['Worst'])} |")
    pairs = [("full", "sup", "AnySeg - L_sup only"), ("full_tr", "sup", "ours - L_sup only"),
             ("full_tr", "full", "ours - AnySeg"),
             ("full_init", "sup_init", "AnySeg - L_sup only, both from the teacher's weights"),
             ("sup_init", "sup_long", "L_sup only: from the teacher's weights - from its own "
              "initialisation, the same steps in all"),
             ("full_sum", "full", "AnySeg at the earlier scale - at the authors' scale")]
    pairs = [(a, b, what) for a, b, what in pairs if a in groups and b in groups]
    if pairs:
        lines += ["", "## Differences", "",
                  "Difference of the means over seeds, ± sqrt(sd_a^2 + sd_b^2) where both sides "
                  "have seeds; in brackets the differences of the runs paired by seed.", "",
                  "| comparison | " + " | ".join(SUBSETS) + " | Mean |",
                  "|---|" + "---|" * (len(SUBSETS) + 1)]
        for a, b, what in pairs:
            diff = difference(rows, groups[a], groups[b])
            def fmt(d):
                mean, spread, paired = d
                text = f"{mean:+.2f}" + ("" if spread is None else f" ± {spread:.2f}")
                if len(paired) > 1:
                    text += " [" + ", ".join(f"{p:+.2f}" for p in paired) + "]"
                return text
            lines.append(f"| {what} | " + " | ".join(fmt(diff[s]) for s in SUBSETS)
                         + f" | **{fmt(diff['Mean'])}** |")
    if "teacher" in rows:
        students = [g for g in groups if is_student(groups[g][0])]
        if students:
            best = max(students, key=lambda g: summary(rows, groups[g])["Mean"][0])
            lines += ["", f"## Targets (the best student, `{best}` over {len(groups[best])} "
                      "seed(s), vs the PML teacher)", "",
                      *target_rows(rows["teacher"], group_figures(rows, groups[best]))]
            if "full" in groups and "sup" in groups:
                mean, spread, _ = difference(rows, groups["full"], groups["sup"])["Mean"]
                verdict = ("not judged: a single seed on a side" if spread is None else
                           "yes" if mean > spread else "no")
                lines += ["", "Full AnySeg beats L_sup only on the mean over subsets by more "
                          f"than the seeds' spread: {mean:+.2f} against ± "
                          f"{'-' if spread is None else f'{spread:.2f}'}: **{verdict}**."]
            table = class_table(rows, "teacher", groups[best])
            if table:
                lines += ["", f"## Per class: the teacher and the best student (`{best}`)", "",
                          *table]
    path = write_tables_file(results, lines, rows, ROWS)
    main_table(results.parent / "results.md", lines)
    return path


def write_tables_file(results: Path, lines: list[str], rows: dict, all_rows) -> Path:
    """``results``/tables.md: ``lines``, then each done row's commands and the rows of
    ``all_rows`` not run yet."""
    lines += ([""] if lines and lines[-1] else []) + ["## Commands", ""]
    for r in [r for r in all_rows if r in rows]:
        took = (f" ({rows[r]['train_minutes']} min training)"
                if rows[r].get("train_minutes") is not None
                else f" ({rows[r]['minutes']} min in the invocation that finished it)"
                if rows[r].get("minutes") is not None else "")
        lines += [f"- {r}{took}:", "  ```", *(f"  {c}" for c in rows[r]["commands"]),
                  "  ```"]
    missing = [r for r in all_rows if r not in rows]
    if missing:
        lines += ["", f"Rows not run yet: {', '.join(missing)}."]
    path = results / "tables.md"
    results.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


MAIN_START = ("<!-- main table: written by scripts/synthetic_experiment.py from "
              "results/tables.md -->")
MAIN_END = "<!-- end of the main table -->"


def main_table(report: Path, lines: list[str]) -> None:
    """Copy the "Every subset, over seeds" table into ``report`` (docs/results.md) between
    its MAIN_START and MAIN_END lines, when it has them: the report's table is always the
    generated one."""
    if not report.is_file():
        return
    text = report.read_text()
    if MAIN_START not in text or MAIN_END not in text:
        return
    start = lines.index("## Every subset, over seeds") + 2
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    head, rest = text.split(MAIN_START, 1)
    tail = rest.split(MAIN_END, 1)[1]
    report.write_text(head + MAIN_START + "\n" + "\n".join(lines[start:end]) + "\n" + MAIN_END
                      + tail)


if __name__ == "__main__":
    main()
