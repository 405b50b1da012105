"""Training configuration: defaults, YAML files and ``--set key=value`` overrides.

Every choice of a run lives here (data, model, losses and their weights, the dropout policy,
optimiser, schedule, augmentation), so that a run is described by one YAML file plus the
overrides written on its command line, and the full resolved config is stored in every
checkpoint. Unknown keys are errors: a typo must not silently fall back to a default.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

DEFAULTS: dict[str, Any] = {
    "stage": "teacher",          # teacher (PML, all modalities) | student (anymodal dropout)
    "seed": 3407,
    "out_dir": "runs/anyseg",
    "data": {
        "dataset": "synthetic",  # synthetic | muses | deliver
        "root": None,            # dataset folder (muses, deliver)
        "modalities": ["camera", "events", "lidar"],
        "size": [288, 512],      # network input H, W (divisible by 32)
        "train_samples": 2000,   # synthetic: scenes in the training split
        "val_samples": 100,
        "seed": 0,               # synthetic: which world
        "conditions": None,      # synthetic: list of condition names, or null = MUSES-like mix
        "num_workers": 2,
        "cache": None,           # synthetic: folder of rendered items (anyseg_core/data/cache.py)
        "event_anchor": "last",  # muses: events end at the file's last (SDK) or at the camera
    },
    "model": {
        "backbone": "pvt_v2_b0",
        "embed_dim": 256,
        "pretrained": False,     # timm weights (needs the internet)
        "fusion": "mean",        # mean (AnySeg, PML) | primary (CMNeXt-like baseline)
        "drop_path_rate": 0.1,
        "init": "backbone",      # backbone (own init) | teacher (teacher.checkpoint's weights)
    },
    "teacher": {"checkpoint": None},  # student stage: the frozen PML teacher
    "dropout": {
        "policy": "none",        # none | per_sample | per_batch (the reference code's)
        "all_prob": None,        # P(every modality kept); null: uniform over all subsets
    },
    "loss": {
        "lambda_mad": 50.0, "alpha_umd": 5.0, "beta_cmd": 10.0, "gamma_fkd": 0.0,
        "tau": 1.0, "tau_cmd": 1.0, "ohem_thresh": None,
    },
    "optim": {
        "lr": 1.2e-4,
        "weight_decay": 0.01,    # none on norms and biases
        "betas": [0.9, 0.999],
        "batch_size": 8,         # total over all processes
        "steps": 2000,
        "warmup_steps": 200,
        "warmup_ratio": 0.1,     # lr factor at the start of the warm-up
        "poly_power": 0.9,
        "grad_clip": None,
    },
    "augment": {
        "scale": [0.5, 2.0],     # random resized crop, all modalities and the label
        "flip": True,
        "blur_p": 0.2,           # Gaussian blur, camera only (never smear sparse sensors)
        "color_jitter_p": 0.2,   # camera only
    },
    "train": {
        "device": "auto",        # auto | cpu | cuda | cuda:N
        "amp": "auto",           # auto (bf16 on CUDA from Ampere on) | bf16 (CUDA) | off
        "log_every": 10,
        "checkpoint_every": 200,
        "eval_every": 0,         # 0 = only at the end
        "eval_samples": 50,
    },
}


class ConfigError(ValueError):
    pass


def _merge(base: dict, update: Mapping, path: str = "") -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        where = f"{path}{key}"
        if key not in base:
            raise ConfigError(f"unknown config key {where!r}; known keys here: "
                              f"{sorted(base)}")
        if isinstance(base[key], dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"config key {where!r} must be a mapping, got {value!r}")
            out[key] = _merge(base[key], value, where + ".")
        else:
            out[key] = _coerce(base[key], value, where)
    return out


def _coerce(default: Any, value: Any, where: str) -> Any:
    """Numbers stay numbers: YAML reads ``1e-4`` (no dot) as a string, which must not reach
    the optimiser as one. Other types are taken as given (None defaults accept anything)."""
    if isinstance(default, bool) or default is None or value is None:
        return copy.deepcopy(value)
    if isinstance(default, (int, float)):
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"config key {where!r} must be a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {where!r} must be a number, got {value!r}")
        if isinstance(default, int) and float(value).is_integer():
            return int(value)
        return float(value) if isinstance(default, float) else value
    return copy.deepcopy(value)


def parse_override(text: str) -> dict:
    """``a.b.c=value`` -> {"a": {"b": {"c": value}}}, the value parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: cannot parse {raw!r} ({err})") from None
    out: dict = {}
    node = out
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def load_config(path: str | Path | None = None, overrides: Iterable[str] = (),
                base: Mapping | None = None) -> dict:
    """DEFAULTS <- the YAML file at ``path`` <- each ``key=value`` override, validated."""
    cfg = copy.deepcopy(dict(base or DEFAULTS))
    if path is not None:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
        if not isinstance(data, Mapping):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        try:
            cfg = _merge(cfg, data)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
    for text in overrides:
        cfg = _merge(cfg, parse_override(text))
    validate(cfg)
    return cfg


