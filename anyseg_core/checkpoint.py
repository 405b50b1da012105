"""Model checkpoints: the weights and metadata inference needs.

Nothing here ever unpickles. Every tensor lives in a safetensors file; everything else is
JSON stored as ONE string under the key ``"anyseg"`` of the safetensors header metadata, so
a single file travels alone and its metadata can be read without touching the weights.

``*.safetensors`` -- a model checkpoint (``format: "anyseg-checkpoint"``)
    tensors: the model's ``state_dict()`` under its usual names (``head.classifier.weight``,
    ...), floating parameters optionally in fp16 (buffers stay as they are).
    ``"anyseg"``: the metadata dict (classes, palette, modalities, normalisation, input
    size, training config, code version, ...); see :data:`REQUIRED_KEYS`.

The training state an exact resume needs (optimiser, scheduler, RNGs) has the same layout
and lives in :mod:`anyseg_core.training_state`, which training alone imports.

Every write is atomic: a temporary file in the target directory, flushed and fsync'ed,
then ``os.replace``; a failed write leaves the previous file as it was and no temporary
file behind. Every error is a :class:`CheckpointError` naming the file.
"""
from __future__ import annotations

import json
import math
import os
import secrets
import subprocess
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

import numpy as np
import safetensors
import safetensors.torch
import torch
from torch import nn

from . import __version__
from .modalities import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, NORMALIZATION, check_modalities

PathLike = Union[str, "os.PathLike[str]"]

#: Key of the safetensors header metadata holding our JSON.
META_KEY = "anyseg"
FORMAT = "anyseg-checkpoint"
FORMAT_VERSION = 1
#: The training state's format (anyseg_core.training_state), named here to recognise one
#: handed to inference.
TRAIN_FORMAT = "anyseg-training-state"
TRAIN_FORMAT_VERSION = 1

#: Keys every model checkpoint's metadata has (``event`` and others are optional).
REQUIRED_KEYS = (
    "format", "format_version", "modalities", "num_classes", "class_names", "palette",
    "backbone", "embed_dim", "fusion", "normalization", "input_size", "train_config",
    "code_version", "created", "stage", "step",
)
#: Metadata keys filled from the model's attributes when missing: meta key -> attribute.
MODEL_ATTRIBUTES = {
    "modalities": "modalities", "num_classes": "num_classes", "backbone": "backbone_name",
    "embed_dim": "embed_dim", "fusion": "fusion", "head_dropout": "head_dropout",
    "backbone_kwargs": "backbone_kwargs",
}
#: The keys above that define the architecture: a meta value contradicting the model's
#: attribute is an error, and a key missing from both meta and the model is an error.
ARCHITECTURE_KEYS = ("modalities", "num_classes", "backbone", "embed_dim", "fusion")
#: AnymodalSegmentor arguments that build_model accepts as overrides.
BUILD_ARGS = ("modalities", "num_classes", "backbone", "embed_dim", "fusion", "head_dropout",
              "backbone_kwargs")

_MAX_HEADER = 100_000_000  # safetensors' own limit on the JSON header
_SHOW = 5  # how many names an error message lists before "... and N more"


class CheckpointError(ValueError):
    """A checkpoint or training state that cannot be written, read or used, and why."""


# --------------------------------------------------------------------------------------
# Atomic writing and raw reading
# --------------------------------------------------------------------------------------

