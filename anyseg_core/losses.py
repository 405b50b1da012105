"""Training losses of AnySeg: supervision and teacher -> student distillation.

Stage 1 (the PML teacher) uses :func:`supervised_loss` only. Stage 2 (the anymodal student)
uses :class:`AnySegLoss`, the paper's Eq. 8::

    L = L_sup + lambda * L_mad + alpha * L_umd + beta * L_cmd  (+ gamma * L_fkd, off by default)

Tensor interface (produced by the segmentor):

* ``logits``: ``[B, K, H, W]``; ``labels``: ``[B, H, W]`` int64, ``ignore_index`` (255) = ignore.
* per-modality features: a list of stages (4 for the MiT/PVT backbones), each
  ``[B, M, C_s, H_s, W_s]`` with the modalities in a fixed order. Entries of
  (sample, modality) pairs that are absent for the student may hold anything (zeros, garbage,
  even NaN/inf): they are replaced by zeros before any arithmetic and masked out afterwards,
  so they never reach the value or the gradient.
* ``present``: bool ``[B, M]``, the *student's* present mask (every row has a True entry).
  The teacher always sees every modality; only pairs present for the student are compared.
* fused features: a list of stages, each ``[B, C_s, H_s, W_s]``.

Direction of the KL divergences
-------------------------------
Every distillation term is ``KL(teacher || student) = sum p_T (log p_T - log p_S)``. The
paper writes its KLs with the student distribution first (Eqs. 4, 5 and 7), but the
authors' training code distils teacher-first, which is also the usual knowledge-distillation
direction (the student must cover every mode of the teacher). We use teacher-first.

Temperatures
------------
Distributions are ``softmax(x / tau)``. Every KL (L_mad, L_umd, L_fkd with ``tau``, L_cmd with
``tau_cmd``) is multiplied by the square of its temperature (Hinton et al.), so the size of the
gradients stays comparable when a temperature is changed; at the default ``tau = 1`` this is a
no-op.

Averaging (why: no term may grow with the batch size, the image size or the number of
modalities, so that the weights lambda / alpha / beta keep their meaning across configs)
--------------------------------------------------------------------------------------------
Scale of the KL terms (``kl_reduction``): every KL is *averaged* over the entries of the
distributions it compares, as the authors' training script's ``KLDivLoss(reduction='mean')``
on the whole ``[B, K, H, W]`` tensor does: L_mad's per-pixel KL is divided by the number of
classes K, L_umd's, L_cmd's and L_fkd's per-position (per-pair) KL by the number of channels C
of the stage. The weights 50 / 5 / 10 are meant at this scale. ``kl_reduction="sum"`` keeps
the KL itself (this project's earlier scale, K or C times larger), only to measure the
difference.

* ``L_sup``: cross-entropy per valid pixel (label != ignore_index); mean over the valid (with
  OHEM: kept) pixels *of each sample*, then mean over the samples that have at least one valid
  pixel. A sample's contribution therefore does not depend on how many labelled pixels the
  other samples of the batch have. No valid pixel in the whole batch gives 0 (with a graph).
* ``L_mad``: per pixel ``tau^2 * KL(p_T || p_S) / K`` over the K classes; mean over the valid pixels
  of each sample (all pixels when no labels are given), then mean over samples with at least
  one valid pixel. (The paper's ``1/N sum_i`` over pixels is this for a batch of one.)
* ``L_umd``: per stage, sample, present modality and spatial position, the C channel values
  become a distribution by a softmax over the *channels* (the public proxy code takes the
  softmax over the height axis, a bug). ``tau^2 * KL(T || S)`` per position; mean over
  positions; mean over the sample's present modalities; mean over samples; **sum** over stages
  (as in Eq. 4; the stages are few and fixed).
* ``L_cmd``: per stage and sample, for each unordered pair (a, b) of modalities both present
  for the student in that sample: the per-channel cosine similarity of a's and b's maps over
  the spatial positions (a vector of C values in [-1, 1]), for the student and for the
  teacher; softmax over the channels (``tau_cmd``); ``tau_cmd^2 * KL(T || S)``. Mean over the
  sample's pairs; a sample with fewer than two present modalities contributes 0 and *is*
  counted in the mean over samples (the method says it contributes zero; excluding it would
  make a sample's weight depend on which subsets the rest of the batch drew); sum over
  stages. Pairs never mix samples (the proxy code mixes them, a bug).
* ``L_fkd`` (paper section 5.4, a negative result): the L_umd KL on the fused features; mean
  over positions and samples, sum over stages.

Consequence (tested): for all terms the value of a batch is the plain mean of the values of
its samples computed alone (for L_sup / L_mad: of the samples with a valid pixel), whatever
their numbers of valid pixels, present modalities or pairs; repeating a sample does not change
the value; tiling an image spatially does not change it either.

Numerics: everything is computed in float32 with autocast disabled (inputs may be bf16/fp16,
e.g. under ``torch.autocast``); the outputs are float32 0-dim tensors. No host sync in the loss
math (no ``.item()``, no boolean indexing), so the code runs unchanged on CPU and CUDA.
Teacher tensors are detached inside every function: no gradient ever reaches the teacher,
even if the caller forgot ``torch.no_grad()``.
"""
from __future__ import annotations

