"""Metric-learning losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["pairwise_euclidean", "batch_hard_triplet_loss"]


def pairwise_euclidean(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``[N, M]`` Euclidean distances ``sqrt(max(|x_i - y_j|², 1e-12))`` (CLIP-ReID's clamp)."""
    x, y = x.float(), y.float()
    sq = x.pow(2).sum(1, keepdim=True) + y.pow(2).sum(1).unsqueeze(0) - 2.0 * (x @ y.t())
    return sq.clamp(min=1e-12).sqrt()


def batch_hard_triplet_loss(features: torch.Tensor, targets: torch.Tensor, margin: float = 0.3) -> torch.Tensor:
    """Batch-hard triplet loss (Hermans et al. 2017) on un-normalised features.

    Per anchor: the farthest positive and the closest negative in the batch. ``margin > 0``: mean
    ``max(0, d_ap - d_an + margin)``; ``margin == 0``: soft margin, mean ``log(1 + exp(d_ap - d_an))``.

    Args:
        features: ``[B, D]`` embeddings.
        targets: ``[B]`` identity labels; every anchor needs a positive (itself counts) and a negative.
        margin: hinge margin, or 0 for the soft margin.

    Returns:
        Scalar loss.
    """
    dist = pairwise_euclidean(features, features)
    same = targets.unsqueeze(0) == targets.unsqueeze(1)
    dist_ap = dist.masked_fill(~same, float("-inf")).max(dim=1).values
    dist_an = dist.masked_fill(same, float("inf")).min(dim=1).values
    if margin > 0:
        return F.relu(dist_ap - dist_an + margin).mean()
    return F.softplus(dist_ap - dist_an).mean()