def _atomic_write(path: Path, write: Callable[[str], None], what: str) -> None:
    """Call ``write(tmp)`` for a temporary file beside ``path``, fsync it, rename it over
    ``path`` and fsync the directory. On any failure the temporary file is removed and
    ``path`` is left as it was."""
    directory = path.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        # os.open applies the umask: the mode it gives is the one the final file keeps
        # (safetensors writes its file as 0600, which another user, such as the account
        # that runs the ROS node, could not read).
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        mode = os.stat(tmp).st_mode & 0o777
    except OSError as err:
        raise CheckpointError(f"{what} {path}: cannot write a file in {directory}: "
                              f"{err}") from err
    try:
        write(str(tmp))
        os.chmod(tmp, mode)
        with open(tmp, "rb+") as f:
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(err, CheckpointError) or not isinstance(err, Exception):
            raise
        raise CheckpointError(f"{what} {path}: writing failed ({type(err).__name__}: "
                              f"{err}); any previous file at this path is unchanged") from err
    try:  # make the rename itself durable (not possible on every platform)
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _prepare_tensors(tensors: Mapping[str, torch.Tensor], what: str,
                     path: Path) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU tensors, none sharing memory with another (safetensors
    refuses shared storage, e.g. tied weights)."""
    out, seen = {}, set()
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise CheckpointError(f"{what} {path}: {name!r} is a {type(t).__name__}, "
                                  "not a tensor")
        if t.is_sparse or t.is_complex():
            raise CheckpointError(f"{what} {path}: tensor {name!r} is sparse or complex, "
                                  "which safetensors cannot store")
        t = t.detach().cpu().contiguous()
        if t.numel():
            ptr = t.untyped_storage().data_ptr()
            if ptr in seen:
                t = t.clone()
            seen.add(t.untyped_storage().data_ptr())
        out[name] = t
    return out


def write_tensors(path: PathLike, tensors: Mapping[str, torch.Tensor], header: dict,
           what: str) -> Path:
    path = Path(path)
    try:
        text = json.dumps(header, separators=(",", ":"), default=_json_default)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{what} {path}: metadata is not JSON-serialisable: "
                              f"{err}") from err
    tensors = _prepare_tensors(tensors, what, path)
    metadata = {META_KEY: text, "format": "pt"}
    _atomic_write(path, lambda tmp: safetensors.torch.save_file(tensors, tmp, metadata),
                  what)
    return path


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON-serialisable")


def read_header(path: PathLike, what: str) -> tuple[Path, dict, Optional[dict]]:
    """Parse a safetensors header without reading any tensor data. Returns the path, the
    tensor table and our JSON metadata (None when the file has no ``"anyseg"`` key)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if n < 2 or n > _MAX_HEADER or n > size - 8:
                if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
                    raise CheckpointError(
                        f"{what} {path}: file is not a safetensors file: it looks like a "
                        "torch.save / pickle file, which anyseg never loads (unpickling can "
                        "run arbitrary code); convert it to safetensors with a script you "
                        "trust")
                raise CheckpointError(
                    f"{what} {path}: file is not a safetensors file (or is truncated): "
                    f"{size} bytes, {'header length ' + str(n) if n >= 0 else 'no header'}")
            raw = f.read(n)
    except FileNotFoundError:
        raise CheckpointError(f"{what} {path}: no such file") from None
    except IsADirectoryError:
        raise CheckpointError(f"{what} {path}: is a directory, not a file") from None
    except OSError as err:
        raise CheckpointError(f"{what} {path}: cannot read: {err}") from err
    try:
        header = json.loads(raw)
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{what} {path}: file is not a safetensors file (its header "
                              f"is not valid JSON: {err})") from None
    metadata = header.pop("__metadata__", None) or {}
    end = 0
    for name, info in header.items():
        try:
            begin, stop = info["data_offsets"]
            end = max(end, int(stop))
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{what} {path}: file is not a safetensors file (bad "
                                  f"entry for tensor {name!r} in its header)") from None
    have = size - 8 - n
    if have < end:
        raise CheckpointError(f"{what} {path}: file is truncated: its header describes "
                              f"{end} bytes of tensor data, the file holds {have}")
    if not isinstance(metadata, dict) or META_KEY not in metadata:
        return path, header, None
    try:
        meta = json.loads(metadata[META_KEY])
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{what} {path}: the {META_KEY!r} metadata is not a JSON "
                              f"object: {err}") from None
    return path, header, meta


