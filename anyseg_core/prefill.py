"""Render the synthetic world into a config's ``data.cache`` before training.

    python -m anyseg_core.prefill --config config/train_synthetic_teacher.yaml \\
        --set data.cache=runs/cache --jobs 16 [--splits train,val]

Optional: a training run fills the cache as it goes (:mod:`anyseg_core.data.cache`). Rendering
first spreads the work over every core (``--jobs`` processes, one thread each); items already
there are not rendered again.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from .config import ConfigError, load_config
from .data.cache import cache_key, synthetic_items
from .data.registry import DATASETS


def _fill(args: tuple) -> int:
    """Render every ``step``-th item of ``split`` from ``start`` that is not in the cache;
    returns how many it rendered (one worker of :func:`main`)."""
    data, split, num, start, step = args
    ds = synthetic_items(data, split, num)
    todo = [i for i in range(start, num, step) if not ds.path(i).exists()]
    for i in todo:
        ds[i]
    return len(todo)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m anyseg_core.prefill",
                                 description="Render the synthetic world into data.cache.")
    ap.add_argument("--config", required=True)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--splits", default="train", help="comma list of train, val")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config, args.set)
    except ConfigError as err:
        ap.error(str(err))
    data = cfg["data"]
    if not data.get("cache"):
        ap.error("set data.cache (in the config or with --set data.cache=DIR)")
    if not DATASETS[data["dataset"]].cacheable:
        ap.error("data.cache holds the synthetic world only")
    import multiprocessing as mp

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    for split in args.splits.split(","):
        num = data["train_samples"] if split == "train" else data["val_samples"]
        jobs = [(dict(data), split, num, k, args.jobs) for k in range(args.jobs)]
        with mp.get_context("spawn").Pool(args.jobs) as pool:
            made = sum(pool.map(_fill, jobs))
        folder = Path(data["cache"]) / cache_key(data, split)
        print(f"{split}: {num} items in {folder} ({made} rendered now)", flush=True)


if __name__ == "__main__":
    main()
