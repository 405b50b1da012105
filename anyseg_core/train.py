"""Train the PML teacher or the anymodal student.

    python -m anyseg_core.train --config config/synthetic_teacher.yaml [--set key=value ...]
    python -m anyseg_core.train --config config/synthetic_student.yaml \
        --set teacher.checkpoint=runs/teacher/final.safetensors
    python -m anyseg_core.train ... --resume             # continue from out_dir/last.train.safetensors
    python -m anyseg_core.train ... --stop-after 500     # stop at step 500, --resume later
    torchrun --nproc_per_node=2 -m anyseg_core.train ...  # DDP (NCCL on GPU, gloo on CPU)

Reads top to bottom: config, model (+ frozen teacher), optimiser and schedule, the loop,
checkpoints. Stage ``teacher`` trains with every modality present (PML); stage ``student``
draws a random non-empty subset per sample (anymodal dropout) and distils the teacher with
L_mad, L_umd and L_cmd (anyseg_core.losses). Everything is in the config (anyseg_core.config).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Iterator, Mapping, NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from . import checkpoint as ckpt
from . import training_state
from .config import ConfigError, dump, load_config
from .data import build_dataset, class_info, collate, normalization_info, rescale_info
from .data.readers import DataFileError
from .data.lidar_augment import LidarAugment
from .data.transforms import JointAugment
from .losses import DISTILLATION_WEIGHTS, AnySegLoss
from .model import AnymodalSegmentor
from .runtime import pick_device

# ----------------------------------------------------------------------------- helpers


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (stable across processes and runs)."""
    state = np.random.SeedSequence([int(p) % (1 << 63) for p in parts]).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


def sample_present(policy: str, batch: int, num_modalities: int, g: torch.Generator,
                   all_prob: float | None = None) -> torch.Tensor:
    """The [B, M] present mask of one training batch.

    none: every modality. per_sample: each sample its own subset, uniform over the
    2^M - 1 non-empty subsets. per_batch: one such subset for the whole batch.
    ``all_prob`` (not the paper's; None keeps the uniform draw): the probability that a
    sample (per_batch: the batch) keeps every modality; otherwise its subset is uniform over
    the 2^M - 2 other non-empty subsets."""
    if policy == "none":
        return torch.ones(batch, num_modalities, dtype=torch.bool)
    n = batch if policy == "per_sample" else 1
    full = 2 ** num_modalities - 1
    if all_prob is None:
        codes = torch.randint(1, full + 1, (n,), generator=g)
    else:
        codes = torch.randint(1, max(full, 2), (n,), generator=g)
        codes[torch.rand(n, generator=g) < all_prob] = full
    bits = (codes[:, None] >> torch.arange(num_modalities)) & 1
    return bits.bool().expand(batch, -1).clone()


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay on norms, biases and other 1-D parameters."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def lr_lambda(optim_cfg: Mapping):
    """Linear warm-up from ``warmup_ratio`` to 1, then polynomial decay to 0."""
    steps, warm = optim_cfg["steps"], optim_cfg["warmup_steps"]
    ratio, power = optim_cfg["warmup_ratio"], optim_cfg["poly_power"]

    def f(step: int) -> float:
        if step < warm:
            return ratio + (1.0 - ratio) * step / max(warm, 1)
        return (1.0 - (step - warm) / max(steps - warm, 1)) ** power
    return f


class TrainItems(Dataset):
    """Items keyed by (epoch, index): the augmentation of an item depends only on the run's
    seed, the epoch and the index, never on worker or resume state. ``lidar`` (the
    ``augment.lidar_*`` sensor-shift augmentation) runs first, from a generator of its own,
    so the joint augmentation draws the same whether it is on or off."""

    def __init__(self, base: Dataset, augment: JointAugment | None, seed: int,
                 lidar: LidarAugment | None = None) -> None:
        self.base, self.augment, self.seed = base, augment, seed
        self.lidar = lidar if lidar is not None and lidar.enabled else None

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, index = key
        item = self.base[index]
        if self.lidar is not None:
            g = torch.Generator().manual_seed(mix_seed(self.seed, epoch, index, 0x11DA))
            item["inputs"] = self.lidar(item["inputs"], g)
        if self.augment is not None:
            g = torch.Generator().manual_seed(mix_seed(self.seed, epoch, index))
            item["inputs"], item["label"] = self.augment(item["inputs"], item["label"], g)
        return item