import contextlib
import math
from fractions import Fraction
from typing import Any, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F

from .modalities import IGNORE_INDEX

__all__ = [
    "supervised_loss",
    "prediction_distillation",
    "unimodal_distillation",
    "crossmodal_distillation",
    "fused_feature_distillation",
    "AnySegLoss",
]


# --------------------------------------------------------------------------- helpers
def _fp32(t: torch.Tensor):
    """A context that turns autocast off for ``t``'s device (float32 stays float32)."""
    dev = t.device.type
    if torch.amp.is_autocast_available(dev):
        return torch.autocast(device_type=dev, enabled=False)
    return contextlib.nullcontext()


#: How a KL term reduces the entries of the distributions it compares: ``mean`` (the authors'
#: ``KLDivLoss(reduction='mean')``: the KL divided by the number of entries K or C) or ``sum``
#: (the KL itself, this project's earlier scale: K to C times the authors').
KL_REDUCTIONS = ("mean", "sum")
#: Where L_mad is taken: every valid pixel (the paper) or only where the teacher's argmax is
#: the label (this project's variant, docs/method.md).
MAD_PIXELS = ("all", "teacher_correct")


def _check_reduction(reduction: str) -> str:
    if reduction not in KL_REDUCTIONS:
        raise ValueError(f"kl_reduction must be one of {KL_REDUCTIONS}, got {reduction!r}")
    return reduction


def _kl_teacher_student(student: torch.Tensor, teacher: torch.Tensor, dim: int,
                        tau: float, reduction: str = "mean") -> torch.Tensor:
    """``KL(softmax(teacher / tau) || softmax(student / tau))`` along ``dim`` (float32, no tau^2),
    divided by the size of ``dim`` when ``reduction`` is ``mean``.

    The teacher is detached. The result has ``dim`` removed.
    """
    log_p_s = F.log_softmax(student.float() / tau, dim=dim)
    log_p_t = F.log_softmax(teacher.detach().float() / tau, dim=dim)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim)
    return kl / student.shape[dim] if _check_reduction(reduction) == "mean" else kl


def _zero(like: torch.Tensor) -> torch.Tensor:
    return torch.zeros((), dtype=torch.float32, device=like.device)


def _mean_over_samples(per_sample: torch.Tensor, counted: torch.Tensor) -> torch.Tensor:
    """Mean of ``per_sample[b]`` over the samples with ``counted[b]``; 0 when none is counted."""
    counted = counted.to(per_sample.dtype)
    return (per_sample * counted).sum() / counted.sum().clamp(min=1.0)


def _check_tau(tau: float, name: str = "tau") -> float:
    tau = float(tau)
    if not (tau > 0.0 and math.isfinite(tau)):
        raise ValueError(f"{name} must be a positive finite number, got {tau}")
    return tau


def _check_stages(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor],
                  ndim: int, what: str) -> None:
    if len(student) != len(teacher):
        raise ValueError(f"{what}: student has {len(student)} stages, teacher {len(teacher)}")
    if len(student) == 0:
        raise ValueError(f"{what}: no feature stages given")
    for i, (s, t) in enumerate(zip(student, teacher)):
        if s.dim() != ndim:
            raise ValueError(f"{what}: stage {i} must have {ndim} dims, got shape "
                             f"{tuple(s.shape)}")
        if s.shape != t.shape:
            raise ValueError(f"{what}: stage {i} student shape {tuple(s.shape)} != teacher "
                             f"shape {tuple(t.shape)}")


