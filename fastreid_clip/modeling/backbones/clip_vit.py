"""CLIP ViT image backbone for ReID: strided (overlapping) patches, resized position table, SIE.

Wraps an open_clip ``VisionTransformer`` (built by :func:`~.clip_model.build_clip_model`) instead of
forking it; only the embedding step is written out, because SIE adds to the class token before the
position table and open_clip has no hook for that. The blocks run through open_clip's
``transformer.forward_intermediates`` (fused attention, gradient checkpointing kept).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from .features import ClipImageFeatures

__all__ = ["ClipViTBackbone"]


class ClipViTBackbone(nn.Module):
    """ViT image encoder returning every feature level the CLIP ReID methods use.

    Args:
        visual: an open_clip ``VisionTransformer`` whose geometry is already adapted.
        num_cameras: rows of the SIE camera table (0 disables the camera part).
        num_views: number of views (vehicles); 0 disables the view part.
        sie_coe: SIE coefficient λ. CLIP-ReID's released SIE+OLP models use 1.0 (its defaults.py says 3.0).
    """

    def __init__(self, visual: nn.Module, num_cameras: int = 0, num_views: int = 0, sie_coe: float = 1.0):
        super().__init__()
        if visual.attn_pool is not None or getattr(visual, "final_ln_after_pool", False) or visual.pool_type != "tok":
            raise ValueError("only class-token ViTs (CLIP's) are supported: no attentional pool, pool_type 'tok'")
        if len(visual.transformer.resblocks) < 2:
            raise ValueError("the ViT needs at least 2 blocks (the intermediate feature is block L-1's class token)")
        self.visual = visual
        self.num_cameras = int(num_cameras)
        self.num_views = int(num_views)
        self.sie_coe = float(sie_coe)
        width = visual.class_embedding.shape[0]
        rows = max(self.num_cameras, 1) * max(self.num_views, 1) if (self.num_cameras or self.num_views) else 0
        if rows:
            # Camera c and view v use row c * n_view + v (cameras only: c; views only: v).
            self.sie_embed = nn.Parameter(torch.zeros(rows, width))
            nn.init.trunc_normal_(self.sie_embed, std=0.02)
        else:
            self.register_parameter("sie_embed", None)
        self.inter_dim = width
        self.final_dim = width
        self.proj_dim = visual.proj.shape[1]

    @property
    def grid_size(self):
        return self.visual.grid_size

    def sie_index(self, camids: Optional[torch.Tensor], viewids: Optional[torch.Tensor]) -> torch.Tensor:
        if self.num_cameras and camids is None:
            raise ValueError("SIE camera embedding is enabled but the batch has no 'camids'")
        if self.num_views and viewids is None:
            raise ValueError("SIE view embedding is enabled but the batch has no 'viewids'")
        if self.num_cameras and self.num_views:
            index = camids * self.num_views + viewids
        else:
            index = camids if self.num_cameras else viewids
        # The range check needs the values on the host: skipped on CUDA to avoid a sync every step.
        if not index.is_cuda and (int(index.min()) < 0 or int(index.max()) >= self.sie_embed.shape[0]):
            raise ValueError(
                f"SIE index out of range [0, {self.sie_embed.shape[0]}): camera/view ids must be 0-based and below "
                f"MODEL.BACKBONE.NUM_CAMERAS / NUM_VIEWS"
            )
        return index

    def embed(self, images: torch.Tensor, camids=None, viewids=None, use_sie: bool = True) -> torch.Tensor:
        """Patch embedding + class token (+ SIE) + position table + ``ln_pre``: ``[B, 1 + h*w, C]``."""
        visual = self.visual
        x = visual.conv1(images.to(visual.conv1.weight.dtype))  # [B, C, h, w]
        x = x.flatten(2).transpose(1, 2)  # [B, h*w, C]
        cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        if self.sie_embed is not None and use_sie:
            cls = cls + self.sie_coe * self.sie_embed[self.sie_index(camids, viewids)].unsqueeze(1).to(x.dtype)
        x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
        x = visual.patch_dropout(x)
        return visual.ln_pre(x)

    def forward(self, images: torch.Tensor, camids: Optional[torch.Tensor] = None,
                viewids: Optional[torch.Tensor] = None, project_tokens: bool = False,
                use_sie: bool = True) -> ClipImageFeatures:
        """Encode ``[B, 3, H, W]`` normalised images into :class:`ClipImageFeatures`.

        ``use_sie=False`` skips the SIE term (CLIP-ReID caches stage-1 features without SIE).
        """
        visual = self.visual
        x = self.embed(images, camids, viewids, use_sie)
        last = len(visual.transformer.resblocks) - 1
        x, (x_inter,) = visual.transformer.forward_intermediates(x, indices=[last - 1])
        tokens = visual.ln_post(x)
        proj = visual.proj.to(tokens.dtype)
        return ClipImageFeatures(
            inter=x_inter[:, 0],
            final=tokens[:, 0],
            proj=tokens[:, 0] @ proj,
            tokens=tokens,
            tokens_proj=tokens @ proj if project_tokens else None,
        )
