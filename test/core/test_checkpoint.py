"""Checkpoints (anyseg_core.checkpoint) and training states (anyseg_core.training_state):
round trips, fp16, atomic writes, clear errors, no pickle, exact resume."""
from __future__ import annotations

import ast
import json
import os
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from torch import nn

import anyseg_core
from anyseg_core import checkpoint as ckpt
from anyseg_core import training_state as tstate
from anyseg_core.checkpoint import (CheckpointError, build_model, load_state_dict,
                                    read_metadata, save_model)
from anyseg_core.training_state import (capture_rng_state, load_training_state,
                                        read_training_header, restore_rng_state,
                                        save_training_state)
from anyseg_core.model import AnymodalSegmentor

MODS = ("camera", "lidar")


def load_into(model, path):
    """Copy a checkpoint into ``model`` through the package's own fit check (build_model's)."""
    state, meta_ = load_state_dict(path)
    ckpt.copy_into(model, state, True, f"checkpoint {path}")
    return meta_


def tiny(num_classes=5, fusion="mean", seed=0):
    torch.manual_seed(seed)
    return AnymodalSegmentor(MODS, num_classes, embed_dim=16, fusion=fusion).eval()


def meta(**kw):
    out = {"input_size": [64, 64], "stage": "teacher", "step": 123,
           "class_names": [f"c{i}" for i in range(5)],
           "palette": [[i, 2 * i, 255 - i] for i in range(5)],
           "train_config": {"lr": 1e-3, "schedule": {"warmup": 10}, "modalities": list(MODS)},
           "event": {"window": 0.03, "third": "recency"}}
    out.update(kw)
    return out


def x_in(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(1, 3, 64, 64, generator=g) for m in MODS}


@pytest.fixture(scope="module")
def model():
    return tiny()


