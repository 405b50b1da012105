"""SegFormer's all-MLP decoder."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class SegFormerHead(nn.Module):
    """Per-level linear projection to ``embed_dim``, upsampling to the finest level,
    concatenation, a 1x1 fusion with BN + ReLU, dropout and a 1x1 classifier.

    Input: a list of feature maps (finest first). Output: logits at the finest level's
    resolution (stride 4 for the usual backbones)."""

    def __init__(self, in_channels: Sequence[int], num_classes: int, embed_dim: int = 256,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.proj = nn.ModuleList(nn.Conv2d(c, embed_dim, 1) for c in in_channels)
        self.fuse = nn.Sequential(
            nn.Conv2d(embed_dim * len(in_channels), embed_dim, 1, bias=False),
            nn.BatchNorm2d(embed_dim),
            nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(embed_dim, num_classes, 1)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        size = feats[0].shape[-2:]
        ups = [p(f) if i == 0 else F.interpolate(p(f), size=size, mode="bilinear",
                                                 align_corners=False)
               for i, (p, f) in enumerate(zip(self.proj, feats))]
        return self.classifier(self.dropout(self.fuse(torch.cat(ups, dim=1))))
