"""The anymodal segmentor: one shared encoder, fusion after every stage, SegFormer head.

Teacher and student are the same class (docs/method.md). All present (sample, modality)
pairs of a batch are encoded in ONE backbone pass; modalities meet only in the fusion.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..modalities import check_modalities
from .head import SegFormerHead

FUSIONS = ("mean", "primary")
MISSING = ("drop", "zero")


@dataclass
class SegmentorOutput:
    """logits: [B, K, H, W] at the INPUT resolution (the head's stride-4 logits upsampled
    bilinearly). features: 4 stages of per-modality maps [B, M, C_s, H_s, W_s], zeros for
    absent pairs. fused: 4 stages [B, C_s, H_s, W_s]. present: the [B, M] mask used."""

    logits: torch.Tensor
    features: list[torch.Tensor]
    fused: list[torch.Tensor]
    present: torch.Tensor


def create_backbone(name: str, pretrained: bool = False, **kwargs) -> tuple[nn.Module, list[int]]:
    """A timm backbone returning its last four feature levels, and their channels.

    ``pretrained=True`` uses timm's own weight loading (needs the internet or a local HF
    cache); the project's machines train from scratch."""
    import timm

    try:
        probe = timm.create_model(name, pretrained=False, features_only=True, **kwargs)
    except Exception as err:  # unknown names and unsupported backbones alike
        raise ValueError(f"cannot build timm backbone {name!r} with features_only=True: "
                         f"{err}") from err
    n = len(probe.feature_info)
    if n < 4:
        raise ValueError(f"backbone {name!r} has {n} feature levels; 4 are needed")
    out_indices = tuple(range(n - 4, n))
    if pretrained or out_indices != tuple(range(4)):
        probe = timm.create_model(name, pretrained=pretrained, features_only=True,
                                  out_indices=out_indices, **kwargs)
    return probe, list(probe.feature_info.channels())