def load_tensors(path: Path, what: str, device: Union[str, torch.device] = "cpu"
                  ) -> dict[str, torch.Tensor]:
    try:
        return safetensors.torch.load_file(str(path), device=str(device))
    except Exception as err:  # SafetensorError, OSError, device errors
        raise CheckpointError(f"{what} {path}: cannot load the tensors: {err}") from err


def check_format(path: Path, meta: Optional[dict], fmt: str, version: int,
                  what: str) -> dict:
    if meta is None:
        raise CheckpointError(f"{what} {path}: not an anyseg checkpoint (no {META_KEY!r} "
                              "metadata in the safetensors header)")
    got = meta.get("format")
    if got != fmt:
        if got == TRAIN_FORMAT:
            raise CheckpointError(f"{what} {path}: is a training state (for resuming with "
                                  "load_training_state), not a model checkpoint")
        if got == FORMAT:
            raise CheckpointError(f"{what} {path}: is a model checkpoint, not a training "
                                  "state")
        raise CheckpointError(f"{what} {path}: metadata 'format' is {got!r}, expected "
                              f"{fmt!r}")
    v = meta.get("format_version")
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise CheckpointError(f"{what} {path}: metadata 'format_version' is {v!r}, expected "
                              "a positive integer")
    if v > version:
        raise CheckpointError(f"{what} {path}: format_version {v} is newer than this code "
                              f"reads ({version}); update anyseg_core")
    return meta


# --------------------------------------------------------------------------------------
# Model checkpoints
# --------------------------------------------------------------------------------------

def unwrap_model(model: nn.Module) -> nn.Module:
    """The module under torch.compile / DataParallel / DistributedDataParallel wrappers."""
    while True:
        if hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        elif isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        else:
            return model


@lru_cache(maxsize=1)
def _git_commit() -> Optional[str]:
    """HEAD of the git checkout this package lives in, or None (not a checkout, no git)."""
    pkg = Path(__file__).resolve().parent
    try:
        def git(*args: str) -> str:
            return subprocess.run(["git", *args], cwd=pkg, capture_output=True, text=True,
                                  timeout=5, check=True).stdout.strip()
        top = git("rev-parse", "--show-toplevel")
        commit = git("rev-parse", "HEAD")
    except (OSError, subprocess.SubprocessError):
        return None
    if not commit or not all(c in "0123456789abcdef" for c in commit):
        return None
    # Only trust it if the package is this checkout's own (not a copy installed into a
    # virtual environment that happens to sit inside some other repository).
    if (Path(top).resolve() / pkg.name) != pkg:
        return None
    return commit


def code_version() -> dict:
    """``{"anyseg_core": __version__, "git_commit": sha or None}``."""
    return {"anyseg_core": __version__, "git_commit": _git_commit()}