def _check_present(present: torch.Tensor, feat: torch.Tensor, what: str) -> torch.Tensor:
    if present.dim() != 2 or tuple(present.shape) != tuple(feat.shape[:2]):
        raise ValueError(f"{what}: present must be [B, M] = {tuple(feat.shape[:2])}, got "
                         f"{tuple(present.shape)}")
    return present.to(device=feat.device, dtype=torch.bool)


def _sanitise(feat: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """float32 copy of ``[B, M, ...]`` features with absent (sample, modality) entries zeroed.

    ``torch.where`` (not a multiplication) so that NaN/inf garbage in absent entries can reach
    neither the value nor the gradient.
    """
    mask = present.view(*present.shape, *([1] * (feat.dim() - 2)))
    return torch.where(mask, feat.float(), torch.zeros((), dtype=torch.float32,
                                                        device=feat.device))


def _check_logits_labels(logits: torch.Tensor, labels: torch.Tensor) -> None:
    if logits.dim() != 4:
        raise ValueError(f"logits must be [B, K, H, W], got {tuple(logits.shape)}")
    if labels.shape != logits.shape[:1] + logits.shape[2:]:
        want = tuple(logits.shape[:1] + logits.shape[2:])
        raise ValueError(f"labels must be [B, H, W] = {want}, got {tuple(labels.shape)} "
                         "(resize logits or labels first)")


# --------------------------------------------------------------------------- L_sup
def supervised_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX,
                    ohem_thresh: Optional[float] = None,
                    ohem_min_frac: float = 1.0 / 16) -> torch.Tensor:
    """L_sup: cross-entropy of ``logits`` [B, K, H, W] against ``labels`` [B, H, W].

    Pixels labelled ``ignore_index`` are left out.

    Per-sample mean over the sample's valid pixels, then mean over the samples that have a
    valid pixel; 0 (still attached to the graph) when no pixel of the batch is valid.

    With ``ohem_thresh`` (e.g. 0.7) this is OHEM cross-entropy as in the SegFormer / CMNeXt
    training code: a valid pixel is *hard* when the probability of its true class is below
    ``ohem_thresh`` (its loss is above ``-log(ohem_thresh)``); the loss averages the hard
    pixels, but never fewer than ``ceil(ohem_min_frac * n_valid)`` pixels (then the hardest
    ones). Differences from the reference code, on purpose: the selection and the minimum are
    per sample (the reference pools the batch), and the minimum is rounded up (the reference
    floors it, which can select nothing and give NaN).
    """
    _check_logits_labels(logits, labels)
    if ohem_thresh is not None and not 0.0 < float(ohem_thresh) <= 1.0:
        raise ValueError(f"ohem_thresh must be in (0, 1], got {ohem_thresh}")
    if not 0.0 <= float(ohem_min_frac) <= 1.0:
        raise ValueError(f"ohem_min_frac must be in [0, 1], got {ohem_min_frac}")
    with _fp32(logits):
        labels = labels.long()
        valid = (labels != ignore_index).flatten(1)  # [B, N]
        # Ignored pixels get loss 0 (and gradient 0) from cross_entropy itself.
        ce = F.cross_entropy(logits.float(), labels, ignore_index=ignore_index,
                             reduction="none").flatten(1)  # [B, N]
        n_valid = valid.sum(1)  # [B] int64
        if ohem_thresh is None:
            per_sample = ce.sum(1) / n_valid.clamp(min=1)
        else:
            thresh = -math.log(float(ohem_thresh))
            hard = (ce > thresh) & valid
            frac = Fraction(float(ohem_min_frac)).limit_denominator(1_000_000)
            # ceil(n_valid * frac) in exact integer arithmetic.
            n_min = (n_valid * frac.numerator + frac.denominator - 1) // frac.denominator
            n_keep = torch.maximum(hard.sum(1), n_min).clamp(max=n_valid)  # [B]
            # The kept pixels are the n_keep largest losses of the sample: hard pixels are
            # exactly the top ones, and ignored pixels (set to -1 < any CE) sort last.
            ranked, _ = torch.sort(ce.masked_fill(~valid, -1.0), dim=1, descending=True)
            rank = torch.arange(ranked.shape[1], device=ranked.device)
            keep = rank.unsqueeze(0) < n_keep.unsqueeze(1)
            per_sample = (ranked * keep).sum(1) / n_keep.clamp(min=1)
        return _mean_over_samples(per_sample, n_valid > 0)


