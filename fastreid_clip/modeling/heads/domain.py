"""Gradient reversal and a small domain classifier (CLIP-FGDI's adversarial and monitor heads; usable on any
feature).

Gradient reversal (Ganin & Lempitsky, "Unsupervised Domain Adaptation by Backpropagation", ICML 2015): the identity
in the forward pass, the incoming gradient multiplied by ``-strength`` in the backward pass, so a classifier trained
on top of it makes the features *below* it less predictive of what it classifies.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

__all__ = ["GradientReversal", "GradientReversalLayer", "grad_reverse", "DomainClassifier"]


def _check_strength(strength) -> float:
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not strength >= 0:
        raise ValueError(f"gradient reversal strength must be a number >= 0 (MODEL.FGDI.GRL_STRENGTH), got "
                         f"{strength!r}")
    return float(strength)


class GradientReversal(torch.autograd.Function):
    """``y = x`` forward; ``dL/dx = -strength * dL/dy`` backward (no gradient to ``strength``)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, strength: float) -> torch.Tensor:
        ctx.strength = strength
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        return grad_output.neg() * ctx.strength, None


def grad_reverse(x: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """Functional gradient reversal: ``x`` unchanged, its gradient multiplied by ``-strength``."""
    return GradientReversal.apply(x, _check_strength(strength))


class GradientReversalLayer(nn.Module):
    """Module form of :func:`grad_reverse` (no parameters).

    Args:
        strength: ``lambda >= 0``, the factor of the reversed gradient. CLIP-FGDI: the paper names the GRL without a
            coefficient; the reference code uses 0.1 (``MODEL.FGDI.GRL_STRENGTH``).
    """

    def __init__(self, strength: float = 1.0):
        super().__init__()
        self.strength = _check_strength(strength)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return GradientReversal.apply(x, self.strength)

    def extra_repr(self) -> str:
        return f"strength={self.strength:g}"


class DomainClassifier(nn.Module):
    """``Linear(in_dim -> hidden) -> BatchNorm1d -> ReLU -> Linear(hidden -> num_domains)`` returning logits.

    CLIP-FGDI [ref-code]: ``in_dim = 512`` (the text feature), ``hidden = 128``; the reference applies log-softmax and
    NLL, which equals cross-entropy on these logits. With ``grl_strength`` set, a :class:`GradientReversalLayer`
    precedes the first linear layer (the adversarial classifier of stage ``id_prompt``); without, it is a plain
    classifier (the monitor of stage ``domain_prompt``, fed detached features).

    Args:
        in_dim: input feature dimension.
        num_domains: number of domains (classes), >= 1.
        hidden_dim: width of the hidden layer.
        grl_strength: None = no reversal; otherwise the reversal strength (>= 0).
    """

    def __init__(self, in_dim: int, num_domains: int, hidden_dim: int = 128, grl_strength: Optional[float] = None):
        super().__init__()
        for name, value in (("in_dim", in_dim), ("num_domains", num_domains), ("hidden_dim", hidden_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DomainClassifier {name} must be a positive integer, got {value!r}")
        self.grl = GradientReversalLayer(grl_strength) if grl_strength is not None else nn.Identity()
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.bn = nn.BatchNorm1d(hidden_dim)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden_dim, num_domains)

    @property
    def num_domains(self) -> int:
        return self.fc2.out_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, in_dim]`` features -> ``[B, num_domains]`` logits (float32)."""
        x = self.grl(features.float())
        return self.fc2(self.relu(self.bn(self.fc1(x))))