def is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def validate_metadata(meta: Mapping, where: str = "checkpoint metadata") -> None:
    """Raise :class:`CheckpointError` (prefixed with ``where``) unless ``meta`` is a
    complete, consistent model checkpoint metadata dict."""
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        keys = ", ".join(repr(k) for k in missing)
        raise CheckpointError(f"{where}: missing metadata key{'s' if len(missing) > 1 else ''}"
                              f" {keys}")

    def bad(key: str, expected: str) -> CheckpointError:
        return CheckpointError(f"{where}: metadata {key!r} must be {expected}, got "
                               f"{meta[key]!r}")

    if not isinstance(meta["modalities"], (list, tuple)):
        raise bad("modalities", "a list of modality names")
    try:
        mods = check_modalities(meta["modalities"])
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{where}: metadata 'modalities': {err}") from None
    k = meta["num_classes"]
    if not is_int(k) or k < 1:
        raise bad("num_classes", "a positive integer")
    names = meta["class_names"]
    if (not isinstance(names, (list, tuple)) or len(names) != k
            or not all(isinstance(n, str) for n in names)):
        raise bad("class_names", f"a list of {k} strings (num_classes)")
    pal = meta["palette"]
    if (not isinstance(pal, (list, tuple)) or len(pal) != k
            or not all(isinstance(c, (list, tuple)) and len(c) == 3
                       and all(is_int(v) and 0 <= v <= 255 for v in c) for c in pal)):
        raise bad("palette", f"a list of {k} [r, g, b] colours with 0..255 integers")
    for key in ("backbone", "fusion", "created", "stage"):
        if not isinstance(meta[key], str) or not meta[key]:
            raise bad(key, "a non-empty string")
    if not is_int(meta["embed_dim"]) or meta["embed_dim"] < 1:
        raise bad("embed_dim", "a positive integer")
    norm = meta["normalization"]
    if not isinstance(norm, Mapping):
        raise bad("normalization", "a dict {modality: {'mean': [3], 'std': [3]}}")
    for m in mods:
        entry = norm.get(m)
        ok = (isinstance(entry, Mapping)
              and all(isinstance(entry.get(s), (list, tuple)) and len(entry[s]) == 3
                      and all(_is_num(v) for v in entry[s]) for s in ("mean", "std"))
              and all(v > 0 for v in entry["std"]))
        if not ok:
            raise CheckpointError(f"{where}: metadata 'normalization' needs {m!r}: "
                                  f"{{'mean': [3 numbers], 'std': [3 positive numbers]}}, "
                                  f"got {entry!r}")
    size = meta["input_size"]
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(is_int(v) and v > 0 and v % 32 == 0 for v in size)):
        raise bad("input_size", "[H, W], positive integers divisible by 32")
    if not isinstance(meta["train_config"], Mapping):
        raise bad("train_config", "a dict (the training config)")
    cv = meta["code_version"]
    if not isinstance(cv, Mapping) or "anyseg_core" not in cv or "git_commit" not in cv:
        raise bad("code_version", "{'anyseg_core': version, 'git_commit': sha or None}")
    if not is_int(meta["step"]) or meta["step"] < 0:
        raise bad("step", "a non-negative integer")
    if "event" in meta and meta["event"] is not None and not isinstance(meta["event"],
                                                                        Mapping):
        raise bad("event", "a dict of event settings")
    if "preprocessing" in meta:
        pre = meta["preprocessing"]
        if not isinstance(pre, Mapping):
            raise bad("preprocessing", "a dict of preprocessing choices")
        if "lidar_intensity" in pre:
            from .sensors import intensity_percentile
            try:
                intensity_percentile(pre["lidar_intensity"])
            except ValueError as err:
                raise CheckpointError(f"{where}: metadata 'preprocessing': {err}") from None


def lidar_intensity_of(meta: Mapping) -> str:
    """The LiDAR intensity normalisation a checkpoint was trained with (``raw`` or ``pNN``,
    see :func:`anyseg_core.sensors.normalize_intensity`): its ``preprocessing`` metadata,
    else its training config's ``data.lidar_intensity``, else ``raw`` (checkpoints written
    before the choice existed). Inference must prepare the LiDAR the same way."""
    pre = meta.get("preprocessing") or {}
    if "lidar_intensity" in pre:
        return str(pre["lidar_intensity"])
    data = (meta.get("train_config") or {}).get("data") or {}
    return str(data.get("lidar_intensity", "raw"))