@pytest.fixture(scope="module")
def saved(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "teacher.safetensors"
    save_model(path, model, meta())
    return path


# ---------------------------------------------------------------------------- round trip

def test_round_trip_gives_identical_outputs(model, saved):
    rebuilt, m = build_model(saved)
    assert not rebuilt.training
    with torch.no_grad():
        a, b = model(x_in()).logits, rebuilt(x_in()).logits
    assert torch.equal(a, b)
    for (ka, va), (kb, vb) in zip(model.state_dict().items(), rebuilt.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
    assert m["stage"] == "teacher"


def test_metadata_round_trips(model, saved):
    m = read_metadata(saved)
    want = meta()
    for k, v in want.items():
        assert m[k] == v, k
    assert m["format"] == "anyseg-checkpoint" and m["format_version"] == 1
    assert m["modalities"] == list(MODS) and m["num_classes"] == 5
    assert m["backbone"] == model.backbone_name == "pvt_v2_b0"
    assert m["embed_dim"] == 16 and m["fusion"] == "mean"
    assert m["normalization"]["lidar"] == {"mean": [4.917, 6.149, 0.27],
                                           "std": [13.35, 17.64, 1.232]}
    assert m["code_version"]["anyseg_core"] == anyseg_core.__version__
    commit = m["code_version"]["git_commit"]
    assert commit is None or len(commit) in (40, 64)
    assert m["created"].startswith("20")
    assert set(ckpt.REQUIRED_KEYS) <= set(m)
    # The same metadata through load_state_dict, with plain state_dict names as tensors.
    state, m2 = load_state_dict(saved)
    assert m2 == m
    assert set(state) == set(model.state_dict())
    # One key in the safetensors header holds all of it, as JSON.
    from safetensors import safe_open
    with safe_open(str(saved), "pt") as f:
        assert json.loads(f.metadata()["anyseg"]) == m


def test_cityscapes_defaults_and_model_attributes(tmp_path):
    m19 = AnymodalSegmentor(("camera",), 19, embed_dim=16)
    path = save_model(tmp_path / "c.safetensors", m19,
                      {"input_size": [288, 512], "stage": "student", "step": 0,
                       "train_config": {}})
    got = read_metadata(path)
    assert got["class_names"][0] == "road" and len(got["palette"]) == 19
    assert got["palette"][0] == [128, 64, 128]


def test_meta_contradicting_the_model_is_refused(model, tmp_path):
    with pytest.raises(CheckpointError, match=r"meta\['num_classes'\] = 7 but the model's "
                                              r"num_classes is 5"):
        save_model(tmp_path / "x.safetensors", model, meta(num_classes=7))
    with pytest.raises(CheckpointError, match="missing metadata key 'input_size'"):
        save_model(tmp_path / "x.safetensors", model,
                   {k: v for k, v in meta().items() if k != "input_size"})
    with pytest.raises(CheckpointError, match="'palette' must be a list of 5"):
        save_model(tmp_path / "x.safetensors", model, meta(palette=[[0, 0, 0]] * 4))
    assert not list(tmp_path.iterdir())


def test_a_model_without_the_attributes_needs_them_in_meta(tmp_path):
    plain = nn.Sequential(nn.Conv2d(3, 4, 1))
    with pytest.raises(CheckpointError, match="no 'modalities' and the model .* no attribute"):
        save_model(tmp_path / "p.safetensors", plain, meta())
    full = meta(modalities=list(MODS), num_classes=5, backbone="none", embed_dim=4,
                fusion="mean")
    path = save_model(tmp_path / "p.safetensors", plain, full)
    assert read_metadata(path)["backbone"] == "none"


def test_fp16_halves_the_file_and_loads_into_fp32(model, saved, tmp_path):
    half = save_model(tmp_path / "half.safetensors", model, meta(), dtype=torch.float16)
    ratio = half.stat().st_size / saved.stat().st_size
    assert 0.45 < ratio < 0.6, ratio
    state, m = load_state_dict(half)
    assert m["weights_dtype"] == "float16"
    assert state["head.classifier.weight"].dtype == torch.float16
    # Buffers stay as they were: BN statistics in fp32, counters int64.
    assert state["head.fuse.1.running_var"].dtype == torch.float32
    assert state["head.fuse.1.num_batches_tracked"].dtype == torch.int64
    rebuilt, _ = build_model(half)
    assert all(p.dtype == torch.float32 for p in rebuilt.parameters())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x_in()).logits, model(x_in()).logits,
                                   atol=1e-2, rtol=1e-2)


