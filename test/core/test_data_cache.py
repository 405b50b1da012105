"""data.cache: the synthetic world's items rendered once, read back bit for bit."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from anyseg_core.config import ConfigError, load_config
from anyseg_core.data import build_dataset
from anyseg_core.data.cache import CachedItems, cache_key
from anyseg_core.train import train
from helpers import load_module

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY = REPO_ROOT / "config" / "train_tiny.yaml"


def _cfg(cache: Path | None, *overrides: str) -> dict:
    return load_config(TINY, ([f"data.cache={cache}"] if cache else []) + list(overrides))


def _same(a: dict, b: dict) -> None:
    assert a["inputs"].keys() == b["inputs"].keys()
    for m in a["inputs"]:
        assert a["inputs"][m].dtype == b["inputs"][m].dtype
        assert torch.equal(a["inputs"][m], b["inputs"][m]), m
    assert a["label"].dtype == b["label"].dtype and torch.equal(a["label"], b["label"])
    assert a["condition"] == b["condition"] and a["index"] == b["index"]


def test_cached_items_are_the_rendered_items(tmp_path):
    plain = build_dataset(_cfg(None), "train")
    cached = build_dataset(_cfg(tmp_path), "train")
    assert isinstance(cached, CachedItems) and len(cached) == len(plain)
    assert cached.classes == plain.classes
    first = cached[3]  # rendered and stored
    assert cached.rendered == 1 and cached.path(3).exists()
    _same(first, plain[3])
    again = build_dataset(_cfg(tmp_path), "train")  # a new process would see the same
    _same(again[3], plain[3])
    assert again.rendered == 0
    with pytest.raises(IndexError):
        cached[len(cached)]


def test_the_key_follows_what_decides_the_items(tmp_path):
    data = _cfg(tmp_path)["data"]
    key = cache_key(data, "train")
    assert cache_key(dict(data, train_samples=99, num_workers=0), "train") == key
    for changed in (dict(data, seed=1), dict(data, size=[32, 64]),
                    dict(data, modalities=["camera", "lidar"]),
                    dict(data, conditions=["fog-night"])):
        assert cache_key(changed, "train") != key
    assert cache_key(data, "val") != key


def test_an_unreadable_file_is_rendered_again(tmp_path):
    cached = build_dataset(_cfg(tmp_path), "train")
    good = cached[1]
    cached.path(1).write_bytes(b"not an npz")
    with pytest.warns(RuntimeWarning, match="unreadable"):
        item = cached[1]
    _same(item, good)
    _same(build_dataset(_cfg(tmp_path), "train")[1], good)  # the file was replaced


@pytest.mark.parametrize("override, message", [
    ("data.dataset=muses", "synthetic world only"),
    ("data.cache=''", "folder path or null"),
])
def test_bad_cache_settings_name_the_problem(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TINY, ["data.cache=x", override])


def test_training_from_the_cache_matches_training_without(tmp_path):
    # The same number of DataLoader workers in every run: a worker augments with one torch
    # thread, which can round differently from the main process.
    common = ["optim.steps=3", "train.eval_samples=0", "train.checkpoint_every=10",
              "data.num_workers=2"]
    plain = train(load_config(TINY, [f"out_dir={tmp_path / 'plain'}", *common]))
    # DataLoader workers fill the cache on the first run and read it on the second.
    cache = tmp_path / "cache"
    for run in ("fill", "read"):
        cached = train(load_config(TINY, [f"out_dir={tmp_path / run}", f"data.cache={cache}",
                                          *common]))
        a, b = load_file(str(plain)), load_file(str(cached))
        for k in a:
            assert torch.equal(a[k], b[k]), (run, k)
    folder = cache / cache_key(load_config(TINY, [f"data.cache={cache}"])["data"], "train")
    assert len(list(folder.glob("*.npz"))) == 8  # train_tiny.yaml's train_samples


def test_prefill_renders_each_item_once(tmp_path):
    cmd = [sys.executable, "-m", "anyseg_core.prefill", "--config", str(TINY), "--set",
           f"data.cache={tmp_path}", "--splits", "train,val", "--jobs", "2"]
    first = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert "train: 8 items" in first.stdout and "(8 rendered now)" in first.stdout
    assert "val: 4 items" in first.stdout and "(4 rendered now)" in first.stdout
    # the old name, python -m anyseg_core.data.cache, runs the same command
    old = [sys.executable, "-m", "anyseg_core.data.cache", *cmd[3:]]
    second = subprocess.run(old, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0 and second.stdout.count("(0 rendered now)") == 2
    assert "deprecated; use python -m anyseg_core.prefill" in second.stderr
    no_cache = subprocess.run(cmd[:5] + ["--splits", "train"], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=300)
    assert no_cache.returncode != 0 and "set data.cache" in no_cache.stderr


def test_the_data_package_does_not_import_the_config():
    """The config imports the data registry, so no data module may import the config (the
    cache's command line lives in anyseg_core/prefill.py for that reason)."""
    import ast

    for path in sorted((REPO_ROOT / "anyseg_core" / "data").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            assert not any(n == "config" or n.endswith(".config") for n in names), \
                f"{path.relative_to(REPO_ROOT)}:{node.lineno} imports the config"


def test_the_experiment_key_leaves_the_cache_out(tmp_path):
    exp = load_module("synthetic_experiment", REPO_ROOT / "scripts" / "synthetic_experiment.py")

    class Args:
        runs, steps, eval_samples, cache, no_cache = str(tmp_path), 1500, 200, None, False
        results = str(tmp_path / "results")

    with_cache = Args()
    without = Args()
    without.no_cache = True
    train_cmd = exp.commands("full", with_cache)[0]
    assert f"data.cache={tmp_path / 'cache'}" in train_cmd
    assert not any("data.cache" in c for c in exp.commands("full", without)[0])
    assert exp.row_key("full", with_cache) == exp.row_key("full", without)
    assert json.dumps(exp.commands("full", without)) != json.dumps(exp.commands("full",
                                                                               with_cache))


def test_the_key_ignores_spellings_that_make_the_same_items(tmp_path, monkeypatch):
    """Modality order and condition spelling do not change the items, so not the key either;
    numpy's version (its random streams) does; export and command line code are not hashed."""
    from anyseg_core.data import cache

    data = dict(_cfg(tmp_path)["data"], modalities=["camera", "events", "lidar"],
                conditions=["fog-night", "rain"])
    key = cache_key(data, "train")
    assert cache_key(dict(data, modalities=["lidar", "camera", "events"]), "train") == key
    assert cache_key(dict(data, conditions=["night-fog", "rain-day"]), "train") == key
    assert cache_key(dict(data, conditions=["rain", "fog-night"]), "train") != key  # cycling
    monkeypatch.setattr(cache.np, "__version__", "0.0.0")
    assert cache_key(data, "train") != key
    names = {p.relative_to(cache._PACKAGE).as_posix() for p in cache.item_sources()}
    assert {"data/synthetic/rig.py", "data/synthetic/dataset.py", "sensors/lidar.py",
            "modalities.py"} <= names
    assert not names & {"data/synthetic/export.py", "data/synthetic/__main__.py"}


def test_items_read_back_in_the_order_of_the_modalities_asked_for(tmp_path):
    """Two modality orders share a folder; each reads its items in its own order."""
    a = build_dataset(_cfg(tmp_path, "data.modalities=[camera,lidar]"), "train")
    b = build_dataset(_cfg(tmp_path, "data.modalities=[lidar,camera]"), "train")
    assert a.folder == b.folder
    first = a[2]
    assert list(first["inputs"]) == ["camera", "lidar"]
    again = b[2]
    assert b.rendered == 0 and list(again["inputs"]) == ["lidar", "camera"]
    for m in first["inputs"]:
        assert torch.equal(first["inputs"][m], again["inputs"][m])
