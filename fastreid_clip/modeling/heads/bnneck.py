"""BN-neck with a bias-free identity classifier (CLIP-ReID's heads)."""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn as nn

__all__ = ["BNNeckClassifier"]


class BNNeckClassifier(nn.Module):
    """``BatchNorm1d`` (bias frozen at 0) followed by a bias-free linear classifier.

    CLIP-ReID [ref-code ``make_model_clipreid.py``]: BN weight 1 / bias 0 with the bias excluded from training,
    classifier weights drawn from N(0, 0.001²).

    Args:
        in_dim: feature dimension.
        num_classes: number of training identities.
    """

    def __init__(self, in_dim: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(in_dim)
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)
        self.bn.bias.requires_grad_(False)
        self.classifier = nn.Linear(in_dim, num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, features: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``[B, D]`` features -> (``[B, D]`` BN features, ``[B, num_classes]`` logits)."""
        bn = self.bn(features)
        return bn, self.classifier(bn)
