"""Training: config handling, dropout masks, schedule, overfitting, exact resume, DDP."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from anyseg_core.config import ConfigError, load_config, parse_override
from anyseg_core.data.synthetic import SyntheticDataset, collate
from anyseg_core.losses import AnySegLoss
from anyseg_core.model import AnymodalSegmentor
from anyseg_core.train import bf16_autocast, lr_lambda, param_groups, sample_present, train

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY = REPO_ROOT / "config" / "train_tiny.yaml"

MODS = ("camera", "events", "lidar")


# ----------------------------------------------------------------------------- config


def test_config_layers_defaults_file_and_overrides(tmp_path):
    cfg = load_config(TINY, ["optim.lr=1e-4", "data.modalities=[camera, lidar]",
                             "loss.beta_cmd=0"])
    assert cfg["optim"]["lr"] == pytest.approx(1e-4) and isinstance(cfg["optim"]["lr"], float)
    assert cfg["data"]["modalities"] == ["camera", "lidar"]
    assert cfg["data"]["size"] == [64, 96]          # from the file
    assert cfg["optim"]["betas"] == [0.9, 0.999]    # from the defaults
    assert parse_override("a.b.c=3") == {"a": {"b": {"c": 3}}}


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=1", "unknown config key 'optim.lrr'"),
    ("optim.lr=fast", "must be a number"),
    ("data.size=[100, 96]", "divisible by 32"),
    ("data.modalities=[camera, radar]", "radar"),
    ("stage=student", "teacher.checkpoint"),
    ("dropout.policy=sometimes", "dropout.policy"),
    ("dropout.all_prob=1.5", "dropout.all_prob must be a probability"),
    ("dropout.all_prob=often", "'dropout.all_prob' must be a number"),
    ("dropout.all_prob=0.5", "dropout.all_prob needs dropout.policy per_sample"),
    ("data.event_anchor=exposure", "data.event_anchor must be last"),
    ("nonsense", "key.sub=value"),
    ("optim.lr=null", "'optim.lr' cannot be null"),
    ("optim.lr=.inf", "'optim.lr' must be a finite number"),
    ("seed=1.5", "'seed' must be a whole number"),
    ("model.pretrained=maybe", "'model.pretrained' must be true or false"),
    ("teacher.checkpoint.path=a.safetensors", "'teacher.checkpoint' must be text"),
    ("data.conditions=fog", "'data.conditions' must be a list"),
    ("data.modalities=camera", "'data.modalities' must be a list"),
    ("optim.lrr=1", "did you mean 'optim.lr'"),
    ("optim.grad_clip=-1", "optim.grad_clip must be > 0 or null"),
    ("optim.weight_decay=-1", "optim.weight_decay must be >= 0"),
    ("optim.warmup_ratio=5", "optim.warmup_ratio"),
    ("optim.poly_power=-1", "optim.poly_power must be > 0"),
    ("optim.betas=[2, 3]", "optim.betas must be two numbers"),
    ("model.backbone=resnet9000", "not a timm model name"),
    ("model.fusion=max", "model.fusion must be mean or primary"),
    ("model.embed_dim=0", "model.embed_dim must be a whole number >= 1"),
    ("model.drop_path_rate=1.5", "model.drop_path_rate"),
    ("augment.scale=[2.0, 0.5]", "augment.scale"),
    ("augment.blur_p=2", "augment.blur_p must be a probability"),
    ("loss.tau=0", "loss.tau"),
    ("loss.lambda_mad=-1", "loss.lambda_mad must be >= 0"),
    ("loss.ohem_thresh=1.5", "loss.ohem_thresh"),
    ("loss.kl_reduction=batchmean", "loss.kl_reduction must be mean"),
    ("loss.mad_pixels=confident", "loss.mad_pixels must be all or teacher_correct"),
    ("model.pretrained_file=w.pth", "model.pretrained_file is read only with model.pretrained"),
    ("dropout.policy=per_sample", "dropout.policy applies to the student stage only"),
    ("data.dataset=muses", "data.root must name the muses folder"),
])
def test_bad_configs_name_the_problem(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TINY, [override])


def test_importing_the_config_does_not_import_timm():
    """The config takes the fusion names from the model (segmentor.FUSIONS), whose package
    imports timm only to build a backbone: a config is read without it (validate imports timm
    itself, for the backbone's name)."""
    code = "import sys, anyseg_core.config; assert 'timm' not in sys.modules, 'timm imported'"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_values_yaml_reads_otherwise_are_taken_as_meant():
    """YAML reads `off` as false and `5e-1` (no dot) as text: both reach the config as the
    user meant them."""
    cfg = load_config(TINY, ["train.amp=off", "stage=student", "loss.lambda_mad=0",
                             "loss.alpha_umd=0", "loss.beta_cmd=0", "dropout.policy=per_sample",
                             "dropout.all_prob=5e-1", "optim.betas=[0.9, 999e-3]",
                             "optim.grad_clip=1e0"])
    assert cfg["train"]["amp"] == "off"
    assert cfg["dropout"]["all_prob"] == 0.5 and cfg["optim"]["grad_clip"] == 1.0
    assert cfg["optim"]["betas"] == [0.9, 0.999]


def test_a_bad_config_file_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  steps: 10\n  typo: 1\n")
    with pytest.raises(ConfigError, match="bad.yaml.*optim.typo"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    twice = tmp_path / "twice.yaml"  # a second section must not replace the first silently
    twice.write_text("optim:\n  steps: 10\ntrain:\n  log_every: 1\noptim:\n  lr: 0.001\n")
    with pytest.raises(ConfigError, match="twice.yaml.*'optim' appears twice"):
        load_config(twice)


def test_every_shipped_training_config_loads():
    for path in sorted((REPO_ROOT / "config").glob("train_*.yaml")):
        overrides = ["teacher.checkpoint=t.safetensors"] if "student" in path.name else []
        if "muses" in path.name or "deliver" in path.name:
            overrides.append("data.root=/data/set")
        cfg = load_config(path, overrides)
        assert cfg["data"]["size"][0] % 32 == 0, path.name


# ----------------------------------------------------------------------------- pieces


def test_anymodal_dropout_masks():
    g = torch.Generator().manual_seed(0)
    masks = sample_present("per_sample", 7000, 3, g)
    assert masks.any(1).all()
    codes = (masks.long() * torch.tensor([1, 2, 4])).sum(1)
    counts = torch.bincount(codes, minlength=8)[1:]
    assert counts.min() > 850 and counts.max() < 1150  # uniform over the 7 subsets
    batch = sample_present("per_batch", 16, 3, g)
    assert (batch == batch[0]).all() and batch[0].any()
    assert sample_present("none", 4, 3, g).all()


def test_dropout_that_keeps_every_modality_more_often():
    """dropout.all_prob: that share of samples keeps every modality, the rest is uniform over
    the other six subsets; the default draw is unchanged."""
    g = torch.Generator().manual_seed(0)
    masks = sample_present("per_sample", 12000, 3, g, all_prob=0.5)
    counts = torch.bincount((masks.long() * torch.tensor([1, 2, 4])).sum(1), minlength=8)
    assert counts[0] == 0 and 5700 < counts[7] < 6300
    assert counts[1:7].min() > 850 and counts[1:7].max() < 1150  # 1000 each
    assert sample_present("per_sample", 50, 3, g, all_prob=1.0).all()
    assert not sample_present("per_sample", 500, 3, g, all_prob=0.0).all(1).any()
    a, b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(sample_present("per_sample", 64, 3, a),
                       sample_present("per_sample", 64, 3, b, all_prob=None))


def test_warmup_then_polynomial_decay():
    f = lr_lambda({"steps": 100, "warmup_steps": 10, "warmup_ratio": 0.1, "poly_power": 0.9})
    assert f(0) == pytest.approx(0.1)
    assert f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.5 ** 0.9)
    assert f(100) == pytest.approx(0.0)
    assert all(f(s) >= f(s + 1) for s in range(10, 100))


def test_no_weight_decay_on_norms_and_biases():
    net = AnymodalSegmentor(MODS, 19, embed_dim=16)
    decay, no_decay = param_groups(net, 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"])
    norm_weights = [p for n, p in net.named_parameters() if "norm" in n and n.endswith("weight")]
    assert norm_weights and all(any(p is q for q in no_decay["params"]) for p in norm_weights)


# ----------------------------------------------------------------------------- overfitting


@pytest.fixture(scope="module")
def fixed_batch():
    ds = SyntheticDataset(2, split="train", seed=5, size_hw=(64, 96), modalities=MODS,
                          conditions=["clear-day"])
    return collate([ds[0], ds[1]])


def _overfit(model, loss_fn, batch, steps, teacher=None, policy="none", seed=0):
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    history = []
    model.train()
    for _ in range(steps):
        present = sample_present(policy, 2, 3, g)
        out = model(batch["inputs"], present)
        t_out = None
        if teacher is not None:
            with torch.no_grad():
                t_out = teacher(batch["inputs"])
        losses = loss_fn(out, t_out, batch["label"], present)
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
        history.append({k: float(v.detach()) for k, v in losses.items()})
    return history


def _accuracy(model, batch, subset):
    model.eval()
    with torch.no_grad():
        pred = model({m: batch["inputs"][m] for m in subset}).logits.argmax(1)
    valid = batch["label"] != 255
    return float((pred == batch["label"])[valid].float().mean())


def test_tiny_teacher_and_student_overfit_a_fixed_batch(fixed_batch):
    torch.manual_seed(0)
    teacher = AnymodalSegmentor(MODS, 19, embed_dim=32, head_dropout=0.0,
                                backbone_kwargs={"drop_path_rate": 0.0})
    hist = _overfit(teacher, AnySegLoss(0, 0, 0), fixed_batch, 60)
    assert hist[-1]["sup"] < 0.3 * hist[0]["sup"]
    assert _accuracy(teacher, fixed_batch, MODS) > 0.9
    teacher.eval().requires_grad_(False)

    torch.manual_seed(1)
    student = AnymodalSegmentor(MODS, 19, embed_dim=32, head_dropout=0.0,
                                backbone_kwargs={"drop_path_rate": 0.0})
    hist = _overfit(student, AnySegLoss(), fixed_batch, 100, teacher=teacher,
                    policy="per_sample")
    first, last = hist[0], hist[-1]
    assert last["loss"] < 0.3 * first["loss"]
    for key in ("sup", "mad", "umd"):
        assert last[key] < first[key], key
    for subset in (("camera",), ("lidar",), MODS):
        assert _accuracy(student, fixed_batch, subset) > 0.8, subset


# ----------------------------------------------------------------------------- the command


def _weights(path: Path) -> dict:
    return load_file(str(path))


def test_resume_continues_exactly(tmp_path, tiny_config):
    common = ["optim.steps=4", "train.checkpoint_every=2", "train.eval_samples=1",
              "stage=teacher"]
    straight = train(tiny_config(tmp_path / "a", *common))
    # The same run stopped after 2 of its 4 steps (--stop-after: the schedule is that of the
    # whole run), then resumed.
    cfg = tiny_config(tmp_path / "b", *common)
    assert train(cfg, stop_after=2) is None
    assert (tmp_path / "b" / "last.train.safetensors").exists()
    assert not (tmp_path / "b" / "final.safetensors").exists()
    # A run that crashed after logging step 3 but before saving it, mid-line.
    metrics = tmp_path / "b" / "metrics.jsonl"
    with open(metrics, "a") as f:
        f.write('{"step": 3, "loss": 123.0}\n{"step": 4, "lo')
    resumed = train(cfg, resume=True)
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # The log reads like that of the uninterrupted run: each step once, nothing of the crash.
    steps = lambda p: [json.loads(x)["step"] for x in p.read_text().splitlines()  # noqa: E731
                       if '"loss"' in x]
    assert steps(metrics) == steps(tmp_path / "a" / "metrics.jsonl") == [1, 2, 3, 4]
    assert "123.0" not in metrics.read_text()


def test_the_same_weights_with_or_without_dataloader_workers(tmp_path, tiny_config):
    """Workers prepare samples with one thread, the main process with several: the weights of a
    run must not depend on data.num_workers."""
    common = ["optim.steps=3", "train.eval_samples=0", "stage=teacher",
              "augment.color_jitter_p=1.0", "augment.blur_p=1.0", "augment.scale=[0.5,2.0]"]
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the main process prepares samples with more than one thread
    try:
        runs = [_weights(train(tiny_config(tmp_path / f"w{n}", f"data.num_workers={n}",
                                           *common))) for n in (0, 2)]
    finally:
        torch.set_num_threads(threads)
    assert runs[0].keys() == runs[1].keys()
    for k in runs[0]:
        assert torch.equal(runs[0][k], runs[1][k]), k


def test_a_fresh_run_starts_a_fresh_metrics_log(tmp_path, tiny_config):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 7, "loss": 9.0}\n')
    train(tiny_config(out, "optim.steps=2", "train.eval_samples=0", "stage=teacher"))
    log = (out / "metrics.jsonl").read_text()
    assert '"step": 7' not in log and '"step": 2' in log


def test_resume_refuses_other_training_settings(tmp_path, tiny_config):
    common = ["optim.steps=4", "train.eval_samples=0", "stage=teacher"]
    cfg = tiny_config(tmp_path, *common)
    assert train(cfg, stop_after=2) is None
    with pytest.raises(ConfigError, match=r"optim.lr was 0.001, now 0.5; seed was 3407, now 1"):
        train(tiny_config(tmp_path, *common, "seed=1", "optim.lr=0.5"), resume=True)
    assert "seed: 3407" in (tmp_path / "config.yaml").read_text()  # the record is untouched
    # Where things are and how much is logged may change; the run then goes on.
    assert train(tiny_config(tmp_path, *common, "train.log_every=2", "data.num_workers=1"),
                 resume=True).name == "final.safetensors"


def test_resume_refuses_another_teacher_but_not_a_moved_one(tmp_path, tiny_config,
                                                             tiny_teacher):
    import shutil

    from anyseg_core.checkpoint import build_model, read_metadata, save_model
    moved, other = tmp_path / "moved.safetensors", tmp_path / "other.safetensors"
    shutil.copy(tiny_teacher, moved)
    model, _ = build_model(tiny_teacher)
    with torch.no_grad():
        next(model.parameters()).add_(0.1)
    save_model(other, model, read_metadata(tiny_teacher))
    run = tmp_path / "run"
    common = ["stage=student", "dropout.policy=per_sample", "optim.steps=2",
              "train.eval_samples=0"]
    assert train(tiny_config(run, *common, f"teacher.checkpoint={tiny_teacher}"),
                 stop_after=1) is None
    with pytest.raises(ConfigError, match=r"teacher.checkpoint \(its contents\)"):
        train(tiny_config(run, *common, f"teacher.checkpoint={other}"), resume=True)
    assert train(tiny_config(run, *common, f"teacher.checkpoint={moved}"), resume=True)


def test_train_command_errors_are_one_line(tmp_path, capsys):
    from anyseg_core.train import main
    # Checkable only once training starts: no CUDA on this machine (where there is, this
    # value is valid and the check is left out).
    if not torch.cuda.is_available():
        code = main(["--config", str(TINY), "--set", f"out_dir={tmp_path}",
                     "--set", "train.device=cuda"])
        err = capsys.readouterr().err
        assert code == 1 and err.startswith("error: train.device") and "Traceback" not in err
    with pytest.raises(SystemExit):  # a bad value is refused before anything runs
        main(["--config", str(TINY), "--set", "train.log_every=0"])
    assert "train.log_every must be a whole number >= 1" in capsys.readouterr().err
    code = main(["--config", str(TINY), "--set", f"out_dir={tmp_path / 'muses'}",
                 "--set", "data.dataset=muses", "--set", f"data.root={tmp_path / 'no_muses'}"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ") and "no_muses" in err
    assert "Traceback" not in err


def test_a_student_without_a_dropout_policy_is_an_error():
    """A student config that forgets dropout.policy (default none) would train a student that
    never sees a missing modality: refused, naming the key."""
    with pytest.raises(ConfigError, match="stage student needs dropout.policy per_sample"):
        load_config(TINY, ["stage=student", "teacher.checkpoint=t.safetensors"])
    cfg = load_config(TINY, ["stage=student", "teacher.checkpoint=t.safetensors",
                             "dropout.policy=per_batch"])
    assert cfg["model"]["init"] == "backbone"  # the authors' start: the backbone's own


def test_the_data_is_checked_before_pretrained_weights_are_fetched(tmp_path, capsys):
    """The user's first try offline: a MUSES config with pretrained weights and an empty
    data.root gives one line about the data at once (no download retries first)."""
    from anyseg_core.train import main
    empty = tmp_path / "empty"
    empty.mkdir()
    code = main(["--config", str(REPO_ROOT / "config" / "train_muses_teacher.yaml"),
                 "--set", f"data.root={empty}", "--set", f"out_dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ") and str(empty) in err
    assert "Traceback" not in err and "huggingface" not in err.lower()


def test_pretrained_weights_that_cannot_be_fetched_say_what_to_do(tmp_path, monkeypatch,
                                                                  capsys):
    """model.pretrained=true with the weights neither cached nor downloadable (HF_HUB_OFFLINE,
    an empty cache: what this offline machine is): one line naming the two ways out."""
    from huggingface_hub import constants

    from anyseg_core.train import main
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    code = main(["--config", str(TINY), "--set", f"out_dir={tmp_path / 'run'}",
                 "--set", "model.pretrained=true"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert "ImageNet weights of pvt_v2_b0" in err
    assert "model.pretrained_file=PATH" in err and "model.pretrained=false" in err
    code = main(["--config", str(TINY), "--set", f"out_dir={tmp_path / 'run'}",
                 "--set", "model.pretrained=true",
                 "--set", f"model.pretrained_file={tmp_path / 'none.pth'}"])
    assert code == 1 and "none.pth does not exist" in capsys.readouterr().err


def test_pretrained_file_loads_the_backbone_weights(tmp_path):
    """model.pretrained_file: the student starts from those weights (timm's own loader, as
    for downloaded ones), not from a random initialisation."""
    import timm
    from safetensors.torch import save_file

    from anyseg_core.train import build_trained_model
    src = timm.create_model("pvt_v2_b0", pretrained=False)
    with torch.no_grad():
        src.patch_embed.proj.weight.fill_(0.25)
    path = tmp_path / "pvt_v2_b0.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    cfg = load_config(TINY, ["model.pretrained=true", f"model.pretrained_file={path}"])
    model = build_trained_model(cfg, 5)
    assert torch.all(model.encoder.patch_embed.proj.weight == 0.25)
    scratch = build_trained_model(load_config(TINY, []), 5)
    assert not torch.all(scratch.encoder.patch_embed.proj.weight == 0.25)
    # A file of another model is a one-line ConfigError, not a traceback from timm.
    save_file({"nothing": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    cfg = load_config(TINY, ["model.pretrained=true",
                             f"model.pretrained_file={tmp_path / 'other.safetensors'}"])
    with pytest.raises(ConfigError, match="does not hold the timm weights of pvt_v2_b0.*"
                                          "model.pretrained=false"):
        build_trained_model(cfg, 5)
    # A torch file (read with weights_only) in a training checkpoint's nesting works too.
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}},
               tmp_path / "ckpt.pth")
    cfg = load_config(TINY, ["model.pretrained=true",
                             f"model.pretrained_file={tmp_path / 'ckpt.pth'}"])
    assert torch.all(build_trained_model(cfg, 5).encoder.patch_embed.proj.weight == 0.25)


def test_training_precision(monkeypatch):
    import anyseg_core.train as train_module
    cpu = torch.device("cpu")
    assert not bf16_autocast("auto", cpu) and not bf16_autocast("off", cpu)
    monkeypatch.setattr(train_module, "cpu_has_bf16", lambda: False)
    with pytest.raises(ConfigError, match="train.amp=bf16 needs a CUDA device or a CPU with"):
        bf16_autocast("bf16", cpu)  # asked for and not possible: said, not ignored
    monkeypatch.setattr(train_module, "cpu_has_bf16", lambda: True)
    assert bf16_autocast("bf16", cpu) and not bf16_autocast("auto", cpu)
    if torch.cuda.is_available():  # the GPU sessions' check of the capability rule
        gpu = torch.device("cuda", torch.cuda.current_device())
        native = torch.cuda.get_device_capability(gpu) >= (8, 0)
        assert bf16_autocast("auto", gpu) == native
        assert bf16_autocast("bf16", gpu) and not bf16_autocast("off", gpu)


def test_a_bf16_request_on_the_cpu(tmp_path, capsys, monkeypatch):
    """train.amp=bf16 on a CPU: trained under bf16 autocast where the CPU has native bf16,
    refused with one line (before anything is written) where it has not."""
    import anyseg_core.train as train_module
    from anyseg_core.train import main
    args = ["--config", str(TINY), "--set", "train.amp=bf16", "--set", "train.device=cpu",
            "--set", "optim.steps=2", "--set", "train.eval_samples=0"]
    if train_module.cpu_has_bf16():
        assert main([*args, "--set", f"out_dir={tmp_path / 'bf16'}"]) == 0
        out = capsys.readouterr().out
        assert "precision: bf16 autocast on cpu" in out and "step 2/2" in out
    monkeypatch.setattr(train_module, "cpu_has_bf16", lambda: False)
    code = main([*args, "--set", f"out_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: train.amp=bf16") and "Traceback" not in err
    assert not (tmp_path / "config.yaml").exists()


def test_resume_without_a_saved_state_says_so(tmp_path, tiny_config):
    with pytest.raises(FileNotFoundError, match="last.train.safetensors"):
        train(tiny_config(tmp_path), resume=True)


@pytest.mark.parametrize("stage", ["teacher", "student"])
def test_init_from_the_teacher_starts_either_stage_from_its_weights(tmp_path, tiny_config,
                                                                     tiny_teacher, stage):
    # One step at a learning rate too small to move a float32 weight: the run ends where it
    # started, so its parameters are the teacher's (the head's norm statistics move anyway).
    common = [f"stage={stage}", f"teacher.checkpoint={tiny_teacher}", "optim.steps=1",
              "optim.lr=1e-30", "train.eval_samples=0",
              f"dropout.policy={'per_sample' if stage == 'student' else 'none'}"]
    start = _weights(train(tiny_config(tmp_path / "init", "model.init=teacher", *common)))
    fresh = _weights(train(tiny_config(tmp_path / "fresh", *common)))
    teacher = _weights(tiny_teacher)
    weights = [k for k in teacher if "running_" not in k and "num_batches" not in k]
    assert weights and all(torch.equal(start[k], teacher[k]) for k in weights)
    assert not all(torch.equal(fresh[k], teacher[k]) for k in weights)


def test_init_from_the_teacher_needs_a_fitting_checkpoint(tmp_path, tiny_config, tiny_teacher):
    with pytest.raises(ConfigError, match="model.init=teacher needs teacher.checkpoint"):
        tiny_config(tmp_path, "model.init=teacher")
    cfg = tiny_config(tmp_path, "model.init=teacher", f"teacher.checkpoint={tiny_teacher}",
                      "model.embed_dim=48")
    with pytest.raises(ConfigError, match="does not fit the model of this config"):
        train(cfg)


def test_student_stage_command_line(tmp_path, tiny_teacher):
    out = tmp_path / "student"
    proc = subprocess.run(
        [sys.executable, "-m", "anyseg_core.train", "--config", str(TINY),
         "--set", f"out_dir={out}", "--set", "stage=student",
         "--set", f"teacher.checkpoint={tiny_teacher}", "--set", "dropout.policy=per_sample",
         "--set", "optim.steps=2", "--set", "train.eval_samples=1"],
        capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "step 2/2" in proc.stdout and "validation" in proc.stdout
    assert (out / "final.safetensors").exists() and (out / "config.yaml").exists()
    bad = subprocess.run([sys.executable, "-m", "anyseg_core.train", "--config", str(TINY),
                          "--set", "optim.nope=1"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "optim.nope" in bad.stderr


def _torchrun(out: Path, *args: str) -> None:
    """anyseg_core.train under torchrun with 2 CPU processes (gloo) on the tiny config."""
    with socket.socket() as sock:  # a free port on loopback for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
         "--master_addr=127.0.0.1", f"--master_port={port}", "-m", "anyseg_core.train",
         "--config", str(TINY), "--set", f"out_dir={out}", "--set", "optim.steps=3",
         "--set", "optim.batch_size=4", "--set", "train.checkpoint_every=3", *args],
        capture_output=True, text=True, timeout=300, cwd=REPO_ROOT, env=env)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])


def test_two_process_ddp_on_cpu(tmp_path):
    """torchrun with 2 CPU processes (gloo): both ranks step together, rank 0 writes, and a
    run stopped and resumed ends with the very weights of an uninterrupted one (every rank's
    dropout masks included, not only rank 0's)."""
    out = tmp_path / "ddp"
    _torchrun(out, "--set", "train.eval_samples=1")
    assert (out / "final.safetensors").exists()
    steps = [line for line in (out / "metrics.jsonl").read_text().splitlines()
             if '"loss"' in line]
    assert len(steps) == 3  # written once (rank 0), not once per process
    resumed = tmp_path / "ddp_resumed"
    _torchrun(resumed, "--set", "train.eval_samples=0", "--stop-after", "1")
    assert not (resumed / "final.safetensors").exists()
    _torchrun(resumed, "--set", "train.eval_samples=0", "--resume")
    a, b = _weights(out / "final.safetensors"), _weights(resumed / "final.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_the_dataset_registry_decides_for_config_and_data():
    """One table of data sets: the config's checks, the classes, the normalisation and the
    augmentation's rescaling all come from it, not from comparisons of names."""
    from anyseg_core.data import DATASETS, class_info, normalization_info, rescale_info
    from anyseg_core.data.registry import dataset_spec
    assert list(DATASETS) == ["synthetic", "muses", "deliver"]
    assert [DATASETS[n].needs_root for n in DATASETS] == [False, True, True]
    assert [DATASETS[n].cacheable for n in DATASETS] == [True, False, False]
    deliver = {"data": {"dataset": "deliver"}}
    assert len(class_info(deliver)[0]) == 25 and len(class_info({"data": {}})[0]) == 19
    assert normalization_info(deliver) != normalization_info({"data": {"dataset": "muses"}})
    assert rescale_info(deliver) != rescale_info({"data": {"dataset": "synthetic"}})
    with pytest.raises(ValueError, match="unknown dataset 'kitti'; expected one of"):
        dataset_spec("kitti")
    with pytest.raises(ConfigError, match="data.dataset must be one of synthetic, muses, "
                                          "deliver, got 'kitti'"):
        load_config(TINY, ["data.dataset=kitti"])
    with pytest.raises(ConfigError, match="data.cache holds the synthetic world only"):
        load_config(TINY, ["data.dataset=muses", "data.root=/data", "data.cache=/c"])


def test_a_run_saved_before_the_kl_scale_setting_does_not_resume_at_another_scale():
    """A training state saved before loss.kl_reduction existed distilled with the KL summed
    over the classes: resuming it at the new default (mean) is a changed setting, refused;
    resuming with kl_reduction=sum is the same run."""
    from anyseg_core.train import changed_settings
    saved = load_config(TINY, [])
    del saved["loss"]["kl_reduction"], saved["loss"]["mad_pixels"]
    changed = changed_settings(saved, load_config(TINY, []))
    assert changed == [("loss.kl_reduction", "sum", "mean")]
    assert changed_settings(saved, load_config(TINY, ["loss.kl_reduction=sum"])) == []
