"""Training configuration: defaults, YAML files and ``--set key=value`` overrides.

Every choice of a run lives here (data, model, losses and their weights, the dropout policy,
optimiser, schedule, augmentation), so that a run is described by one YAML file plus the
overrides written on its command line, and the full resolved config is stored in every
checkpoint. Unknown keys are errors: a typo must not silently fall back to a default.
"""
from __future__ import annotations

import copy
import difflib
import math
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from .data.registry import DATASETS
from .losses import DISTILLATION_WEIGHTS, KL_REDUCTIONS, MAD_PIXELS
from .model.segmentor import FUSIONS  # the model package imports timm only to build a model

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
        "rig": "muses",          # synthetic: muses (the MUSES-like rig) | random (one drawn
                                 # per scene) | a named rig (data/synthetic/sensor_variants.py)
        "lidar_intensity": "raw",  # raw | pNN: intensity / the sweep's NN-th percentile
                                 # (scale-free; recorded in the checkpoint, the node applies it)
    },
    "model": {
        "backbone": "pvt_v2_b0",
        "embed_dim": 256,
        "pretrained": False,     # ImageNet weights of the backbone (timm; the internet or
                                 # pretrained_file)
        "pretrained_file": None, # a local copy of those weights (.safetensors / .pth / .bin)
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
        "kl_reduction": "mean",  # mean (the authors' scale: KL / classes or channels) | sum
        "mad_pixels": "all",     # all (the paper) | teacher_correct (docs/method.md)
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
        # Sensor shift of the LiDAR (anyseg_core/data/lidar_augment.py), all off by default:
        "lidar_ring_p": 0.0,     # P(keep every k-th ring only), k from lidar_ring_factors
        "lidar_ring_factors": [2, 4],
        "lidar_density_p": 0.0,  # P(keep a random fraction of the points) ...
        "lidar_density_keep": [0.3, 1.0],  # ... drawn uniformly from this range
        "lidar_intensity_p": 0.0,  # P(intensity x a factor, log-uniform in the range)
        "lidar_intensity_scale": [0.0039, 4.0],
    },
    "train": {
        "device": "auto",        # auto | cpu | cuda | cuda:N
        "amp": "auto",           # auto (bf16 on CUDA from Ampere on) | bf16 (CUDA, bf16 CPUs) | off
        "log_every": 10,
        "checkpoint_every": 200,
        "eval_every": 0,         # 0 = only at the end
        "eval_samples": 50,
    },
}


class ConfigError(ValueError):
    pass


#: Keys whose default is null, with the type of their other values (every other key takes
#: the type of its default and is never null).
NULLABLE = {
    "data.root": "str", "data.conditions": "list[str]", "data.cache": "str",
    "teacher.checkpoint": "str", "model.pretrained_file": "str", "dropout.all_prob": "float",
    "loss.ohem_thresh": "float",
    "optim.grad_clip": "float",
}


def _kind(default: Any, where: str) -> str:
    if where in NULLABLE:
        return NULLABLE[where]
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "int"
    if isinstance(default, float):
        return "float"
    if isinstance(default, list):
        first = default[0] if default else ""
        return f"list[{_kind(first, '')}]"
    return "str"


def _merge(base: dict, update: Mapping, path: str = "") -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        where = f"{path}{key}"
        if key not in base:
            close = difflib.get_close_matches(str(key), [str(k) for k in base], n=1)
            hint = f" (did you mean '{path}{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown config key {where!r}{hint}; known keys here: "
                              f"{sorted(base)}")
        if isinstance(base[key], dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"config key {where!r} must be a mapping, got {value!r}")
            out[key] = _merge(base[key], value, where + ".")
        else:
            out[key] = _coerce(base[key], value, where)
    return out


def _coerce(default: Any, value: Any, where: str) -> Any:
    """``value`` as the type of key ``where`` (that of its default, or :data:`NULLABLE`'s),
    or a ConfigError naming the key. Numbers written as text (YAML reads ``1e-4`` and
    ``5e-1``, without a dot, as strings) become numbers; YAML's ``off`` (read as false) is
    the word ``off`` for ``train.amp``."""
    if value is None:
        if where in NULLABLE:
            return None
        raise ConfigError(f"config key {where!r} cannot be null (default {default!r})")
    return _as_kind(_kind(default, where), value, where)


