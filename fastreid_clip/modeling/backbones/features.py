"""The feature levels every CLIP image backbone returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

__all__ = ["ClipImageFeatures"]


@dataclass
class ClipImageFeatures:
    """Outputs of a CLIP image backbone for a batch of ``B`` images.

    Attributes:
        inter: ``[B, C_inter]`` intermediate global feature: ViT class token after the second-to-last block
            (no LayerNorm), or the ResNet's average-pooled layer3 map. CLIP-ReID's ``f_last``.
        final: ``[B, C]`` final global feature: ViT class token after ``ln_post``, or the average-pooled
            layer4 map. CLIP-ReID's ``f``.
        proj: ``[B, E]`` projected global feature in the joint image-text space: ``final @ proj`` for ViTs,
            the attention-pool output for ResNets. CLIP-ReID's ``f_proj``; equals open_clip's
            ``encode_image`` at CLIP's own geometry.
        tokens: ``[B, N, C]`` final token sequence (ViT: ``ln_post`` of all tokens, class token first;
            ResNet: the flattened layer4 map, row-major).
        tokens_proj: ``[B, N, E]`` tokens in the joint space (ViT: ``tokens @ proj``), only when requested.
    """

    inter: torch.Tensor
    final: torch.Tensor
    proj: torch.Tensor
    tokens: torch.Tensor
    tokens_proj: Optional[torch.Tensor] = None
