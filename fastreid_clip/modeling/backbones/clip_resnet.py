"""CLIP ModifiedResNet image backbone (RN50, RN101) for ReID: last stride 1, resized attention pool."""

from __future__ import annotations

import torch
import torch.nn as nn

from .features import ClipImageFeatures

__all__ = ["ClipResNetBackbone"]


class ClipResNetBackbone(nn.Module):
    """ModifiedResNet encoder returning CLIP-ReID's feature levels.

    ``inter`` = GAP(layer3), ``final`` = GAP(layer4), ``proj`` = attention-pool output, ``tokens`` = the
    flattened layer4 map. SIE is not defined for ResNets (the reference silently ignores it; we refuse it
    in :func:`~.build.build_clip_backbone`).

    Args:
        visual: an open_clip ``ModifiedResNet`` whose geometry is already adapted.
    """

    def __init__(self, visual: nn.Module):
        super().__init__()
        self.visual = visual
        self.final_dim = visual.attnpool.k_proj.in_features
        self.inter_dim = self.final_dim // 2
        self.proj_dim = visual.attnpool.c_proj.out_features

    @property
    def grid_size(self):
        return self.visual.grid_size

    def forward(self, images: torch.Tensor, camids=None, viewids=None, project_tokens: bool = False,
                use_sie: bool = True) -> ClipImageFeatures:
        """Encode ``[B, 3, H, W]`` normalised images; ``camids``/``viewids``/``use_sie`` are accepted and unused."""
        visual = self.visual
        x = visual.stem(images.to(visual.conv1.weight.dtype))
        x = visual.layer1(x)
        x = visual.layer2(x)
        x3 = visual.layer3(x)
        x4 = visual.layer4(x3)
        if project_tokens:
            raise NotImplementedError("projected token sequences are only defined for ViT backbones")
        return ClipImageFeatures(
            inter=x3.mean(dim=(2, 3)),
            final=x4.mean(dim=(2, 3)),
            proj=visual.attnpool(x4),
            tokens=x4.flatten(2).transpose(1, 2),
        )