def batches(num_items: int, batch_size: int, seed: int, start_step: int, rank: int,
            world: int) -> Iterator[list[tuple[int, int]]]:
    """This rank's share of every global batch from ``start_step`` on: a fresh permutation
    per epoch (drop_last), so step s always sees the same samples."""
    per_epoch = num_items // batch_size
    if per_epoch == 0:
        raise ConfigError(f"optim.batch_size={batch_size} is larger than the training set "
                          f"({num_items} items)")
    step = start_step
    while True:
        epoch, k = divmod(step, per_epoch)
        perm = torch.randperm(num_items, generator=torch.Generator().manual_seed(
            mix_seed(seed, epoch))).tolist()
        for j in range(k, per_epoch):
            chunk = perm[j * batch_size:(j + 1) * batch_size]
            yield [(epoch, i) for i in chunk[rank::world]]
        step = (epoch + 1) * per_epoch


def _sha256(path) -> str:
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


#: Settings a resumed run may change: where things are and how much is logged, not what is
#: trained (paths move between machines; the teacher file's contents are compared instead).
RESUMABLE_CHANGES = ("out_dir", "data.root", "data.cache", "data.num_workers", "train.device",
                     "train.log_every", "train.checkpoint_every", "train.eval_every",
                     "train.eval_samples", "teacher.checkpoint", "model.pretrained_file")
#: Settings added since runs were first saved, with the value a run saved before them had:
#: a saved config that lacks one is compared as if it had that value (a run distilled with
#: the KL summed over the classes must not resume at their mean).
LEGACY_VALUES = {"loss.kl_reduction": "sum", "loss.mad_pixels": "all", "data.rig": "muses",
                 "data.lidar_intensity": "raw", "augment.lidar_ring_p": 0.0,
                 "augment.lidar_density_p": 0.0, "augment.lidar_intensity_p": 0.0}


def changed_settings(saved: Mapping, cfg: Mapping) -> list[tuple[str, object, object]]:
    """``(key, saved value, new value)`` for every setting of ``cfg`` that differs from the
    saved run's, less :data:`RESUMABLE_CHANGES`."""
    def flat(tree: Mapping, prefix: str = "") -> dict:
        out = {}
        for k, v in tree.items():
            if isinstance(v, Mapping):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
        return out
    a, b = flat(saved), flat(cfg)
    if a:
        for key, value in LEGACY_VALUES.items():
            a.setdefault(key, value)
    # Other keys one side lacks (a setting added to the code since) are not compared.
    return [(k, a[k], b[k]) for k in sorted(a.keys() & b.keys())
            if k not in RESUMABLE_CHANGES and a[k] != b[k]]


def model_meta(cfg: Mapping, stage: str, step: int) -> dict:
    names, palette = class_info(cfg)
    norm = normalization_info(cfg)
    mods = list(cfg["data"]["modalities"])
    return {
        "modalities": mods, "num_classes": len(names), "class_names": names,
        "palette": palette, "backbone": cfg["model"]["backbone"],
        "embed_dim": cfg["model"]["embed_dim"], "fusion": cfg["model"]["fusion"],
        "normalization": {m: {"mean": list(norm[m][0]), "std": list(norm[m][1])}
                          for m in mods},
        "input_size": list(cfg["data"]["size"]), "train_config": dict(cfg), "stage": stage,
        "step": step,
        # How inference must prepare the inputs beyond the normalisation (Runtime reads it).
        "preprocessing": {"lidar_intensity": cfg["data"].get("lidar_intensity", "raw")},
    }