# --------------------------------------------------------------------------- L_mad
def prediction_distillation(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                            labels: Optional[torch.Tensor] = None, tau: float = 1.0,
                            ignore_index: int = IGNORE_INDEX, reduction: str = "mean",
                            pixels: str = "all") -> torch.Tensor:
    """L_mad: ``tau^2 * KL(p_T || p_S)`` per pixel over the K classes, divided by K
    (``reduction="mean"``, the authors' scale; ``"sum"`` keeps the per-pixel KL).

    ``p = softmax(logits / tau)``.

    Mean over each sample's valid pixels (label != ``ignore_index``; every pixel when
    ``labels`` is None), then mean over the samples with a valid pixel (0 if there is none).
    At batch 1 without ignored pixels this is the mean of the K x H x W pointwise terms, what
    ``KLDivLoss(reduction='mean')`` computed. ``pixels="teacher_correct"`` (needs ``labels``)
    counts the KL only where the teacher's argmax is the label; the mean stays over every
    valid pixel, so a pixel where the teacher is right weighs as in the paper's L_mad and one
    where it is wrong is left to L_sup. The teacher logits are detached.
    """
    tau = _check_tau(tau)
    if pixels not in MAD_PIXELS:
        raise ValueError(f"pixels must be one of {MAD_PIXELS}, got {pixels!r}")
    if pixels == "teacher_correct" and labels is None:
        raise ValueError("pixels='teacher_correct' needs the labels")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} != teacher logits "
                         f"{tuple(teacher_logits.shape)}")
    if labels is not None:
        _check_logits_labels(student_logits, labels)
    elif student_logits.dim() != 4:
        raise ValueError(f"logits must be [B, K, H, W], got {tuple(student_logits.shape)}")
    with _fp32(student_logits):
        kl = _kl_teacher_student(student_logits, teacher_logits, dim=1, tau=tau,
                                 reduction=reduction).flatten(1)
        if labels is None:
            per_sample = kl.mean(1)
            counted = torch.ones_like(per_sample, dtype=torch.bool)
        else:
            valid = (labels != ignore_index).flatten(1)
            n_valid = valid.sum(1)
            # where, not *: a non-finite teacher/student value at an ignored pixel stays out.
            taken = valid
            if pixels == "teacher_correct":
                right = teacher_logits.detach().argmax(1).flatten(1) == labels.flatten(1)
                taken = valid & right
            per_sample = torch.where(taken, kl, 0.0).sum(1) / n_valid.clamp(min=1)
            counted = n_valid > 0
        return _mean_over_samples(per_sample, counted) * (tau * tau)


# --------------------------------------------------------------------------- L_umd
def unimodal_distillation(student_feats: Sequence[torch.Tensor],
                          teacher_feats: Sequence[torch.Tensor], present: torch.Tensor,
                          tau: float = 1.0, reduction: str = "mean") -> torch.Tensor:
    """L_umd (Eq. 4): per-modality feature distillation with a softmax over the CHANNELS.

    For every stage ``[B, M, C, H, W]``, sample and modality present for the student: at each
    spatial position ``softmax(x / tau)`` over the C channels, ``KL(teacher || student)``
    divided by C (``reduction="mean"``; ``"sum"``: the KL itself),
    mean over positions, mean over the sample's present modalities, mean over samples; the
    stages are summed. The result is multiplied by ``tau^2``. Absent entries are ignored
    (whatever they hold); the teacher is detached.
    """
    tau = _check_tau(tau)
    _check_stages(student_feats, teacher_feats, 5, "unimodal_distillation")
    total = _zero(student_feats[0])
    with _fp32(student_feats[0]):
        for s, t in zip(student_feats, teacher_feats):
            p = _check_present(present, s, "unimodal_distillation")
            kl = _kl_teacher_student(_sanitise(s, p), _sanitise(t.detach(), p), dim=2, tau=tau,
                                     reduction=reduction)
            per_mod = kl.flatten(2).mean(2)  # [B, M]
            pf = p.float()
            per_sample = (per_mod * pf).sum(1) / pf.sum(1).clamp(min=1.0)
            total = total + per_sample.mean()
    return total * (tau * tau)


# --------------------------------------------------------------------------- L_cmd
def _channel_cosines(feat: torch.Tensor) -> torch.Tensor:
    """``[B, M, C, H, W]`` (float32) -> ``[B, M, M, C]``: cosine of channel c of modality a and b.

    Each channel map is L2-normalised over the positions, then one batched product gives
    every (a, b) pair of the same sample: pairs never mix samples.
    """
    x = F.normalize(feat.flatten(3), p=2.0, dim=3, eps=1e-12)  # [B, M, C, N]
    return torch.einsum("bacn,bdcn->badc", x, x)


