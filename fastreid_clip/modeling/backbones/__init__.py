"""CLIP image backbones and text encoder built from open_clip."""

from .build import ClipTowers, build_clip_backbone, build_clip_towers
from .clip_model import ClipGeometry, build_clip_model, build_clip_model_from_cfg, register_model_configs
from .clip_resnet import ClipResNetBackbone
from .clip_vit import ClipViTBackbone
from .features import ClipImageFeatures
from .pos_embed import patch_grid, resize_pos_embed
from .text_encoder import CLIPTextEncoder
from .weights import WeightFileError, read_clip_state_dict

__all__ = [
    "ClipTowers", "build_clip_backbone", "build_clip_towers", "ClipGeometry", "build_clip_model",
    "build_clip_model_from_cfg", "register_model_configs", "ClipResNetBackbone", "ClipViTBackbone",
    "ClipImageFeatures", "patch_grid", "resize_pos_embed", "CLIPTextEncoder", "WeightFileError",
    "read_clip_state_dict",
]