class MetricsLog:
    """JSON lines (and TensorBoard when it is installed), written by rank 0 only.

    Records of steps after ``start_step`` already in the file are dropped first: on a fresh
    run (0) that is everything an earlier run left there, on ``--resume`` the steps logged
    after the last saved state, which the resumed run logs again.
    """

    def __init__(self, out_dir: Path, enabled: bool, start_step: int = 0) -> None:
        self.enabled = enabled
        self.file = None
        if enabled:
            path = out_dir / "metrics.jsonl"
            kept = []
            if start_step and path.exists():
                for line in path.read_text().splitlines():
                    try:
                        if json.loads(line)["step"] <= start_step:
                            kept.append(line + "\n")
                    except (ValueError, KeyError, TypeError):
                        pass  # a line cut short by a crash
            self.file = open(path, "w")
            self.file.writelines(kept)
            self.file.flush()
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(out_dir / "tb"))
            except Exception:  # tensorboard not installed: JSON lines only
                self.tb = None

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(k, v, record["step"])

    def close(self) -> None:
        if self.file:
            self.file.close()
        if self.tb is not None:
            self.tb.close()


# ----------------------------------------------------------------------------- training


def train(cfg: dict, resume: bool = False, stop_after: int | None = None) -> Path | None:
    """Run the configured training; returns the final checkpoint path (rank 0).

    ``stop_after``: stop once this many steps are done (saving the training state) without
    changing the schedule of the whole run, to continue later with ``resume``: long runs
    split across machine sessions."""
    run = _processes(cfg)
    out_dir, o = Path(cfg["out_dir"]), cfg["optim"]
    if run.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(mix_seed(cfg["seed"], run.rank))
    base = _training_data(cfg)  # first: a missing data set is found before any weights
    names, _ = class_info(cfg)
    student = cfg["stage"] == "student"
    model = build_trained_model(cfg, len(names))
    teacher, teacher_sha256 = _teacher(cfg, model, run.device, names)
    model.to(run.device)
    if run.device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    loss_fn = AnySegLoss.from_config(cfg["loss"]) if student else AnySegLoss(
        lambda_mad=0, alpha_umd=0, beta_cmd=0, gamma_fkd=0,
        ohem_thresh=cfg["loss"]["ohem_thresh"])
    use_bf16 = bf16_autocast(cfg["train"]["amp"], run.device)
    if run.is_main:
        print(f"precision: {'bf16 autocast' if use_bf16 else 'fp32'} on {run.device}",
              flush=True)
    autocast = ((lambda: torch.autocast(run.device.type, dtype=torch.bfloat16)) if use_bf16
                else nullcontext)
    optimizer = torch.optim.AdamW(param_groups(model, o["weight_decay"]), lr=o["lr"],
                                  betas=tuple(o["betas"]))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(o))
    last = out_dir / training_state.LAST_TRAIN_STATE
    step = _resumed_step(last, cfg, model, optimizer, scheduler, teacher_sha256,
                         run.is_main) if resume else 0
    if run.is_main:  # after the resume check: a refused resume leaves the run's record as is
        (out_dir / "config.yaml").write_text(dump(cfg))
        print(dump(cfg), flush=True)
    net = DistributedDataParallel(model, device_ids=[run.device.index]
                                  if run.device.type == "cuda" else None) \
        if run.distributed else model
    items, loader = _training_loader(cfg, base, step, run)

    policy = cfg["dropout"]["policy"] if student else "none"
    mods = tuple(cfg["data"]["modalities"])
    log = MetricsLog(out_dir, run.is_main, start_step=step)
    bar = _progress(o["steps"], step, run.is_main)
    timer = {"t": time.perf_counter(), "samples": 0}
    data_iter = iter(loader)
    model.train()
    while step < o["steps"]:
        batch = next(data_iter)
        inputs = {k: v.to(run.device, non_blocking=True) for k, v in batch["inputs"].items()}
        labels = batch["label"].to(run.device, non_blocking=True)
        B = labels.shape[0]
        # Dropout and drop-path draw from the global RNGs: seeded from (seed, step, rank) at
        # every step, so each rank's masks are a function of the step and a resumed run
        # (every rank) continues exactly; the saved RNG state is rank 0's alone.
        torch.manual_seed(mix_seed(cfg["seed"], step, run.rank, 11))
        g = torch.Generator().manual_seed(mix_seed(cfg["seed"], step, run.rank, 7))
        present = sample_present(policy, B, len(mods), g,
                                 cfg["dropout"]["all_prob"]).to(run.device)
        if run.device.type == "cuda":
            inputs = {k: v.contiguous(memory_format=torch.channels_last) for k, v in inputs.items()}
        with autocast():
            out = net(inputs, present)
            t_out = None
            if teacher is not None and loss_fn.needs_teacher:
                with torch.no_grad():
                    t_out = teacher(inputs)
            losses = loss_fn(out, t_out, labels, present)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        if o["grad_clip"]:
            torch.nn.utils.clip_grad_norm_(model.parameters(), o["grad_clip"])
        optimizer.step()
        scheduler.step()
        step += 1
        timer["samples"] += B * run.world
        if not torch.isfinite(losses["loss"]):
            raise FloatingPointError(f"loss is {float(losses['loss'])} at step {step}; "
                                     f"lower optim.lr or check the data")
        if step % cfg["train"]["log_every"] == 0 or step == o["steps"]:
            _log_step(log, bar, run.is_main, step, o["steps"], scheduler, losses, timer)
        if bar is not None:
            bar.update(1)
        every = cfg["train"]["eval_every"]
        if run.is_main and cfg["train"]["eval_samples"] > 0 and (
                step == o["steps"] or (every and step % every == 0)):
            _validate_and_log(model, cfg, run.device, autocast, log, step)
        stopping = stop_after is not None and step >= stop_after and step < o["steps"]
        if step % cfg["train"]["checkpoint_every"] == 0 or step == o["steps"] or stopping:
            _save_state(last, cfg, run, model, optimizer, scheduler, step, len(items),
                        teacher_sha256)
        if stopping:
            break
    if bar is not None:
        bar.close()
    return _finish(cfg, model, step, run, log, out_dir)