def crossmodal_distillation(student_feats: Sequence[torch.Tensor],
                            teacher_feats: Sequence[torch.Tensor], present: torch.Tensor,
                            tau: float = 1.0, reduction: str = "mean") -> torch.Tensor:
    """L_cmd (Eq. 5): distillation of cross-modal channel correspondences.

    For every stage ``[B, M, C, H, W]``, sample, and unordered pair (a, b) of modalities both
    present for the student in that sample: the vector of the C per-channel cosine
    similarities between a's and b's maps (over the H*W positions), for the student and the
    teacher; ``softmax(cos / tau)`` over the channels; ``KL(teacher || student)`` times
    ``tau^2``, divided by C (``reduction="mean"``). Mean over the sample's pairs; a sample
    with fewer than two present modalities contributes 0 and counts in the mean over samples;
    the stages are summed. Absent entries are ignored; the teacher is detached.
    """
    tau = _check_tau(tau)
    _check_stages(student_feats, teacher_feats, 5, "crossmodal_distillation")
    total = _zero(student_feats[0])
    with _fp32(student_feats[0]):
        for s, t in zip(student_feats, teacher_feats):
            p = _check_present(present, s, "crossmodal_distillation")
            m = p.shape[1]
            cos_s = _channel_cosines(_sanitise(s, p))
            cos_t = _channel_cosines(_sanitise(t.detach(), p))
            kl = _kl_teacher_student(cos_s, cos_t, dim=3, tau=tau,
                                     reduction=reduction)  # [B, M, M]
            upper = torch.ones(m, m, dtype=torch.bool, device=p.device).triu(1)
            pairs = (p.unsqueeze(2) & p.unsqueeze(1) & upper).float()  # [B, M, M]
            per_sample = (kl * pairs).sum((1, 2)) / pairs.sum((1, 2)).clamp(min=1.0)
            total = total + per_sample.mean()
    return total * (tau * tau)


# --------------------------------------------------------------------------- L_fkd
def fused_feature_distillation(student_fused: Sequence[torch.Tensor],
                               teacher_fused: Sequence[torch.Tensor],
                               tau: float = 1.0, reduction: str = "mean") -> torch.Tensor:
    """L_fkd (paper section 5.4): the L_umd channel-softmax KL on the fused ``[B, C, H, W]`` maps.

    ``tau^2 * KL(teacher || student)`` per position over the channels (divided by C with
    ``reduction="mean"``), mean over positions and
    samples, sum over stages. The teacher is detached.
    """
    tau = _check_tau(tau)
    _check_stages(student_fused, teacher_fused, 4, "fused_feature_distillation")
    total = _zero(student_fused[0])
    with _fp32(student_fused[0]):
        for s, t in zip(student_fused, teacher_fused):
            kl = _kl_teacher_student(s, t, dim=1, tau=tau, reduction=reduction)  # [B, H, W]
            total = total + kl.mean()
    return total * (tau * tau)


# --------------------------------------------------------------------------- total
#: The weights of the distillation terms (config keys loss.*): a student with all of them 0
#: trains with L_sup only and needs no teacher.
DISTILLATION_WEIGHTS = ("lambda_mad", "alpha_umd", "beta_cmd", "gamma_fkd")