def _as_kind(kind: str, value: Any, where: str) -> Any:
    if kind.startswith("list["):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {where!r} must be a list, e.g. [a, b], got "
                              f"{value!r}")
        return [_as_kind(kind[5:-1], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"config key {where!r} must be true or false, got {value!r}")
        return value
    if kind in ("int", "float"):
        number = value
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                number = None
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise ConfigError(f"config key {where!r} must be a number, got {value!r}")
        if not math.isfinite(number):
            raise ConfigError(f"config key {where!r} must be a finite number, got {value!r}")
        if kind == "int":
            if not float(number).is_integer():
                raise ConfigError(f"config key {where!r} must be a whole number, got {value!r}")
            return int(number)
        return float(number)
    if where == "train.amp" and value is False:
        return "off"
    if not isinstance(value, str):
        raise ConfigError(f"config key {where!r} must be text, got {value!r}")
    return value


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses a key given twice in one mapping (a second ``optim:``
    section would otherwise replace the first without a word)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                                 _unique_mapping)


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
            data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader) or {}
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
    """Checks that need more than the key names; messages name the key. The sections are
    checked in this order and the first failing check is reported."""
    _need(cfg["stage"] in ("teacher", "student"), f"stage must be teacher or student, "
                                                  f"got {cfg['stage']!r}")
    _validate_data(cfg)
    _validate_dropout(cfg)
    _validate_teacher(cfg)
    _validate_counts(cfg)
    _validate_model(cfg)
    _validate_requirements(cfg)
    _validate_loss(cfg)
    _validate_augment(cfg)
    _validate_optim(cfg)
    _validate_train(cfg)


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _validate_data(cfg: Mapping) -> None:
    """The data section: modalities, size, the MUSES event anchor, the synthetic rig, the
    LiDAR intensity normalisation, the data set and whether it takes a cache."""
    from .data.muses import EVENT_ANCHORS
    from .data.synthetic.sensor_variants import rig_names
    from .modalities import check_modalities
    from .sensors import intensity_percentile

    data = cfg["data"]
    try:
        check_modalities(data["modalities"])
    except ValueError as err:
        raise ConfigError(f"data.modalities: {err}") from None
    size = data["size"]
    _need(isinstance(size, (list, tuple)) and len(size) == 2 and all(
        isinstance(v, int) and v > 0 and v % 32 == 0 for v in size),
        f"data.size must be [H, W] with both divisible by 32, got {size!r}")
    _need(data["event_anchor"] in EVENT_ANCHORS,
          f"data.event_anchor must be last (the MUSES SDK's window) or camera, got "
          f"{data['event_anchor']!r}")
    _need(data["rig"] in rig_names(),
          f"data.rig must be one of {', '.join(rig_names())}, got {data['rig']!r}")
    _need(data["rig"] == "muses" or data["dataset"] == "synthetic",
          "data.rig renders the synthetic world with another rig: a real data set has its "
          "own sensors (leave data.rig=muses)")
    try:
        intensity_percentile(data["lidar_intensity"])
    except ValueError as err:
        raise ConfigError(f"data.lidar_intensity: {err}") from None
    _need(data["lidar_intensity"] == "raw" or data["dataset"] != "deliver",
          "data.lidar_intensity applies to raw LiDAR sweeps; DELIVER's LiDAR is an image")
    _need(data["dataset"] in DATASETS,
          f"data.dataset must be one of {', '.join(DATASETS)}, got {data['dataset']!r}")
    spec = DATASETS[data["dataset"]]
    cache = data["cache"]
    _need(cache is None or (isinstance(cache, str) and cache.strip() != ""),
          f"data.cache must be a folder path or null, got {cache!r}")
    _need(cache is None or spec.cacheable,
          "data.cache holds the synthetic world only (a real data set is read from its "
          "files); drop data.cache or use data.dataset=synthetic")