class _Run(NamedTuple):
    """This process's place in the run: torchrun's world and rank, the device."""

    world: int
    rank: int
    distributed: bool
    device: torch.device
    is_main: bool


def _processes(cfg: dict) -> _Run:
    """The process group (under torchrun) and this process's device; checks that the batch
    splits evenly over the processes."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    # Under torchrun even one process trains through DDP (and NCCL on a GPU), as N would.
    distributed = world > 1 or dist.is_torchelastic_launched()
    name = cfg["train"]["device"]
    if (name == "auto" and torch.cuda.is_available()) or (name == "cuda" and distributed):
        name = f"cuda:{local_rank}"  # one GPU per process under torchrun
    elif world > 1 and name.startswith("cuda:"):
        raise ConfigError(f"train.device={name} under torchrun would put every process on "
                          "one GPU: use cuda or auto (process i takes GPU LOCAL_RANK i)")
    try:
        device = pick_device(name)
    except ValueError as err:
        raise ConfigError(f"train.device: {err}") from None
    if distributed:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if cfg["optim"]["batch_size"] % world:
        raise ConfigError(f"optim.batch_size={cfg['optim']['batch_size']} is not divisible "
                          f"by the {world} processes")
    return _Run(world, rank, distributed, device, rank == 0)


def _training_data(cfg: dict) -> Dataset:
    base = build_dataset(cfg, "train")
    if len(base) == 0:
        raise ConfigError(f"data: the {cfg['data']['dataset']} training split has no items "
                          f"(data.root={cfg['data']['root']}); check data.root and "
                          f"data.conditions")
    return base


def _teacher(cfg: dict, model, device: torch.device, names) -> tuple:
    """The frozen teacher a student distils (None for a teacher, or a student with L_sup
    only), and the sha256 of its file (what a resumed run must distil or start from again).
    Either stage can start from the teacher's weights (model.init=teacher: a teacher trained
    further with a new schedule, or the student); a student with no distillation term and
    its own initialisation reads no teacher, even when the config names one."""
    m, mods = cfg["model"], list(cfg["data"]["modalities"])
    student = cfg["stage"] == "student"
    distils = student and any(cfg["loss"][k] for k in DISTILLATION_WEIGHTS)
    if not (cfg["teacher"]["checkpoint"] and (distils or m["init"] == "teacher")):
        return None, None
    teacher, tmeta = ckpt.build_model(cfg["teacher"]["checkpoint"], device=device)
    teacher_sha256 = _sha256(cfg["teacher"]["checkpoint"])
    if list(tmeta["modalities"]) != mods:
        raise ConfigError(f"the teacher was trained on {tmeta['modalities']}, this run "
                          f"on {mods}: they must match")
    if student and list(tmeta["class_names"]) != list(names):
        raise ConfigError(f"the teacher predicts {len(tmeta['class_names'])} classes "
                          f"({', '.join(tmeta['class_names'][:4])}, ...), this run's data "
                          f"{len(names)} ({', '.join(names[:4])}, ...): they must match "
                          "for L_mad")
    feature_kd = any(cfg["loss"][k] for k in ("alpha_umd", "beta_cmd", "gamma_fkd"))
    if student and feature_kd and tmeta["backbone"] != m["backbone"]:
        raise ConfigError(f"the teacher's encoder is {tmeta['backbone']}, this run's "
                          f"{m['backbone']}: the feature distillation losses (loss."
                          "alpha_umd, beta_cmd, gamma_fkd) compare their features stage by "
                          "stage, so they must be the same")
    teacher.eval().requires_grad_(False)
    if m["init"] == "teacher":
        try:
            model.load_state_dict(teacher.state_dict())
        except RuntimeError as err:
            first = str(err).strip().splitlines()
            raise ConfigError(f"model.init=teacher: {cfg['teacher']['checkpoint']} does "
                              f"not fit the model of this config (backbone, embed_dim, "
                              f"fusion): {' '.join(first[:3])}") from None
    return (teacher if student else None), teacher_sha256


def _resumed_step(last: Path, cfg: dict, model, optimizer, scheduler,
                  teacher_sha256: str | None, is_main: bool) -> int:
    """Load the training state of ``last`` into the model, optimiser, scheduler and RNGs;
    its step. Refused when the saved run had other settings or another teacher."""
    if not last.exists():
        raise FileNotFoundError(f"--resume: no training state at {last}")
    state = training_state.load_training_state(last, model, optimizer, scheduler)
    changed = changed_settings(state.get("config") or {}, cfg)
    saved_teacher = (state.get("extra") or {}).get("teacher_sha256")
    if saved_teacher and saved_teacher != teacher_sha256:
        changed.append(("teacher.checkpoint (its contents)", saved_teacher[:12],
                        (teacher_sha256 or "none")[:12]))
    if changed:
        raise ConfigError(
            f"--resume: {last} was trained with other settings: " + "; ".join(
                f"{k} was {a!r}, now {b!r}" for k, a, b in changed) +
            " (a resumed run continues the saved one exactly; use those values, or a new "
            "out_dir for a new run)")
    if is_main:
        print(f"resumed from {last} at step {state['step']}", flush=True)
    return state["step"]  # the RNG states are restored too


def _training_loader(cfg: dict, base: Dataset, step: int, run: _Run) -> tuple:
    """The augmented training items and their loader, in batches that continue from
    ``step`` (the same samples as an uninterrupted run)."""
    items = TrainItems(base, JointAugment.from_config(cfg["augment"], normalization_info(cfg),
                                                      rescale_info(cfg)),
                       cfg["seed"], LidarAugment.from_config(cfg["augment"],
                                                             normalization_info(cfg)))
    workers = cfg["data"]["num_workers"]
    loader = DataLoader(items, batch_sampler=batches(len(items), cfg["optim"]["batch_size"],
                                                     cfg["seed"], step, run.rank, run.world),
                        num_workers=workers, collate_fn=collate,
                        # Workers start from a fresh server process, not a fork of this one:
                        # a fork of a process with other libraries' threads running (OpenVINO,
                        # ONNX Runtime, rclpy in the same process) crashed it with SIGSEGV.
                        multiprocessing_context="forkserver" if workers else None,
                        pin_memory=run.device.type == "cuda",
                        # its own generator: creating the iterator must not draw from the
                        # global RNG, or a resumed run would drift from an uninterrupted one
                        generator=torch.Generator().manual_seed(
                            mix_seed(cfg["seed"], run.rank, 1)))
    return items, loader


def _log_step(log, bar, is_main: bool, step: int, steps: int, scheduler, losses: dict,
              timer: dict) -> None:
    """A metrics record (step, lr, samples/s since the last, every loss term), on the bar
    or, for background runs, as one plain line."""
    now = time.perf_counter()
    rec = {"step": step, "lr": scheduler.get_last_lr()[0],
           "samples_per_s": timer["samples"] / max(now - timer["t"], 1e-9),
           **{k: float(v.detach()) for k, v in losses.items()}}
    timer["t"], timer["samples"] = now, 0
    log.write(rec)
    if bar is not None and not bar.disable:
        bar.set_postfix(loss=f"{rec['loss']:.3f}", lr=f"{rec['lr']:.2e}",
                        sps=f"{rec['samples_per_s']:.1f}")
    elif is_main:  # logs of background runs: one plain line instead of a bar
        print(f"step {step}/{steps} loss {rec['loss']:.4f} lr {rec['lr']:.2e} "
              f"{rec['samples_per_s']:.1f} samples/s", flush=True)


def _validate_and_log(model, cfg: dict, device: torch.device, autocast, log,
                      step: int) -> None:
    rec = validate(model, cfg, device, autocast)
    log.write({"step": step, **rec})
    print(f"step {step} validation: " + " ".join(
        f"{k[9:]} {v:.1f}" for k, v in rec.items() if k.startswith("val_miou/")) +
        f" | mean {rec['val_mean_miou']:.1f}", flush=True)
    model.train()


def _save_state(last: Path, cfg: dict, run: _Run, model, optimizer, scheduler, step: int,
                n_items: int, teacher_sha256: str | None) -> None:
    """The training state for an exact resume (rank 0 writes it; every rank waits)."""
    if run.is_main:
        training_state.save_training_state(
            last, model=model, optimizer=optimizer, scheduler=scheduler, step=step,
            epoch=step // max(n_items // cfg["optim"]["batch_size"], 1),
            rng=training_state.capture_rng_state(), extra={"teacher_sha256": teacher_sha256},
            teacher_path=cfg["teacher"]["checkpoint"], config=cfg)
    if run.distributed:
        dist.barrier()


def _finish(cfg: dict, model, step: int, run: _Run, log, out_dir: Path) -> Path | None:
    """The final checkpoint when the run is complete (rank 0), the logs closed, the
    process group ended."""
    final = None
    if run.is_main and step == cfg["optim"]["steps"]:
        final = out_dir / "final.safetensors"
        ckpt.save_model(final, model, model_meta(cfg, cfg["stage"], step))
        print(f"saved {final}", flush=True)
    elif run.is_main:
        print(f"stopped at step {step} of {cfg['optim']['steps']}; continue with --resume",
              flush=True)
    log.close()
    if run.distributed:
        dist.barrier()
        dist.destroy_process_group()
    return final


def _hub_reachable(name: str) -> tuple[bool, str]:
    """Whether timm can fetch ``name``'s pretrained weights: cached already, or the hub's host
    resolves (no resolver, no internet: timm would retry for ~40 s, then fail). The reason
    comes with it."""
    import socket
    from urllib.parse import urlparse

    import timm
    try:
        from huggingface_hub import constants, try_to_load_from_cache
    except ImportError:
        return True, ""  # timm's other download paths; let it try
    try:
        hub_id = getattr(timm.models.get_pretrained_cfg(name), "hf_hub_id", None)
    except Exception as err:  # noqa: BLE001 - e.g. an unknown pretrained tag
        return False, f"timm has no pretrained weights for it ({err})"
    if not hub_id:
        return True, ""
    for filename in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
        if isinstance(try_to_load_from_cache(hub_id, filename), str):
            return True, ""
    if constants.HF_HUB_OFFLINE:
        return False, "HF_HUB_OFFLINE is set and they are not in the local cache"
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
    except OSError as err:
        return False, f"{host} cannot be reached ({err.strerror or err})"
    return True, ""


def _load_backbone_file(encoder: torch.nn.Module, path: Path, backbone: str) -> None:
    """Copy the weights of a timm ``backbone`` file (safetensors, or a torch file read with
    ``weights_only``) into ``encoder``: every encoder tensor must be in it with its shape
    (a classifier head and other extra keys are left out). Anything else: ConfigError."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a damaged file, a pickle with code in it, ...
        raise ConfigError(f"model.pretrained_file {path} cannot be read "
                          f"({type(err).__name__}: {err})") from None
    for key in ("state_dict", "model"):  # training checkpoints nest the weights
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ConfigError(f"model.pretrained_file {path} holds no state dict")
    # timm's features_only wrapper names the top modules with "_" for "." (stages.0 ->
    # stages_0): keys are matched with every "_" read as ".".
    state = {k.removeprefix("module.").replace("_", "."): v for k, v in state.items()
             if isinstance(v, torch.Tensor)}
    want = {k: (k.replace("_", "."), v) for k, v in encoder.state_dict().items()}
    if len({n for n, _ in want.values()}) != len(want):  # two names that differ by "_" / "."
        raise ConfigError(f"model.pretrained_file: the {backbone} encoder's tensor names are "
                          "ambiguous once '_' and '.' are read alike; this backbone cannot be "
                          "loaded from a file")
    missing = [k for k, (n, _) in want.items() if n not in state]
    wrong = [k for k, (n, v) in want.items()
             if n in state and tuple(state[n].shape) != tuple(v.shape)]
    if missing or wrong:
        bad = missing or wrong
        raise ConfigError(f"model.pretrained_file {path} does not hold the timm weights of "
                          f"{backbone}: {len(missing)} of its {len(want)} tensors missing, "
                          f"{len(wrong)} of another shape (first: {bad[0]}); give timm's "
                          f"{backbone} weights, or train from scratch with --set "
                          "model.pretrained=false")
    encoder.load_state_dict({k: state[n] for k, (n, _) in want.items()})


