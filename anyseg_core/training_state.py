"""The training state for an exact resume: weights, optimiser, scheduler, every RNG.

Imported by training only (inference needs :mod:`anyseg_core.checkpoint`). The file has the
model checkpoint's layout (tensors in safetensors, one JSON string under ``"anyseg"`` in the
header, atomic writes, nothing unpickled):

``*.train.safetensors`` -- a training state (``format: "anyseg-training-state"``)
    tensors: ``model/<name>`` (full precision), ``optim/state/<param index>/<key>``,
    ``rng/torch``, ``rng/cuda/<i>``, and any tensor met inside the scheduler state, the
    extra dict or the config (``sched/...``, ``extra/...``, ``config/...``).
    ``"anyseg"``: step, epoch, config, extra, teacher path, the optimizer's param groups,
    the scheduler's state dict and the RNG states, with every tensor replaced by a
    reference ``{"__tensor__": "<name>"}`` into the tensors above.

JSON cannot say "tuple", "dict with int keys" or "Counter"; such values are written as
``{"__tuple__": [...]}``, ``{"__dict__": [[key, value], ...]}`` and
``{"__counter__": [[key, count], ...]}`` and come back as what they were.
"""
from __future__ import annotations

import os
import random
import warnings
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import torch
from torch import nn

from .checkpoint import (TRAIN_FORMAT, TRAIN_FORMAT_VERSION, CheckpointError, PathLike,
                         check_format, code_version, copy_into, is_int, load_tensors,
                         read_header, unwrap_model, write_tensors)

#: File name suffix of training states, and the name of the one a trainer keeps current.
TRAIN_SUFFIX = ".train.safetensors"
LAST_TRAIN_STATE = "last" + TRAIN_SUFFIX


# --------------------------------------------------------------------------------------
# JSON + tensors: structures holding tensors, tuples, non-string keys
# --------------------------------------------------------------------------------------

_MARKERS = ("__tensor__", "__tuple__", "__dict__", "__counter__", "__ndarray__")


class _Packer:
    """Turns a nested structure into JSON-able data, collecting its tensors by name."""

    def __init__(self, what: str) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self.what = what

    def _name(self, name: str) -> str:
        out, i = name, 1
        while out in self.tensors:
            out, i = f"{name}#{i}", i + 1
        return out

    def pack(self, obj: Any, name: str) -> Any:
        if obj is None or isinstance(obj, (bool, str, int)):
            return obj
        if isinstance(obj, float):
            return obj
        if isinstance(obj, torch.Tensor):
            key = self._name(name)
            self.tensors[key] = obj
            return {"__tensor__": key}
        if isinstance(obj, np.ndarray):
            key = self._name(name)
            self.tensors[key] = torch.from_numpy(np.ascontiguousarray(obj))
            return {"__ndarray__": key}
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, os.PathLike):
            return os.fspath(obj)
        if isinstance(obj, tuple):
            return {"__tuple__": [self.pack(v, f"{name}/{i}") for i, v in enumerate(obj)]}
        if isinstance(obj, list):
            return [self.pack(v, f"{name}/{i}") for i, v in enumerate(obj)]
        if isinstance(obj, Counter):
            return {"__counter__": [[self.pack(k, f"{name}/key{i}"), self.pack(v, f"{name}/{k}")]
                                    for i, (k, v) in enumerate(obj.items())]}
        if isinstance(obj, Mapping):
            plain = all(isinstance(k, str) for k in obj) and not (
                len(obj) == 1 and next(iter(obj)) in _MARKERS)
            if plain:
                return {k: self.pack(v, f"{name}/{k}") for k, v in obj.items()}
            return {"__dict__": [[self.pack(k, f"{name}/key{i}"), self.pack(v, f"{name}/{k}")]
                                 for i, (k, v) in enumerate(obj.items())]}
        raise CheckpointError(f"{self.what}: cannot store {name} (a {type(obj).__name__}): "
                              "only None, bool, int, float, str, lists, tuples, dicts, "
                              "tensors and numpy arrays can be stored")