def _validate_dropout(cfg: Mapping) -> None:
    """The dropout policy and its all-modalities probability."""
    dropout = cfg["dropout"]
    _need(dropout["policy"] in ("none", "per_sample", "per_batch"),
          f"dropout.policy must be none, per_sample or per_batch, "
          f"got {dropout['policy']!r}")
    all_prob = dropout["all_prob"]
    _need(all_prob is None or (isinstance(all_prob, (int, float))
                               and not isinstance(all_prob, bool) and 0 <= all_prob <= 1),
          f"dropout.all_prob must be a probability (0 to 1) or null, got {all_prob!r}")
    _need(all_prob is None or dropout["policy"] != "none",
          "dropout.all_prob needs dropout.policy per_sample or per_batch")


def _validate_teacher(cfg: Mapping) -> None:
    """model.init, and a teacher checkpoint wherever one is read."""
    _need(cfg["model"]["init"] in ("backbone", "teacher"),
          f"model.init must be backbone or teacher, got {cfg['model']['init']!r}")
    _need(cfg["model"]["init"] != "teacher" or cfg["teacher"]["checkpoint"],
          "model.init=teacher needs teacher.checkpoint (the weights to start from)")
    if cfg["stage"] == "student":
        uses_teacher = cfg["model"]["init"] == "teacher" or any(
            cfg["loss"][k] for k in DISTILLATION_WEIGHTS)
        _need(not uses_teacher or cfg["teacher"]["checkpoint"],
              "stage student with distillation losses (or model.init=teacher) needs "
              "teacher.checkpoint")


#: Keys that hold whole numbers, with their least value.
_WHOLE_NUMBERS = {
    "optim.batch_size": 1, "optim.steps": 1, "train.log_every": 1,
    "train.checkpoint_every": 1, "data.train_samples": 1, "data.val_samples": 1,
    "optim.warmup_steps": 0, "train.eval_every": 0, "train.eval_samples": 0,
    "data.num_workers": 0, "model.embed_dim": 1,
}


def _validate_counts(cfg: Mapping) -> None:
    """Every key of :data:`_WHOLE_NUMBERS` is a whole number of at least its least value."""
    for key, least in _WHOLE_NUMBERS.items():
        section, name = key.split(".")
        value = cfg[section][name]
        _need(isinstance(value, int) and not isinstance(value, bool) and value >= least,
              f"{key} must be a whole number >= {least}, got {value!r}")


def _validate_model(cfg: Mapping) -> None:
    """Fusion, drop path and the backbone's timm name."""
    model = cfg["model"]
    _need(model["fusion"] in FUSIONS,
          f"model.fusion must be {' or '.join(FUSIONS)}, got {model['fusion']!r}")
    _need(0 <= model["drop_path_rate"] < 1,
          f"model.drop_path_rate must be in [0, 1), got {model['drop_path_rate']!r}")
    import timm

    _need(timm.is_model(model["backbone"]),
          f"model.backbone {model['backbone']!r} is not a timm model name (e.g. pvt_v2_b0; "
          "timm.list_models() lists them)")


def _validate_requirements(cfg: Mapping) -> None:
    """What a setting requires of another: the student stage a dropout policy and the
    teacher none, a pretrained_file model.pretrained, a data set that needs a folder
    data.root."""
    policy = cfg["dropout"]["policy"]
    _need(cfg["stage"] != "student" or policy != "none",
          "stage student needs dropout.policy per_sample (the paper's anymodal dropout) or "
          "per_batch: with none the student never sees a missing modality")
    _need(not cfg["model"]["pretrained_file"] or cfg["model"]["pretrained"],
          "model.pretrained_file is read only with model.pretrained=true")
    _need(cfg["stage"] == "student" or policy == "none",
          "dropout.policy applies to the student stage only (the PML teacher sees every "
          "modality): set it to none, or stage=student")
    dataset = cfg["data"]["dataset"]
    _need(not DATASETS[dataset].needs_root or bool(cfg["data"]["root"]),
          f"data.root must name the {dataset} folder (data.dataset={dataset})")