def build_trained_model(cfg: Mapping, num_classes: int) -> AnymodalSegmentor:
    """The model being trained, at the backbone's own initialisation: the ImageNet weights of
    ``model.pretrained`` (from ``model.pretrained_file`` or timm's hub) or timm's random
    initialisation. Weights that cannot be loaded are a ConfigError that says what to do."""
    m = cfg["model"]
    kwargs = {"drop_path_rate": m["drop_path_rate"]}
    advice = (f"give a local copy with --set model.pretrained_file=PATH (timm's "
              f"{m['backbone']} weights), or train from scratch with --set "
              "model.pretrained=false")
    if m["pretrained_file"]:
        path = Path(m["pretrained_file"]).expanduser()
        if not path.is_file():
            raise ConfigError(f"model.pretrained_file {path} does not exist")
        model = AnymodalSegmentor(tuple(cfg["data"]["modalities"]), num_classes,
                                  backbone=m["backbone"], embed_dim=m["embed_dim"],
                                  pretrained=False, fusion=m["fusion"], backbone_kwargs=kwargs)
        _load_backbone_file(model.encoder, path, m["backbone"])
        return model
    if m["pretrained"]:
        ok, why = _hub_reachable(m["backbone"])
        if not ok:
            raise ConfigError(f"model.pretrained=true: cannot download the ImageNet weights "
                              f"of {m['backbone']}: {why}; {advice}")
    try:
        return AnymodalSegmentor(tuple(cfg["data"]["modalities"]), num_classes,
                                 backbone=m["backbone"], embed_dim=m["embed_dim"],
                                 pretrained=m["pretrained"], fusion=m["fusion"],
                                 backbone_kwargs=kwargs)
    except (OSError, RuntimeError, ValueError, KeyError) as err:
        if not m["pretrained"]:
            raise
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ConfigError(f"model.pretrained=true: the ImageNet weights of {m['backbone']} "
                          f"could not be loaded ({first}); {advice}") from None


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively: the avx512_bf16 or amx_bf16 flag of Linux's
    /proc/cpuinfo (oneDNN also runs bf16 on plain AVX-512, emulated and slow); elsewhere,
    what oneDNN reports."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    flags = {f for line in text.splitlines() if line.startswith("flags")
             for f in line.split(":", 1)[1].split()}
    if flags:
        return bool(flags & {"avx512_bf16", "amx_bf16"})
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def bf16_autocast(amp: str, device: torch.device) -> bool:
    """Whether training runs under bf16 autocast. ``auto``: on a CUDA device with native bf16
    (compute capability 8.0 or newer, Ampere on); older cards emulate it slowly, so they train
    in fp32; on a CPU, fp32. ``bf16``: on any CUDA device (the user asked for it), and on a CPU
    with native bf16 (benchmarks/bench_train.py: 1.2 to 1.5 times the fp32 steps on an AVX-512
    BF16 CPU); on another device it is a ConfigError rather than a setting silently ignored.
    ``off``: never. The losses are computed in fp32 either way."""
    if amp == "off":
        return False
    if device.type != "cuda":
        if amp == "bf16":
            if device.type == "cpu" and cpu_has_bf16():
                return True
            raise ConfigError(f"train.amp=bf16 needs a CUDA device or a CPU with native bf16 "
                              f"(AVX-512 BF16, AMX); this run trains on {device}, which has "
                              f"none (use train.amp=auto or off)")
        return False
    if amp == "bf16":
        return True
    return torch.cuda.get_device_capability(device) >= (8, 0)