def _unpack(obj: Any, tensors: Mapping[str, torch.Tensor], where: str) -> Any:
    if isinstance(obj, list):
        return [_unpack(v, tensors, where) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if len(obj) == 1:
        (tag, value), = obj.items()
        if tag in ("__tensor__", "__ndarray__"):
            if value not in tensors:
                raise CheckpointError(f"{where}: the header refers to tensor {value!r}, "
                                      "which the file does not hold")
            t = tensors[value]
            return t.numpy() if tag == "__ndarray__" else t
        if tag == "__tuple__":
            return tuple(_unpack(v, tensors, where) for v in value)
        if tag == "__dict__":
            return {_unpack(k, tensors, where): _unpack(v, tensors, where) for k, v in value}
        if tag == "__counter__":
            return Counter({_unpack(k, tensors, where): _unpack(v, tensors, where)
                            for k, v in value})
    return {k: _unpack(v, tensors, where) for k, v in obj.items()}


# --------------------------------------------------------------------------------------
# RNG states
# --------------------------------------------------------------------------------------

def _np_state_to_json(state: Mapping) -> dict:
    """A numpy bit generator state dict with its arrays as lists (all ints: JSON-able)."""
    return {k: (_np_state_to_json(v) if isinstance(v, Mapping)
                else v.tolist() if isinstance(v, np.ndarray)
                else v.item() if isinstance(v, np.generic) else v) for k, v in state.items()}


def capture_rng_state(generators: Optional[Mapping[str, Any]] = None) -> dict:
    """Every global RNG state: Python's ``random``, numpy's legacy global RNG, torch's CPU
    RNG and each CUDA device's, plus the given named generators (``np.random.Generator``
    or ``torch.Generator``, e.g. a sampler's). The result is what
    :func:`save_training_state` stores and :func:`restore_rng_state` takes."""
    version, internal, gauss_next = random.getstate()
    state = {
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
        "numpy": _np_state_to_json(np.random.get_state(legacy=False)),
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
    }
    gens = {}
    for name, gen in (generators or {}).items():
        if isinstance(gen, np.random.Generator):
            gens[name] = {"type": "numpy", "state": _np_state_to_json(gen.bit_generator.state)}
        elif isinstance(gen, torch.Generator):
            gens[name] = {"type": "torch", "state": gen.get_state()}
        else:
            raise TypeError(f"generator {name!r} is a {type(gen).__name__}; expected "
                            "numpy.random.Generator or torch.Generator")
    state["generators"] = gens
    return state


def restore_rng_state(state: Mapping, generators: Optional[Mapping[str, Any]] = None) -> None:
    """Set every RNG captured by :func:`capture_rng_state` back. ``generators`` must hold
    an object for each name whose state should be restored into it."""
    try:
        py = state["python"]
        random.setstate((int(py["version"]), tuple(int(v) for v in py["internal"]),
                         py["gauss_next"]))
        np.random.set_state(dict(state["numpy"]))
        torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8).cpu())
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"RNG state is incomplete or malformed: {err!r}") from err
    cuda = list(state.get("cuda") or [])
    if cuda:
        if torch.cuda.is_available():
            n = torch.cuda.device_count()
            if n != len(cuda):
                warnings.warn(f"RNG state has {len(cuda)} CUDA device states, this machine "
                              f"has {n} devices: restoring the first {min(n, len(cuda))}",
                              stacklevel=2)
            for i, s in enumerate(cuda[:n]):
                torch.cuda.set_rng_state(torch.as_tensor(s, dtype=torch.uint8).cpu(), i)
        else:
            warnings.warn("RNG state holds CUDA states but CUDA is not available: they are "
                          "not restored", stacklevel=2)
    saved = state.get("generators") or {}
    for name, gen in (generators or {}).items():
        if name not in saved:
            raise CheckpointError(f"RNG state has no generator {name!r} (it has "
                                  f"{sorted(saved)})")
        entry = saved[name]
        if isinstance(gen, np.random.Generator) and entry.get("type") == "numpy":
            gen.bit_generator.state = entry["state"]
        elif isinstance(gen, torch.Generator) and entry.get("type") == "torch":
            gen.set_state(torch.as_tensor(entry["state"], dtype=torch.uint8).cpu())
        else:
            raise CheckpointError(f"RNG state of generator {name!r} is of type "
                                  f"{entry.get('type')!r}, the object given is a "
                                  f"{type(gen).__name__}")