def _validate_loss(cfg: Mapping) -> None:
    loss = cfg["loss"]
    for key in DISTILLATION_WEIGHTS:
        _need(loss[key] >= 0, f"loss.{key} must be >= 0, got {loss[key]!r}")
    for key in ("tau", "tau_cmd"):
        _need(loss[key] > 0, f"loss.{key} (a temperature) must be > 0, got {loss[key]!r}")
    _need(loss["ohem_thresh"] is None or 0 < loss["ohem_thresh"] < 1,
          f"loss.ohem_thresh must be in (0, 1) or null, got {loss['ohem_thresh']!r}")
    _need(loss["kl_reduction"] in KL_REDUCTIONS,
          f"loss.kl_reduction must be mean (the authors' scale) or sum (the earlier "
          f"per-pixel scale), got {loss['kl_reduction']!r}")
    _need(loss["mad_pixels"] in MAD_PIXELS,
          f"loss.mad_pixels must be {' or '.join(MAD_PIXELS)}, got {loss['mad_pixels']!r}")


def _validate_augment(cfg: Mapping) -> None:
    """Ranges and probabilities of the augmentation; the LiDAR's none on DELIVER."""
    aug = cfg["augment"]
    scale = aug["scale"]
    _need(len(scale) == 2 and 0 < scale[0] <= scale[1],
          f"augment.scale must be [low, high] with 0 < low <= high, got {scale!r}")
    for key in ("blur_p", "color_jitter_p", "lidar_ring_p", "lidar_density_p",
                "lidar_intensity_p"):
        _need(0 <= aug[key] <= 1, f"augment.{key} must be a probability (0 to 1), got "
                                  f"{aug[key]!r}")
    factors = aug["lidar_ring_factors"]
    _need(len(factors) > 0 and all(k >= 2 for k in factors),
          f"augment.lidar_ring_factors must be whole numbers >= 2 (keep every k-th ring), "
          f"got {factors!r}")
    keep = aug["lidar_density_keep"]
    _need(len(keep) == 2 and 0 < keep[0] <= keep[1] <= 1,
          f"augment.lidar_density_keep must be [low, high] with 0 < low <= high <= 1, got "
          f"{keep!r}")
    iscale = aug["lidar_intensity_scale"]
    _need(len(iscale) == 2 and 0 < iscale[0] <= iscale[1],
          f"augment.lidar_intensity_scale must be [low, high] with 0 < low <= high, got "
          f"{iscale!r}")
    _need(cfg["data"]["dataset"] != "deliver" or not any(
        aug[k] for k in ("lidar_ring_p", "lidar_density_p", "lidar_intensity_p")),
        "augment.lidar_* act on raw LiDAR sweeps projected in the camera; DELIVER's LiDAR "
        "is an image")


def _validate_optim(cfg: Mapping) -> None:
    o = cfg["optim"]
    _need(o["lr"] > 0, f"optim.lr must be positive, got {o['lr']!r}")
    _need(o["weight_decay"] >= 0,
          f"optim.weight_decay must be >= 0, got {o['weight_decay']!r}")
    _need(len(o["betas"]) == 2 and all(0 <= b < 1 for b in o["betas"]),
          f"optim.betas must be two numbers in [0, 1), got {o['betas']!r}")
    _need(0 < o["warmup_ratio"] <= 1,
          f"optim.warmup_ratio (the lr factor at the start of the warm-up) must be in (0, 1], "
          f"got {o['warmup_ratio']!r}")
    _need(o["poly_power"] > 0, f"optim.poly_power must be > 0, got {o['poly_power']!r}")
    _need(o["grad_clip"] is None or o["grad_clip"] > 0,
          f"optim.grad_clip must be > 0 or null (no clipping), got {o['grad_clip']!r}")
    _need(o["warmup_steps"] <= o["steps"], "optim.warmup_steps must be in [0, optim.steps]")


def _validate_train(cfg: Mapping) -> None:
    _need(cfg["train"]["amp"] in ("auto", "bf16", "off"), "train.amp must be auto, bf16 or off")
    device = cfg["train"]["device"]
    _need(isinstance(device, str) and (device in ("auto", "cpu", "cuda") or (
        device.startswith("cuda:") and device[5:].isdigit())),
        f"train.device must be auto, cpu, cuda or cuda:N, got {device!r}")


def dump(cfg: Mapping) -> str:
    return yaml.safe_dump(dict(cfg), sort_keys=False)