def validate(model: torch.nn.Module, cfg: Mapping, device: torch.device, autocast) -> dict:
    """mIoU (%) of every modality subset on ``train.eval_samples`` validation items."""
    from .evaluate import evaluate, model_predictor, report
    from .modalities import all_subsets
    model.eval()
    n = cfg["train"]["eval_samples"]
    dataset = build_dataset(cfg, "val", num_samples=n)
    predict = model_predictor(model, device)
    with autocast():
        results, _, _ = evaluate(predict, dataset, all_subsets(model.modalities),
                                 model.num_classes,
                                 num_samples=n, montage_samples=0, progress=False)
    rep = report(results, class_info(cfg)[0])
    out = {f"val_miou/{name}": r["miou"] for name, r in rep["subsets"].items()}
    out["val_mean_miou"] = rep["mean_miou"]
    return out


def _progress(total: int, start: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, initial=start, desc="train", dynamic_ncols=True,
                disable=not sys.stderr.isatty(), mininterval=1.0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m anyseg_core.train",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, help="YAML config (see config/*.yaml)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config value, e.g. --set optim.lr=1e-4 (repeatable)")
    ap.add_argument("--resume", action="store_true",
                    help="continue from out_dir/last.train.safetensors")
    ap.add_argument("--stop-after", type=int, default=None, metavar="STEP",
                    help="stop at this step (state saved) to --resume later, e.g. to split a "
                         "long run across sessions; the schedule stays that of the whole run")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config, args.set)
    except ConfigError as err:
        ap.error(str(err))
    try:
        train(cfg, resume=args.resume, stop_after=args.stop_after)
    except (ConfigError, ckpt.CheckpointError, FileNotFoundError, DataFileError) as err:
        # A config value only checkable now (no CUDA, a teacher that does not fit), a bad
        # checkpoint, missing training state or a data set that cannot be read (a missing
        # root, a damaged file): one line, not a traceback.
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