# --------------------------------------------------------------------------------------
# Training state
# --------------------------------------------------------------------------------------


def save_training_state(path: PathLike, *, model: nn.Module,
                        optimizer: Optional[torch.optim.Optimizer] = None,
                        scheduler: Optional[Any] = None, step: int, epoch: int,
                        rng: Optional[Mapping] = None, extra: Optional[Mapping] = None,
                        teacher_path: Optional[PathLike] = None,
                        config: Optional[Mapping] = None) -> Path:
    """Write everything needed to continue training exactly to ONE safetensors file
    (atomically): the model's weights in full precision, the optimizer's state, the
    scheduler's state dict, ``step``, ``epoch``, ``config``, ``extra`` (tensors allowed),
    ``teacher_path`` and ``rng`` (default: :func:`capture_rng_state` now).

    Resuming is bit-exact when the loop's only other inputs are deterministic functions of
    the restored state (e.g. the data order derives from the seed, epoch and step, or its
    generator is passed to capture_rng_state). Returns the path written."""
    path = Path(path)
    where = f"training state {path}"
    if not is_int(step) or not is_int(epoch):
        raise CheckpointError(f"{where}: step and epoch must be integers, got {step!r}, "
                              f"{epoch!r}")
    model = unwrap_model(model)
    packer = _Packer(where)
    tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
    packer.tensors.update(tensors)
    optim = None
    if optimizer is not None:
        sd = optimizer.state_dict()
        optim = {"type": type(optimizer).__name__,
                 "state": packer.pack(sd["state"], "optim/state"),
                 "param_groups": packer.pack(sd["param_groups"], "optim/param_groups")}
        for key in set(sd) - {"state", "param_groups"}:
            optim[key] = packer.pack(sd[key], f"optim/{key}")
    sched = None
    if scheduler is not None:
        sched = {"type": type(scheduler).__name__,
                 "state": packer.pack(scheduler.state_dict(), "sched")}
    header = {
        "format": TRAIN_FORMAT,
        "format_version": TRAIN_FORMAT_VERSION,
        "step": step,
        "epoch": epoch,
        "teacher_path": None if teacher_path is None else os.fspath(teacher_path),
        "config": packer.pack(dict(config or {}), "config"),
        "extra": packer.pack(None if extra is None else dict(extra), "extra"),
        "model_type": type(model).__name__,
        "optimizer": optim,
        "scheduler": sched,
        "rng": packer.pack(dict(capture_rng_state() if rng is None else rng), "rng"),
        "code_version": code_version(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return write_tensors(path, packer.tensors, header, "training state")


def read_training_header(path: PathLike) -> dict:
    """The JSON header of a training state (step, epoch, config, ...), reading only the
    file's header; tensors appear as ``{"__tensor__": name}`` references."""
    path, _, meta = read_header(path, "training state")
    return check_format(path, meta, TRAIN_FORMAT, TRAIN_FORMAT_VERSION, "training state")


# Per-parameter buffers of torch's optimizers that have their parameter's shape.
_MOMENTS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer", "square_avg",
            "acc_delta", "sum")


def _check_moment_shapes(sd: Mapping, optimizer: torch.optim.Optimizer, model: nn.Module,
                         where: str) -> None:
    """torch's ``Optimizer.load_state_dict`` checks only how many parameters each group has:
    a state saved for parameters in another order would load, and fail (or silently train
    wrong) at the next step. Compare every moment buffer's shape with its parameter's."""
    saved_groups = sd.get("param_groups") or []
    if len(saved_groups) != len(optimizer.param_groups):
        return  # load_state_dict names this mismatch itself
    names = {id(p): n for n, p in unwrap_model(model).named_parameters()}
    state = sd.get("state") or {}
    for saved, group in zip(saved_groups, optimizer.param_groups):
        for index, param in zip(saved.get("params", []), group["params"]):
            entry = state.get(index, state.get(str(index))) or {}
            for key in _MOMENTS:
                value = entry.get(key)
                if isinstance(value, torch.Tensor) and value.shape != param.shape:
                    raise CheckpointError(
                        f"{where}: the optimizer's {key} of parameter "
                        f"{names.get(id(param), f'#{index}')} has shape {tuple(value.shape)}, "
                        f"the parameter {tuple(param.shape)} (the optimizer's parameters are "
                        f"in another order or of another model than when it was saved)")


def _stored_state(header: dict, kind: str, given, where: str) -> dict:
    """The header's ``kind`` ("optimizer" or "scheduler") state, checked to be there and to
    be for the class of ``given``."""
    state = header.get(kind)
    if state is None:
        raise CheckpointError(f"{where}: holds no {kind} state")
    if state.get("type") != type(given).__name__:
        raise CheckpointError(f"{where}: {kind} state is for {state.get('type')}, "
                              f"the {kind} given is a {type(given).__name__}")
    return state

def load_training_state(path: PathLike, model: nn.Module,
                        optimizer: Optional[torch.optim.Optimizer] = None,
                        scheduler: Optional[Any] = None, *, restore_rng: bool = True,
                        generators: Optional[Mapping[str, Any]] = None) -> dict:
    """Restore a training state written by :func:`save_training_state` into ``model``,
    ``optimizer`` and ``scheduler`` (built the same way as when saving) and, unless
    ``restore_rng=False``, every RNG (and the named ``generators``).

    Returns ``{"step", "epoch", "config", "extra", "rng", "teacher_path", "code_version",
    "created"}``."""
    path = Path(path)
    where = f"training state {path}"
    header = read_training_header(path)
    tensors = load_tensors(path, "training state")
    state = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    copy_into(unwrap_model(model), state, True, where)

    if optimizer is not None:
        optim = _stored_state(header, "optimizer", optimizer, where)
        sd = {k: _unpack(v, tensors, where) for k, v in optim.items() if k != "type"}
        _check_moment_shapes(sd, optimizer, model, where)
        try:
            optimizer.load_state_dict(sd)
        except (ValueError, KeyError, RuntimeError) as err:
            raise CheckpointError(f"{where}: the optimizer state does not fit the optimizer "
                                  f"given: {err}") from err
    if scheduler is not None:
        sched = _stored_state(header, "scheduler", scheduler, where)
        try:
            scheduler.load_state_dict(_unpack(sched["state"], tensors, where))
        except (ValueError, KeyError, TypeError, RuntimeError) as err:
            raise CheckpointError(f"{where}: the scheduler state does not fit the scheduler "
                                  f"given: {err}") from err
    rng = _unpack(header.get("rng"), tensors, where)
    if restore_rng:
        if not isinstance(rng, Mapping):
            raise CheckpointError(f"{where}: holds no RNG state")
        try:
            restore_rng_state(rng, generators)
        except CheckpointError as err:
            raise CheckpointError(f"{where}: {err}") from None
    return {"step": header["step"], "epoch": header["epoch"],
            "config": _unpack(header.get("config"), tensors, where),
            "extra": _unpack(header.get("extra"), tensors, where), "rng": rng,
            "teacher_path": header.get("teacher_path"),
            "code_version": header.get("code_version"), "created": header.get("created")}


__all__ = ["LAST_TRAIN_STATE", "TRAIN_FORMAT", "TRAIN_FORMAT_VERSION", "TRAIN_SUFFIX",
           "capture_rng_state", "load_training_state", "read_training_header",
           "restore_rng_state", "save_training_state"]