def save_model(path: PathLike, model: nn.Module, meta: Mapping,
               dtype: Optional[torch.dtype] = None) -> Path:
    """Write ``model``'s weights and ``meta`` to one ``.safetensors`` file (atomically).

    ``meta`` needs ``input_size``, ``stage``, ``step`` and ``train_config``; ``format``,
    ``format_version``, ``code_version`` and ``created`` are set here, and ``modalities``,
    ``num_classes``, ``backbone``, ``embed_dim``, ``fusion`` (and ``head_dropout``,
    ``backbone_kwargs`` when the model has them) are taken from the model's attributes
    when missing (``backbone`` from ``model.backbone_name``); a value given in ``meta``
    that contradicts the model is an error. ``normalization`` defaults to
    :data:`anyseg_core.modalities.NORMALIZATION`, ``class_names`` and ``palette`` to
    Cityscapes' when ``num_classes`` is 19.

    ``dtype`` (``torch.float16`` or ``torch.bfloat16``) stores the floating PARAMETERS in
    that type; buffers (BatchNorm statistics, counters) and integer tensors stay as they
    are. Returns the path written.
    """
    path = Path(path)
    where = f"checkpoint {path}"
    if dtype is not None and dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise CheckpointError(f"{where}: dtype must be None, torch.float16, torch.bfloat16 "
                              f"or torch.float32, got {dtype}")
    if not isinstance(meta, Mapping):
        raise CheckpointError(f"{where}: meta must be a dict, got {type(meta).__name__}")
    model = unwrap_model(model)
    meta = dict(meta)
    for key in ("format", "format_version", "code_version", "created"):
        meta.pop(key, None)
    for key, attr in MODEL_ATTRIBUTES.items():
        if not hasattr(model, attr):
            if key not in meta and key in ARCHITECTURE_KEYS:
                raise CheckpointError(f"{where}: meta has no {key!r} and the model "
                                      f"({type(model).__name__}) has no attribute {attr!r} "
                                      "to take it from: give it in meta")
            continue
        value = getattr(model, attr)
        value = list(value) if isinstance(value, tuple) else value
        if key not in meta:
            meta[key] = value
        elif key in ARCHITECTURE_KEYS and _jsonish(meta[key]) != _jsonish(value):
            raise CheckpointError(f"{where}: meta[{key!r}] = {meta[key]!r} but the model's "
                                  f"{attr} is {value!r}")
    if "modalities" in meta and "normalization" not in meta:
        try:
            mods = check_modalities(meta["modalities"])
            meta["normalization"] = {m: {"mean": list(NORMALIZATION[m][0]),
                                         "std": list(NORMALIZATION[m][1])} for m in mods}
        except (ValueError, TypeError):
            pass  # validate_metadata names the problem
    if meta.get("num_classes") == len(CITYSCAPES_CLASSES):
        meta.setdefault("class_names", list(CITYSCAPES_CLASSES))
        meta.setdefault("palette", [list(c) for c in CITYSCAPES_PALETTE])
    meta["format"] = FORMAT
    meta["format_version"] = FORMAT_VERSION
    meta["code_version"] = code_version()
    meta["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    floats = [p.dtype for p in model.parameters() if p.is_floating_point()]
    meta["weights_dtype"] = str(dtype or (floats[0] if floats else None)).replace("torch.", "")
    meta = _jsonish(meta, where)
    validate_metadata(meta, where)
    meta = {k: meta[k] for k in (*REQUIRED_KEYS, *sorted(set(meta) - set(REQUIRED_KEYS)))}

    state = model.state_dict()
    if dtype is not None:
        params = {name for name, _ in model.named_parameters(remove_duplicate=False)}
        for name in params & set(state):
            t = state[name]
            if t.is_floating_point() and t.dtype != dtype:
                cast = t.detach().to(dtype)
                if not bool(torch.isfinite(cast).all()) and bool(torch.isfinite(t).all()):
                    raise CheckpointError(f"{where}: parameter {name!r} does not fit in "
                                          f"{dtype} (max |value| {t.abs().max().item():g})")
                state[name] = cast
    return write_tensors(path, state, meta, "checkpoint")


def _jsonish(obj: Any, where: str = "metadata") -> Any:
    """``obj`` as it will read back from JSON (tuples become lists, ...)."""
    try:
        return json.loads(json.dumps(obj, default=_json_default))
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{where}: metadata is not JSON-serialisable: {err}") from err


def read_metadata(path: PathLike) -> dict:
    """The metadata of a model checkpoint, validated, reading only the file's header."""
    path, _, meta = read_header(path, "checkpoint")
    meta = check_format(path, meta, FORMAT, FORMAT_VERSION, "checkpoint")
    validate_metadata(meta, f"checkpoint {path}")
    return meta


def load_state_dict(path: PathLike, device: Union[str, torch.device] = "cpu"
                    ) -> tuple[dict[str, torch.Tensor], dict]:
    """``(state_dict, meta)`` of a model checkpoint; tensors in their stored dtype."""
    meta = read_metadata(path)
    return load_tensors(Path(path), "checkpoint", device), meta


def _fmt_names(names: list[str], limit: int = _SHOW) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... and {len(names) - limit} more" if len(names) > limit else "")


def _check_fit(model: nn.Module, state: Mapping[str, torch.Tensor], strict: bool,
               where: str) -> tuple[list[str], list[str]]:
    """Compare names and shapes; raise a CheckpointError describing every problem."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: checkpoint {list(state[k].shape)} vs model {list(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    problems = []
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch{'es' if len(shapes) > 1 else ''}: "
                        + "; ".join(shapes[:_SHOW])
                        + (f"; ... and {len(shapes) - _SHOW} more" if len(shapes) > _SHOW
                           else ""))
    if strict and missing:
        problems.append(f"{len(missing)} missing key{'s' if len(missing) > 1 else ''} (in "
                        f"the model, not in the checkpoint): {_fmt_names(missing)}")
    if strict and unexpected:
        problems.append(f"{len(unexpected)} unexpected key{'s' if len(unexpected) > 1 else ''}"
                        f" (in the checkpoint, not in the model): {_fmt_names(unexpected)}")
    if problems:
        raise CheckpointError(f"{where} does not fit the model ({type(model).__name__}):\n  "
                              + "\n  ".join(problems))
    return missing, unexpected


def copy_into(model: nn.Module, state: Mapping[str, torch.Tensor], strict: bool,
               where: str) -> tuple[list[str], list[str]]:
    missing, unexpected = _check_fit(model, state, strict, where)
    # load_state_dict copies into the existing tensors: the model's dtype and device win.
    model.load_state_dict(state, strict=False)
    return missing, unexpected


def build_model(path: PathLike, device: Union[str, torch.device] = "cpu",
                **overrides) -> tuple[nn.Module, dict]:
    """Construct the :class:`AnymodalSegmentor` a checkpoint describes (never with
    pretrained weights), load its weights, move it to ``device`` and put it in eval mode.

    ``overrides`` replace constructor arguments from the metadata (``head_dropout``,
    ``backbone_kwargs``, ...). Building does not change the caller's torch RNG state."""
    from .model import AnymodalSegmentor

    meta = read_metadata(path)
    unknown = sorted(set(overrides) - set(BUILD_ARGS))
    if unknown:
        raise TypeError(f"build_model: unknown argument(s) {unknown}; overrides may be "
                        f"{list(BUILD_ARGS)} (pretrained is always False)")
    kwargs = {"modalities": meta["modalities"], "num_classes": meta["num_classes"],
              "backbone": meta["backbone"], "embed_dim": meta["embed_dim"],
              "fusion": meta["fusion"]}
    for key in ("head_dropout", "backbone_kwargs"):
        if meta.get(key) is not None:
            kwargs[key] = meta[key]
    kwargs.update(overrides)
    try:
        with torch.random.fork_rng(devices=[]):
            model = AnymodalSegmentor(pretrained=False, **kwargs)
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"checkpoint {path}: cannot build the model it describes "
                              f"({kwargs}): {err}") from err
    state = load_tensors(Path(path), "checkpoint")
    copy_into(model, state, True, f"checkpoint {path}")
    return model.to(device).eval(), meta


__all__ = [
    "CheckpointError", "FORMAT", "FORMAT_VERSION", "META_KEY", "REQUIRED_KEYS", "build_model",
    "code_version", "load_state_dict", "read_metadata", "save_model", "validate_metadata",
    # what anyseg_core.training_state builds the training state's file on (the same layout)
    "check_format", "copy_into", "is_int", "load_tensors", "read_header", "unwrap_model",
    "write_tensors",
]
