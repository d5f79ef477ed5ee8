"""Identity classification losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["cross_entropy_label_smooth"]


def cross_entropy_label_smooth(logits: torch.Tensor, targets: torch.Tensor, epsilon: float = 0.1) -> torch.Tensor:
    """Cross-entropy with label smoothing in CLIP-ReID's form (paper Eq. 6).

    ``q_k = (1 - eps) * [k == y] + eps / K`` and ``L = -mean_i sum_k q_ik log softmax(z_i)_k``. FastReID's own
    ``cross_entropy_loss`` uses ``eps / (K - 1)`` on the non-target classes instead.

    Args:
        logits: ``[B, K]`` class scores.
        targets: ``[B]`` class indices.
        epsilon: smoothing ``eps`` in ``[0, 1)``.

    Returns:
        Scalar batch-mean loss.
    """
    if not 0.0 <= epsilon < 1.0:
        raise ValueError(f"label smoothing epsilon must be in [0, 1), got {epsilon!r}")
    log_probs = F.log_softmax(logits.float(), dim=1)
    nll = -log_probs.gather(1, targets.long().unsqueeze(1)).squeeze(1)
    uniform = -log_probs.mean(dim=1)
    return ((1.0 - epsilon) * nll + epsilon * uniform).mean()