class AnymodalSegmentor(nn.Module):
    """Semantic segmentation from any non-empty subset of ``modalities``.

    Args:
        modalities: modality names in a fixed order (the order of ``present``'s columns).
        num_classes: number of output classes.
        backbone: any timm model with at least 4 feature levels (``features_only``).
        embed_dim: the SegFormer head's embedding dimension (256 as in SegFormer-B0).
        pretrained: load timm's pretrained weights (needs the internet).
        fusion: ``mean`` (AnySeg / PML: masked mean over the present modalities after each
            stage) or ``primary`` (a CMNeXt-like baseline: the first modality's features plus
            a learned projection of the mean of the other present modalities; a missing
            primary leaves zeros, no other present leaves the projection's input zeros).
        head_dropout: dropout before the classifier.
        backbone_kwargs: passed to ``timm.create_model`` (e.g. ``drop_path_rate``).
    """

    def __init__(self, modalities: Sequence[str], num_classes: int,
                 backbone: str = "pvt_v2_b0", embed_dim: int = 256, pretrained: bool = False,
                 fusion: str = "mean", head_dropout: float = 0.1,
                 backbone_kwargs: Optional[dict] = None) -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        self.modalities = check_modalities(modalities)
        self.num_classes = int(num_classes)
        self.fusion = fusion
        self.backbone_name = backbone
        self.embed_dim = int(embed_dim)
        self.head_dropout = float(head_dropout)
        self.backbone_kwargs = dict(backbone_kwargs or {})
        self.encoder, channels = create_backbone(backbone, pretrained, **(backbone_kwargs or {}))
        self.channels = channels
        self.head = SegFormerHead(channels, num_classes, embed_dim, head_dropout)
        if fusion == "primary":
            self.aux_proj = nn.ModuleList(nn.Conv2d(c, c, 1, bias=False) for c in channels)

    @property
    def num_modalities(self) -> int:
        return len(self.modalities)

    def present_from(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The mask "every modality given in ``inputs`` is present for every sample"."""
        ref = next(iter(inputs.values()))
        mask = torch.tensor([m in inputs for m in self.modalities], device=ref.device)
        return mask.expand(ref.shape[0], -1).clone()

    def forward(self, inputs: Mapping[str, torch.Tensor],
                present: Optional[torch.Tensor] = None, missing: str = "drop") -> SegmentorOutput:
        """``inputs``: modality -> [B, 3, H, W] (H, W divisible by 32); modalities absent for
        every sample may be left out. ``present``: bool [B, M] in the order of
        ``self.modalities`` (default: the modalities given). ``missing="zero"`` feeds zeros
        for absent pairs and keeps them in the fusion (an evaluation protocol of the
        authors' later code); the default ``drop`` leaves them out."""
        if missing not in MISSING:
            raise ValueError(f"missing must be one of {MISSING}, got {missing!r}")
        ref = self._check_inputs(inputs)
        B, _, H, W = ref.shape
        present = self.present_from(inputs) if present is None else present
        present = self._check_present(present, inputs, B, ref.device)
        given = present  # the pairs whose data is used; under "zero" the others are zeros
        if missing == "zero":
            present = torch.ones_like(present)
        # (sample, modality) pairs, modality-major: one gather per modality, one encoder pass.
        pairs = present.t().nonzero()  # [P, 2] as (m, b)
        m_idx, b_idx = pairs[:, 0], pairs[:, 1]
        x = ref.new_zeros((pairs.shape[0], 3, H, W))
        start = 0
        for m, name in enumerate(self.modalities):
            count = int(present[:, m].sum())  # a sync on CUDA, needed for the variable size
            if count:
                if name in inputs:
                    rows = b_idx[start:start + count]
                    keep = given[rows, m].view(-1, 1, 1, 1)
                    x[start:start + count] = torch.where(keep, inputs[name][rows], 0.0)
                start += count
        if ref.is_cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        feats = self.encoder(x)
        features, fused = [], []
        weight = present.to(feats[0].dtype)
        for s, f in enumerate(feats):
            per_mod = f.new_zeros((B, self.num_modalities) + tuple(f.shape[1:]))
            per_mod[b_idx, m_idx] = f
            features.append(per_mod)
            fused.append(self.fuse(s, per_mod, weight))
        return SegmentorOutput(logits=self.decode(fused, (H, W)), features=features,
                               fused=fused, present=present)

    def fuse(self, stage: int, per_mod: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Fuse one stage: ``per_mod`` [B, M, C, h, w] (zeros for absent pairs), ``weight``
        the present mask [B, M] as floats; returns [B, C, h, w]."""
        B = per_mod.shape[0]
        if self.fusion == "mean":
            return per_mod.sum(1) / weight.sum(1).clamp(min=1.0).view(B, 1, 1, 1)
        # the mean of the auxiliary modalities that are present (none: zeros)
        n_aux = weight[:, 1:].sum(1).clamp(min=1.0).view(B, 1, 1, 1)
        others = per_mod[:, 1:].sum(1) / n_aux
        return per_mod[:, 0] + self.aux_proj[stage](others)

    def decode(self, fused: Sequence[torch.Tensor], size_hw: Sequence[int]) -> torch.Tensor:
        """The head on the fused stages; logits [B, K, H, W] at ``size_hw`` (bilinear)."""
        logits = self.head(fused)
        return F.interpolate(logits, size=tuple(size_hw), mode="bilinear", align_corners=False)

    def _check_inputs(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if not inputs:
            raise ValueError("inputs is empty: give at least one modality")
        unknown = [m for m in inputs if m not in self.modalities]
        if unknown:
            raise ValueError(f"inputs has modalities {unknown} the model was not built for "
                             f"(it knows {list(self.modalities)})")
        ref = next(iter(inputs.values()))
        for name, x in inputs.items():
            if x.ndim != 4 or x.shape[1] != 3 or x.shape != ref.shape:
                raise ValueError(f"input {name!r} has shape {tuple(x.shape)}; every input must "
                                 f"be [B, 3, H, W] with the same B, H, W as {tuple(ref.shape)}")
        H, W = ref.shape[-2:]
        if H % 32 or W % 32:
            raise ValueError(f"input size {H}x{W} is not divisible by 32")
        return ref

    def _check_present(self, present, inputs, B, device) -> torch.Tensor:
        present = torch.as_tensor(present, device=device).bool()
        if tuple(present.shape) != (B, self.num_modalities):
            raise ValueError(f"present must be bool [B, M] = [{B}, {self.num_modalities}], "
                             f"got {tuple(present.shape)}")
        if not bool(present.any(1).all()):
            raise ValueError("every sample needs at least one present modality")
        for m, name in enumerate(self.modalities):
            if name not in inputs and bool(present[:, m].any()):
                raise ValueError(f"present marks {name!r} present but inputs has no {name!r}")
        return present
