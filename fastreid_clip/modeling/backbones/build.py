"""Registry entry points for the CLIP backbones (FastReID's ``BACKBONE_REGISTRY``)."""

from __future__ import annotations

from typing import NamedTuple

import torch.nn as nn
from fastreid.modeling.backbones import BACKBONE_REGISTRY

from .clip_model import build_clip_model_from_cfg, is_vit
from .clip_resnet import ClipResNetBackbone
from .clip_vit import ClipViTBackbone
from .text_encoder import CLIPTextEncoder

__all__ = ["ClipTowers", "build_clip_towers", "build_clip_backbone"]


class ClipTowers(NamedTuple):
    """The image backbone and the matching text encoder, loaded from the same weight file."""

    image: nn.Module
    text: CLIPTextEncoder


def _image_backbone(cfg, visual: nn.Module) -> nn.Module:
    bb = cfg.MODEL.BACKBONE
    if is_vit(visual):
        num_cameras = bb.NUM_CAMERAS if bb.SIE_CAMERA else 0
        num_views = bb.NUM_VIEWS if bb.SIE_VIEW else 0
        if bb.SIE_CAMERA and num_cameras <= 0:
            raise ValueError("MODEL.BACKBONE.SIE_CAMERA is on but MODEL.BACKBONE.NUM_CAMERAS is 0 (the trainer "
                             "sets it from the training set; set it yourself when building a model alone)")
        if bb.SIE_VIEW and num_views <= 0:
            raise ValueError("MODEL.BACKBONE.SIE_VIEW is on but MODEL.BACKBONE.NUM_VIEWS is 0")
        return ClipViTBackbone(visual, num_cameras=num_cameras, num_views=num_views, sie_coe=bb.SIE_COE)
    if bb.SIE_CAMERA or bb.SIE_VIEW:
        raise ValueError(f"SIE (MODEL.BACKBONE.SIE_CAMERA/SIE_VIEW) is only defined for ViT backbones, not "
                         f"'{bb.CLIP_NAME}' (CLIP-ReID ignores it silently for RN50); switch it off")
    return ClipResNetBackbone(visual)


def build_clip_towers(cfg) -> ClipTowers:
    """Image backbone and text encoder from ``MODEL.BACKBONE.*`` (one read of the weight file)."""
    model = build_clip_model_from_cfg(cfg)
    return ClipTowers(_image_backbone(cfg, model.visual), CLIPTextEncoder.from_open_clip(model, cfg.MODEL.BACKBONE.CLIP_NAME))


@BACKBONE_REGISTRY.register()
def build_clip_backbone(cfg) -> nn.Module:
    """CLIP image backbone (ViT or ModifiedResNet, chosen by ``MODEL.BACKBONE.CLIP_NAME``)."""
    return _image_backbone(cfg, build_clip_model_from_cfg(cfg).visual)