class AnySegLoss(torch.nn.Module):
    """``L_sup + lambda_mad L_mad + alpha_umd L_umd + beta_cmd L_cmd + gamma_fkd L_fkd`` (Eq. 8).

    ``forward(student_out, teacher_out, labels, present)`` takes two objects with attributes
    ``logits`` [B, K, H, W], ``features`` (stages of [B, M, C, H, W]) and ``fused`` (stages of
    [B, C, H, W]). ``teacher_out=None`` gives L_sup only (teacher stage, dropout-only
    baseline). ``present`` is the student's [B, M] mask; None means every modality present.
    A weight of 0 skips its term entirely (the teacher attribute is not even read);
    ``needs_teacher`` is False when every distillation weight is 0. Returns
    a dict of float32 0-dim tensors: ``loss`` (the weighted total) and the *unweighted*
    components ``sup``, ``mad``, ``umd``, ``cmd``, ``fkd`` (zeros when skipped). The
    components keep their graph: detach them before logging.
    """

    def __init__(self, lambda_mad: float = 50.0, alpha_umd: float = 5.0, beta_cmd: float = 10.0,
                 gamma_fkd: float = 0.0, tau: float = 1.0, tau_cmd: float = 1.0,
                 ohem_thresh: Optional[float] = None, ignore_index: int = IGNORE_INDEX,
                 kl_reduction: str = "mean", mad_pixels: str = "all"):
        super().__init__()
        for name, w in (("lambda_mad", lambda_mad), ("alpha_umd", alpha_umd),
                        ("beta_cmd", beta_cmd), ("gamma_fkd", gamma_fkd)):
            if not (math.isfinite(float(w)) and float(w) >= 0.0):
                raise ValueError(f"{name} must be a finite number >= 0, got {w}")
        if ohem_thresh is not None and not 0.0 < float(ohem_thresh) <= 1.0:
            raise ValueError(f"ohem_thresh must be None or in (0, 1], got {ohem_thresh}")
        self.lambda_mad = float(lambda_mad)
        self.alpha_umd = float(alpha_umd)
        self.beta_cmd = float(beta_cmd)
        self.gamma_fkd = float(gamma_fkd)
        self.tau = _check_tau(tau, "tau")
        self.tau_cmd = _check_tau(tau_cmd, "tau_cmd")
        self.ohem_thresh = None if ohem_thresh is None else float(ohem_thresh)
        self.ignore_index = int(ignore_index)
        self.kl_reduction = _check_reduction(kl_reduction)
        if mad_pixels not in MAD_PIXELS:
            raise ValueError(f"mad_pixels must be one of {MAD_PIXELS}, got {mad_pixels!r}")
        self.mad_pixels = mad_pixels

    _KEYS = (*DISTILLATION_WEIGHTS, "tau", "tau_cmd", "ohem_thresh", "ignore_index",
             "kl_reduction", "mad_pixels")

    @classmethod
    def from_config(cls, cfg: Optional[Mapping[str, Any]]) -> "AnySegLoss":
        """Build from a dict whose keys are ``__init__``'s argument names (all optional)."""
        cfg = dict(cfg or {})
        unknown = sorted(k for k in cfg if k not in cls._KEYS)
        if unknown:
            raise ValueError(f"unknown AnySegLoss config key(s) {unknown}; "
                             f"known: {list(cls._KEYS)}")
        return cls(**cfg)

    @property
    def needs_teacher(self) -> bool:
        """Whether any distillation term is on (else the teacher's forward can be skipped)."""
        return bool(self.lambda_mad or self.alpha_umd or self.beta_cmd or self.gamma_fkd)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={getattr(self, k)}" for k in self._KEYS)

    def forward(self, student_out: Any, teacher_out: Any, labels: torch.Tensor,
                present: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
        logits = student_out.logits
        sup = supervised_loss(logits, labels, ignore_index=self.ignore_index,
                              ohem_thresh=self.ohem_thresh)
        out = {"sup": sup, "mad": _zero(logits), "umd": _zero(logits), "cmd": _zero(logits),
               "fkd": _zero(logits)}
        total = sup
        if teacher_out is not None:
            if self.lambda_mad:
                out["mad"] = prediction_distillation(logits, teacher_out.logits, labels,
                                                     tau=self.tau, ignore_index=self.ignore_index,
                                                     reduction=self.kl_reduction,
                                                     pixels=self.mad_pixels)
                total = total + self.lambda_mad * out["mad"]
            if self.alpha_umd or self.beta_cmd:
                feats = student_out.features
                if present is None:
                    present = torch.ones(feats[0].shape[:2], dtype=torch.bool,
                                         device=feats[0].device)
                if self.alpha_umd:
                    out["umd"] = unimodal_distillation(feats, teacher_out.features, present,
                                                       tau=self.tau, reduction=self.kl_reduction)
                    total = total + self.alpha_umd * out["umd"]
                if self.beta_cmd:
                    out["cmd"] = crossmodal_distillation(feats, teacher_out.features, present,
                                                         tau=self.tau_cmd,
                                                         reduction=self.kl_reduction)
                    total = total + self.beta_cmd * out["cmd"]
            if self.gamma_fkd:
                out["fkd"] = fused_feature_distillation(student_out.fused, teacher_out.fused,
                                                        tau=self.tau, reduction=self.kl_reduction)
                total = total + self.gamma_fkd * out["fkd"]
        out["loss"] = total
        return out