def validate(cfg: Mapping) -> None:
    """Checks that need more than the key names; messages name the key."""
    from .modalities import check_modalities

    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ConfigError(msg)

    need(cfg["stage"] in ("teacher", "student"), f"stage must be teacher or student, "
                                                 f"got {cfg['stage']!r}")
    try:
        check_modalities(cfg["data"]["modalities"])
    except ValueError as err:
        raise ConfigError(f"data.modalities: {err}") from None
    size = cfg["data"]["size"]
    need(isinstance(size, (list, tuple)) and len(size) == 2 and all(
        isinstance(v, int) and v > 0 and v % 32 == 0 for v in size),
        f"data.size must be [H, W] with both divisible by 32, got {size!r}")
    need(cfg["data"]["event_anchor"] in ("last", "camera"),
         f"data.event_anchor must be last (the MUSES SDK's window) or camera, got "
         f"{cfg['data']['event_anchor']!r}")
    need(cfg["data"]["dataset"] in ("synthetic", "muses", "deliver"),
         f"data.dataset must be synthetic, muses or deliver, got {cfg['data']['dataset']!r}")
    cache = cfg["data"]["cache"]
    need(cache is None or (isinstance(cache, str) and cache.strip() != ""),
         f"data.cache must be a folder path or null, got {cache!r}")
    need(cache is None or cfg["data"]["dataset"] == "synthetic",
         "data.cache holds the synthetic world only (a real data set is read from its files); "
         "drop data.cache or use data.dataset=synthetic")
    need(cfg["dropout"]["policy"] in ("none", "per_sample", "per_batch"),
         f"dropout.policy must be none, per_sample or per_batch, "
         f"got {cfg['dropout']['policy']!r}")
    all_prob = cfg["dropout"]["all_prob"]
    need(all_prob is None or (isinstance(all_prob, (int, float)) and not isinstance(all_prob, bool)
                              and 0 <= all_prob <= 1),
         f"dropout.all_prob must be a probability (0 to 1) or null, got {all_prob!r}")
    need(all_prob is None or cfg["dropout"]["policy"] != "none",
         "dropout.all_prob needs dropout.policy per_sample or per_batch")
    need(cfg["model"]["init"] in ("backbone", "teacher"),
         f"model.init must be backbone or teacher, got {cfg['model']['init']!r}")
    need(cfg["model"]["init"] != "teacher" or cfg["teacher"]["checkpoint"],
         "model.init=teacher needs teacher.checkpoint (the weights to start from)")
    if cfg["stage"] == "student":
        uses_teacher = any(cfg["loss"][k] for k in ("lambda_mad", "alpha_umd", "beta_cmd",
                                                   "gamma_fkd")) or cfg["model"]["init"] == "teacher"
        need(not uses_teacher or cfg["teacher"]["checkpoint"],
             "stage student with distillation losses (or model.init=teacher) needs "
             "teacher.checkpoint")
    def count(key: str, least: int) -> None:
        section, name = key.split(".")
        value = cfg[section][name]
        need(isinstance(value, int) and not isinstance(value, bool) and value >= least,
             f"{key} must be a whole number >= {least}, got {value!r}")

    for key in ("optim.batch_size", "optim.steps", "train.log_every", "train.checkpoint_every",
                "data.train_samples", "data.val_samples"):
        count(key, 1)
    for key in ("optim.warmup_steps", "train.eval_every", "train.eval_samples",
                "data.num_workers"):
        count(key, 0)
    o = cfg["optim"]
    need(o["lr"] > 0, f"optim.lr must be positive, got {o['lr']!r}")
    need(o["warmup_steps"] <= o["steps"], "optim.warmup_steps must be in [0, optim.steps]")
    need(cfg["train"]["amp"] in ("auto", "bf16", "off"), "train.amp must be auto, bf16 or off")
    device = cfg["train"]["device"]
    need(isinstance(device, str) and (device in ("auto", "cpu", "cuda") or (
        device.startswith("cuda:") and device[5:].isdigit())),
        f"train.device must be auto, cpu, cuda or cuda:N, got {device!r}")


def dump(cfg: Mapping) -> str:
    return yaml.safe_dump(dict(cfg), sort_keys=False)
