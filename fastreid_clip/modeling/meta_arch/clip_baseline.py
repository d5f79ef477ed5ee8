"""CLIP-ReID's "baseline": the CLIP image encoder fine-tuned with ReID losses (no text)."""

from __future__ import annotations

from typing import Dict, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from fastreid.config import configurable
from fastreid.modeling.backbones import build_backbone
from fastreid.modeling.meta_arch import META_ARCH_REGISTRY

from ...config.validate import ConfigValueError, check_label_smoothing
from ..backbones.features import ClipImageFeatures
from ..heads import BNNeckClassifier
from ..losses import batch_hard_triplet_loss, cross_entropy_label_smooth

__all__ = ["ClipBaseline"]


@META_ARCH_REGISTRY.register()
class ClipBaseline(nn.Module):
    """CLIP image encoder + two BN-neck classifiers, trained with ID and triplet losses.

    Training (CLIP-ReID baseline, paper Tab. 2 "baseline" rows):
    ``L = w_id * [CE_ls(cls(BN f)) + CE_ls(cls_proj(BN f_proj))] + w_tri * sum_{x in triplet features} Tri(x)``
    with label-smoothed CE in CLIP-ReID's form and batch-hard triplet (margin 0.3) on the intermediate,
    final and projected features. Inference: ``concat(f, f_proj)`` before BN, L2-normalised
    (1280-d for ViT-B/16, 3072-d for RN50).

    Args:
        backbone: a CLIP image backbone returning :class:`ClipImageFeatures`.
        num_classes: training identities.
        pixel_mean, pixel_std: normalisation on FastReID's 0-255 scale (CLIP-ReID ViT: 127.5/127.5).
        id_weight, tri_weight: loss weights (``MODEL.LOSSES.CE.SCALE`` / ``TRI.SCALE``).
        label_smooth: CE smoothing ``eps``.
        tri_margin: triplet margin (0 = soft margin).
        tri_features: backbone levels the triplet loss is applied to.
        neck_feat: "before" (CLIP-ReID's released configs) or "after" the BN for the test feature.
        test_feat_norm: L2-normalise the test feature.
    """

    @configurable
    def __init__(self, *, backbone: nn.Module, num_classes: int, pixel_mean: Sequence[float],
                 pixel_std: Sequence[float], id_weight: float = 1.0, tri_weight: float = 1.0,
                 label_smooth: float = 0.1, tri_margin: float = 0.3,
                 tri_features: Sequence[str] = ("inter", "final", "proj"), neck_feat: str = "before",
                 test_feat_norm: bool = True):
        super().__init__()
        if num_classes <= 0:
            raise ConfigValueError("MODEL.HEADS.NUM_CLASSES", num_classes, "the number of training identities (> 0)",
                                   "ClipTrainer sets it from the training set and --eval-only from the checkpoint's "
                                   "head.classifier.weight; set it yourself when building the model alone")
        check_label_smoothing("MODEL.LOSSES.CE.EPSILON", label_smooth)
        if neck_feat not in ("before", "after"):
            raise ValueError(f"MODEL.HEADS.NECK_FEAT must be 'before' or 'after', got '{neck_feat}'")
        unknown = set(tri_features) - {"inter", "final", "proj"}
        if unknown:
            raise ValueError(f"MODEL.LOSSES.TRI.FEATURES: unknown levels {sorted(unknown)}; use inter, final, proj")
        self.backbone = backbone
        self.head = BNNeckClassifier(backbone.final_dim, num_classes)
        self.head_proj = BNNeckClassifier(backbone.proj_dim, num_classes)
        self.id_weight = id_weight
        self.tri_weight = tri_weight
        self.label_smooth = label_smooth
        self.tri_margin = tri_margin
        self.tri_features = tuple(tri_features)
        self.neck_feat = neck_feat
        self.test_feat_norm = test_feat_norm
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(1, -1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(1, -1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg) -> Dict:
        return cls.baseline_args(cfg, build_backbone(cfg))

    @staticmethod
    def baseline_args(cfg, backbone: nn.Module) -> Dict:
        """Constructor arguments of the baseline part, for ``backbone`` (subclasses build it with the text tower)."""
        losses = cfg.MODEL.LOSSES
        return {
            "backbone": backbone,
            "num_classes": cfg.MODEL.HEADS.NUM_CLASSES,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "id_weight": losses.CE.SCALE,
            "tri_weight": losses.TRI.SCALE,
            "label_smooth": losses.CE.EPSILON,
            "tri_margin": losses.TRI.MARGIN,
            "tri_features": losses.TRI.FEATURES,
            "neck_feat": cfg.MODEL.HEADS.NECK_FEAT,
            "test_feat_norm": cfg.MODEL.HEADS.TEST_FEAT_NORM,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess_image(self, batched_inputs: Dict) -> torch.Tensor:
        """Normalise 0-255 images out of place (FastReID's Baseline does it in place, which breaks flip-test)."""
        images = batched_inputs["images"] if isinstance(batched_inputs, dict) else batched_inputs
        images = images.to(self.device, non_blocking=True)
        return (images - self.pixel_mean) / self.pixel_std

    def extract(self, batched_inputs: Dict, **backbone_kwargs) -> ClipImageFeatures:
        """Backbone features of a batch; ``backbone_kwargs`` go to the backbone (e.g. ``project_tokens=True``)."""
        camids = batched_inputs.get("camids") if isinstance(batched_inputs, dict) else None
        viewids = batched_inputs.get("viewids") if isinstance(batched_inputs, dict) else None
        if camids is not None:
            camids = camids.to(self.device, non_blocking=True)
        if viewids is not None:
            viewids = viewids.to(self.device, non_blocking=True)
        return self.backbone(self.preprocess_image(batched_inputs), camids=camids, viewids=viewids, **backbone_kwargs)

    def forward(self, batched_inputs: Dict):
        feats = self.extract(batched_inputs)
        if not self.training:
            return self.inference_feature(feats)
        targets = batched_inputs["targets"].to(self.device, non_blocking=True)
        return self.losses(feats, targets)

    def inference_feature(self, feats: ClipImageFeatures) -> torch.Tensor:
        """``[B, final_dim + proj_dim]`` retrieval feature."""
        final, proj = feats.final, feats.proj
        if self.neck_feat == "after":
            final, proj = self.head.bn(final), self.head_proj.bn(proj)
        out = torch.cat([final, proj], dim=1).float()
        return F.normalize(out, dim=1) if self.test_feat_norm else out

    def losses(self, feats: ClipImageFeatures, targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        _, logits = self.head(feats.final)
        _, logits_proj = self.head_proj(feats.proj)
        loss_id = cross_entropy_label_smooth(logits, targets, self.label_smooth) + \
            cross_entropy_label_smooth(logits_proj, targets, self.label_smooth)
        loss_tri = sum(batch_hard_triplet_loss(getattr(feats, name), targets, self.tri_margin)
                       for name in self.tri_features)
        return {"loss_id": self.id_weight * loss_id, "loss_triplet": self.tri_weight * loss_tri}