def test_the_export_command_round_trip(model, saved, tmp_path, capsys):
    """python -m anyseg_core.export: the same metadata, fp16 weights (about half the file),
    outputs within fp16 rounding of the original; bfloat16 likewise; a file that is not a
    checkpoint is one error line and exit code 2."""
    from anyseg_core.export import main
    out = tmp_path / "half.safetensors"
    assert main([str(saved), str(out)]) == 0
    assert "float16" in capsys.readouterr().out
    assert out.stat().st_size < 0.6 * saved.stat().st_size
    half, half_meta = build_model(out)
    original = read_metadata(saved)
    assert half_meta["weights_dtype"] == "float16"
    assert {k: v for k, v in half_meta.items() if k not in ("weights_dtype", "created")} == \
        {k: v for k, v in original.items() if k not in ("weights_dtype", "created")}
    with torch.no_grad():
        a, b = model(x_in()).logits, half(x_in()).logits
    assert torch.allclose(a, b, atol=2e-2) and not torch.equal(a, b)
    assert main([str(saved), str(tmp_path / "bf.safetensors"), "--dtype", "bfloat16"]) == 0
    assert build_model(tmp_path / "bf.safetensors")[1]["weights_dtype"] == "bfloat16"
    capsys.readouterr()
    (tmp_path / "junk.safetensors").write_bytes(b"junk" * 10)
    assert main([str(tmp_path / "junk.safetensors"), str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "junk.safetensors" in err
    assert not (tmp_path / "x.safetensors").exists()


def test_fp16_overflow_is_refused(tmp_path):
    plain = nn.Linear(2, 2)
    with torch.no_grad():
        plain.weight[0, 0] = 1e6
    with pytest.raises(CheckpointError, match=r"'weight' does not fit in torch.float16"):
        save_model(tmp_path / "o.safetensors", plain,
                   meta(modalities=["camera"], num_classes=5, backbone="b", embed_dim=1,
                        fusion="mean"),
                   dtype=torch.float16)


def test_build_model_overrides_and_leaves_the_rng_alone(saved):
    torch.manual_seed(7)
    before = torch.get_rng_state()
    model, _ = build_model(saved, head_dropout=0.0)
    assert torch.equal(torch.get_rng_state(), before)
    assert model.head.dropout.p == 0.0
    with pytest.raises(TypeError, match="unknown argument"):
        build_model(saved, pretrained=True)


# -------------------------------------------------------------------------- atomic write

def _no_temp_files(directory: Path):
    return [p.name for p in directory.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_follow_the_umask(model, tmp_path, umask):
    """safetensors writes 0600 files; checkpoints get the umask's mode like any other file,
    so that another account (the one running the ROS node) can read them."""
    old = os.umask(umask)
    try:
        path = save_model(tmp_path / "m.safetensors", model, meta(step=1))
        state = save_training_state(tmp_path / "last.train.safetensors", model=model,
                                    step=1, epoch=0)
    finally:
        os.umask(old)
    for p in (path, state):
        assert os.stat(p).st_mode & 0o777 == 0o666 & ~umask, (p, oct(os.stat(p).st_mode))


def test_failed_write_keeps_the_previous_file(model, tmp_path, monkeypatch):
    path = save_model(tmp_path / "m.safetensors", model, meta(step=1))
    before = path.read_bytes()
    real = safetensors.torch.save_file

    def half_then_fail(tensors, filename, metadata=None):
        real(tensors, filename, metadata)
        with open(filename, "r+b") as f:
            f.truncate(os.path.getsize(filename) // 2)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", half_then_fail)
    with pytest.raises(CheckpointError, match=r"m\.safetensors: writing failed .*No space"):
        save_model(path, model, meta(step=2))
    assert path.read_bytes() == before and read_metadata(path)["step"] == 1
    assert _no_temp_files(tmp_path)


def test_failed_rename_keeps_the_previous_file(model, tmp_path, monkeypatch):
    path = save_model(tmp_path / "m.safetensors", model, meta(step=1))
    before = path.read_bytes()

    def fail(src, dst):
        raise PermissionError("nope")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(CheckpointError, match="writing failed"):
        save_training_state(tmp_path / "last.train.safetensors", model=model, step=1, epoch=0)
    with pytest.raises(CheckpointError, match="writing failed"):
        save_model(path, model, meta(step=2))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_interrupt_during_write_leaves_no_temp_file(model, tmp_path, monkeypatch):
    def interrupted(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_model(tmp_path / "sub" / "m.safetensors", model, meta())
    assert list((tmp_path / "sub").iterdir()) == []


# ----------------------------------------------------------------------------- load errors

def test_shape_mismatch_names_the_weight_and_both_shapes(saved):
    other = tiny(num_classes=7)
    with pytest.raises(CheckpointError, match=r"teacher\.safetensors does not fit") as info:
        load_into(other, saved)
    msg = str(info.value)
    assert "2 shape mismatches" in msg
    assert "head.classifier.weight: checkpoint [5, 16, 1, 1] vs model [7, 16, 1, 1]" in msg
    assert "head.classifier.bias: checkpoint [5] vs model [7]" in msg


def test_missing_and_unexpected_keys_are_listed(model, saved, tmp_path):
    primary = tiny(fusion="primary")
    with pytest.raises(CheckpointError,
                       match=r"4 missing keys \(in the model, not in the checkpoint\): "
                             r"aux_proj\.0\.weight, aux_proj\.1\.weight"):
        load_into(primary, saved)
    p_path = save_model(tmp_path / "primary.safetensors", primary, meta())
    with pytest.raises(CheckpointError, match=r"4 unexpected keys \(in the checkpoint, not in "
                                              r"the model\): aux_proj\.0\.weight"):
        load_into(model, p_path)
    fresh = tiny(seed=3)
    load_into(fresh, saved)
    assert torch.equal(fresh.head.classifier.weight, model.head.classifier.weight)
    # build_model builds what the metadata says, so the primary checkpoint just works.
    assert build_model(p_path)[0].fusion == "primary"


def test_many_missing_keys_are_counted():
    names = [f"w{i}" for i in range(9)]
    with pytest.raises(CheckpointError, match=r"9 missing keys .*: w0, w1, w2, w3, w4, "
                                              r"\.\.\. and 4 more"):
        ckpt._check_fit(nn.ParameterDict({n: nn.Parameter(torch.zeros(1)) for n in names}),
                        {}, True, "checkpoint x")


@pytest.mark.parametrize("keep", [0, 5, 100, -100])
def test_truncated_file_is_refused(saved, tmp_path, keep):
    data = saved.read_bytes()
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(data[:keep] if keep >= 0 else data[:keep])
    with pytest.raises(CheckpointError, match=r"cut\.safetensors: file (is truncated|is not a "
                                              r"safetensors file)"):
        read_metadata(bad)
    with pytest.raises(CheckpointError, match="cut.safetensors"):
        build_model(bad)


def test_garbage_and_missing_files_are_refused(tmp_path):
    bad = tmp_path / "garbage.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}" + bytes(100))
    with pytest.raises(CheckpointError, match="garbage.safetensors: file is not a safetensors "
                                              "file .*not valid JSON"):
        read_metadata(bad)
    bad.write_bytes(os.urandom(1000))
    with pytest.raises(CheckpointError, match="garbage.safetensors: file is not a safetensors"):
        load_state_dict(bad)
    with pytest.raises(CheckpointError, match="nothere.safetensors: no such file"):
        read_metadata(tmp_path / "nothere.safetensors")


def test_safetensors_without_anyseg_metadata(tmp_path):
    path = tmp_path / "plain.safetensors"
    safetensors.torch.save_file({"w": torch.zeros(2)}, str(path), {"format": "pt"})
    with pytest.raises(CheckpointError, match=r"plain\.safetensors: not an anyseg checkpoint "
                                              r"\(no 'anyseg' metadata"):
        read_metadata(path)
    with pytest.raises(CheckpointError, match="not an anyseg checkpoint"):
        load_state_dict(path)


def _rewrite_meta(src: Path, dst: Path, change):
    state, m = load_state_dict(src)
    change(m)
    safetensors.torch.save_file(state, str(dst), {"anyseg": json.dumps(m)})
    return dst


def test_metadata_missing_a_key_or_of_another_version(saved, tmp_path):
    path = _rewrite_meta(saved, tmp_path / "nomods.safetensors", lambda m: m.pop("modalities"))
    with pytest.raises(CheckpointError, match=r"checkpoint .*nomods\.safetensors: missing "
                                              r"metadata key 'modalities'"):
        read_metadata(path)
    with pytest.raises(CheckpointError, match="missing metadata key 'modalities'"):
        build_model(path)
    path = _rewrite_meta(saved, tmp_path / "v2.safetensors",
                         lambda m: m.update(format_version=2))
    with pytest.raises(CheckpointError, match="format_version 2 is newer"):
        read_metadata(path)
    path = _rewrite_meta(saved, tmp_path / "other.safetensors",
                         lambda m: m.update(format="something-else"))
    with pytest.raises(CheckpointError, match="'format' is 'something-else'"):
        read_metadata(path)
    path = _rewrite_meta(saved, tmp_path / "norm.safetensors",
                         lambda m: m["normalization"].pop("lidar"))
    with pytest.raises(CheckpointError, match="'normalization' needs 'lidar'"):
        read_metadata(path)


def test_model_and_training_files_are_not_confused(model, saved, tmp_path):
    train = save_training_state(tmp_path / "last.train.safetensors", model=model, step=1,
                                epoch=0)
    with pytest.raises(CheckpointError, match="is a training state .*not a model checkpoint"):
        build_model(train)
    with pytest.raises(CheckpointError, match="is a model checkpoint, not a training state"):
        load_training_state(saved, model)


# -------------------------------------------------------------------------------- no pickle

def test_a_torch_save_file_is_refused(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"w": torch.zeros(3)}, path)  # a pickle inside a zip
    with pytest.raises(CheckpointError, match=r"old\.pt: file is not a safetensors file: it "
                                              r"looks like a torch\.save / pickle file"):
        load_state_dict(path)
    legacy = tmp_path / "legacy.pt"
    torch.save({"w": torch.zeros(3)}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_training_state(legacy, nn.Linear(1, 1))


@pytest.mark.parametrize("module", [ckpt, tstate], ids=["checkpoint", "training_state"])
def test_the_module_never_unpickles(module):
    source = Path(module.__file__).read_text()
    tree = ast.parse(source)
    banned = {"pickle", "_pickle", "cPickle", "dill", "joblib", "marshal", "shelve"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert not {a.name.split(".")[0] for a in node.names} & banned
        elif isinstance(node, ast.ImportFrom):
            assert (node.module or "").split(".")[0] not in banned
        elif isinstance(node, ast.Name):
            assert node.id not in banned, node.id
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr == "load":
                # torch.load only with weights_only=True (it is not used at all); np.load never.
                base = ast.unparse(node.func.value)
                assert base != "np" and base != "numpy", ast.unparse(node)
                if base == "torch":
                    assert any(k.arg == "weights_only" and getattr(k.value, "value", None)
                               is True for k in node.keywords), ast.unparse(node)
    assert "torch.load(" not in source and "import pickle" not in source


# ----------------------------------------------------------------------------- exact resume

class Tiny(nn.Module):
    """Conv + BatchNorm + Dropout: parameters, buffers and RNG use in the forward pass."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                 nn.Dropout(0.3), nn.Conv2d(8, 4, 1))

    def forward(self, x):
        return self.net(x)


def _setup(seed):
    torch.manual_seed(seed)
    model = Tiny()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05, betas=(0.8, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 4) * 0.9 ** s)
    return model, opt, sched


def _train(model, opt, sched, steps, np_gen):
    model.train()
    for _ in range(steps):
        # Data from every RNG the loop uses: torch (data, dropout), random, numpy.
        x = torch.randn(4, 3, 8, 8)
        if random.random() < 0.5:
            x = x.flip(-1)
        x = x + torch.from_numpy(np.random.standard_normal(x.shape).astype(np.float32)) * 0.1
        target = torch.from_numpy(np_gen.integers(0, 4, (4, 8, 8)))
        loss = nn.functional.cross_entropy(model(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


def _seed_all(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def test_resume_is_bit_identical(tmp_path):
    _seed_all(0)
    model, opt, sched = _setup(0)
    gen = np.random.default_rng(1)
    _train(model, opt, sched, 6, gen)
    straight = [p.detach().clone() for p in model.state_dict().values()]
    straight_lr = sched.get_last_lr()

    _seed_all(0)
    model, opt, sched = _setup(0)
    gen = np.random.default_rng(1)
    _train(model, opt, sched, 3, gen)
    path = save_training_state(tmp_path / "last.train.safetensors", model=model, optimizer=opt,
                               scheduler=sched, step=3, epoch=0,
                               rng=capture_rng_state({"data": gen}),
                               extra={"best_miou": 0.25, "ema": model.net[0].weight * 2},
                               teacher_path="runs/teacher.safetensors",
                               config={"lr": 1e-2, "betas": (0.8, 0.95), "steps": 6})
    del model, opt, sched

    _seed_all(99)  # a different process state: everything must come from the file
    model, opt, sched = _setup(5)
    gen = np.random.default_rng(12345)
    info = load_training_state(path, model, opt, sched, generators={"data": gen})
    assert info["step"] == 3 and info["epoch"] == 0
    assert info["config"] == {"lr": 1e-2, "betas": (0.8, 0.95), "steps": 6}
    assert info["teacher_path"] == "runs/teacher.safetensors"
    assert info["extra"]["best_miou"] == 0.25
    assert torch.equal(info["extra"]["ema"], model.net[0].weight * 2)
    assert opt.param_groups[0]["betas"] == (0.8, 0.95)
    _train(model, opt, sched, 3, gen)
    resumed = list(model.state_dict().values())
    assert len(resumed) == len(straight)
    for a, b in zip(straight, resumed):
        assert torch.equal(a, b)
    assert sched.get_last_lr() == straight_lr


def test_training_state_layout(tmp_path):
    model, opt, sched = _setup(0)
    _train(model, opt, sched, 1, np.random.default_rng(0))
    path = save_training_state(tmp_path / "s.train.safetensors", model=model, optimizer=opt,
                               scheduler=sched, step=1, epoch=0, rng=None, extra=None,
                               teacher_path=None, config={"a": 1})
    tensors = safetensors.torch.load_file(str(path))
    assert "model/net.0.weight" in tensors and "model/net.1.running_mean" in tensors
    assert {"optim/state/0/exp_avg", "optim/state/0/exp_avg_sq", "optim/state/0/step",
            "rng/torch"} <= set(tensors)
    assert tensors["rng/torch"].dtype == torch.uint8
    header = read_training_header(path)
    assert header["format"] == "anyseg-training-state" and header["step"] == 1
    assert header["optimizer"]["type"] == "AdamW"
    assert header["optimizer"]["param_groups"][0]["betas"] == {"__tuple__": [0.8, 0.95]}
    assert header["scheduler"]["type"] == "LambdaLR"
    assert header["rng"]["torch"] == {"__tensor__": "rng/torch"}
    assert len(header["rng"]["python"]["internal"]) == 625


def test_wrong_optimizer_or_model_is_refused(tmp_path):
    model, opt, sched = _setup(0)
    path = save_training_state(tmp_path / "s.train.safetensors", model=model, optimizer=opt,
                               scheduler=sched, step=0, epoch=0)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(CheckpointError, match="optimizer state is for AdamW, the optimizer "
                                              "given is a SGD"):
        load_training_state(path, model, sgd)
    with pytest.raises(CheckpointError, match=r"s\.train\.safetensors does not fit the model"):
        load_training_state(path, nn.Sequential(nn.Linear(2, 2)))
    part = torch.optim.AdamW(list(model.parameters())[:2])
    with pytest.raises(CheckpointError, match="optimizer state does not fit"):
        load_training_state(path, model, part)
    # the same parameters in another order: torch would load the moments onto the wrong
    # parameters (it counts them only); the shapes give it away
    _train(model, opt, sched, 1, np.random.default_rng(0))
    path = save_training_state(tmp_path / "t.train.safetensors", model=model, optimizer=opt,
                               scheduler=sched, step=1, epoch=0)
    shuffled = torch.optim.AdamW(list(model.parameters())[::-1])
    with pytest.raises(CheckpointError, match=r"optimizer's exp_avg of parameter \S+ has "
                                              r"shape .*another order"):
        load_training_state(path, model, shuffled)


def test_structures_survive_json():
    packer = tstate._Packer("test")
    value = {"t": (1, 2.5, "a"), "ints": {0: "a", 7: (None, True)}, "c": Counter({3: 2}),
             "big": 2 ** 100, "nan": float("nan"), "x": torch.arange(3),
             "arr": np.arange(4, dtype=np.uint32), "marker": {"__tuple__": 1}}
    packed = json.loads(json.dumps(packer.pack(value, "v")))
    back = tstate._unpack(packed, packer.tensors, "test")
    assert back["t"] == (1, 2.5, "a") and back["ints"] == {0: "a", 7: (None, True)}
    assert isinstance(back["c"], Counter) and back["c"] == Counter({3: 2})
    assert back["big"] == 2 ** 100 and np.isnan(back["nan"])
    assert torch.equal(back["x"], torch.arange(3))
    assert back["arr"].dtype == np.uint32 and back["arr"].tolist() == [0, 1, 2, 3]
    assert back["marker"] == {"__tuple__": 1}
    with pytest.raises(CheckpointError, match="cannot store v/f .*function"):
        packer.pack({"f": lambda: 0}, "v")


def test_multistep_scheduler_round_trips(tmp_path):
    model, opt, _ = _setup(0)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[2, 4], gamma=0.5)
    for _ in range(3):
        opt.step()
        sched.step()
    path = save_training_state(tmp_path / "m.train.safetensors", model=model, optimizer=opt,
                               scheduler=sched, step=3, epoch=0)
    model2, opt2, _ = _setup(0)
    sched2 = torch.optim.lr_scheduler.MultiStepLR(opt2, milestones=[2, 4], gamma=0.5)
    load_training_state(path, model2, opt2, sched2)
    assert sched2.milestones == sched.milestones and isinstance(sched2.milestones, Counter)
    for _ in range(2):
        opt.step(); sched.step(); opt2.step(); sched2.step()  # noqa: E702
    assert sched2.get_last_lr() == sched.get_last_lr()


def test_rng_capture_and_restore():
    torch_gen = torch.Generator().manual_seed(3)
    np_gen = np.random.default_rng(4)
    gens = {"t": torch_gen, "n": np_gen}
    state = capture_rng_state(gens)

    def draw():
        return (random.random(), np.random.rand(), torch.rand(1).item(),
                torch.rand(1, generator=torch_gen).item(), np_gen.random())

    first = draw()
    restore_rng_state(state, gens)
    assert draw() == first
    with pytest.raises(CheckpointError, match="no generator 'other'"):
        restore_rng_state(state, {"other": np_gen})


def test_resume_of_the_segmentor_is_bit_identical(tmp_path):
    """The real model: drop path, dropout, BatchNorm and random modality dropout."""

    def setup():
        torch.manual_seed(0)
        model = AnymodalSegmentor(MODS, 5, embed_dim=16,
                                  backbone_kwargs={"drop_path_rate": 0.1}).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
        return model, opt, sched

    def train(model, opt, sched, steps):
        for _ in range(steps):
            x = {m: torch.randn(2, 3, 32, 32) for m in MODS}
            present = torch.rand(2, 2) < 0.7
            present[:, 0] |= ~present.any(1)
            target = torch.randint(0, 5, (2, 32, 32))
            loss = nn.functional.cross_entropy(model(x, present).logits, target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()

    model, opt, sched = setup()
    train(model, opt, sched, 4)
    straight = {k: v.clone() for k, v in model.state_dict().items()}

    model, opt, sched = setup()
    train(model, opt, sched, 2)
    path = save_training_state(tmp_path / "last.train.safetensors", model=model, optimizer=opt,
                               scheduler=sched, step=2, epoch=0, config={})
    torch.manual_seed(1)
    model, opt, sched = setup()
    torch.manual_seed(2)
    load_training_state(path, model, opt, sched)
    train(model, opt, sched, 2)
    for k, v in model.state_dict().items():
        assert torch.equal(v, straight[k]), k
