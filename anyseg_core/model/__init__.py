"""The anymodal segmentor (shared timm encoder, per-stage fusion, SegFormer head)."""
from .head import SegFormerHead
from .segmentor import AnymodalSegmentor, SegmentorOutput, create_backbone

__all__ = ["AnymodalSegmentor", "SegFormerHead", "SegmentorOutput", "create_backbone"]
