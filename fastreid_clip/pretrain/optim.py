"""AdamW with CLIP's weight-decay rule and a per-step cosine schedule with linear warm-up.

Weight decay applies to weight matrices and convolution kernels only: biases, normalisation weights,
``logit_scale`` and embeddings (token, position and class embeddings) are excluded, the rule of CLIP and
open_clip's training script (which excludes ``ndim < 2``, norms, biases and ``logit_scale``) with the embedding
tables added. The schedule is stateless: the learning rate of step ``t`` is a function of ``t`` alone, so resuming
only needs the step count.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Dict, List

import torch
import torch.nn as nn

__all__ = ["decay_split", "build_optimizer", "CosineWarmup"]

_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)


def decay_split(model: nn.Module) -> Dict[str, List[str]]:
    """``{"decay": [names], "no_decay": [names]}`` of the trainable parameters of ``model``."""
    norm_params = {id(p) for m in model.modules() if isinstance(m, _NORMS) for p in m.parameters(recurse=False)}
    split: Dict[str, List[str]] = {"decay": [], "no_decay": []}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        leaf = name.rsplit(".", 1)[-1]
        exempt = (param.ndim < 2 or id(param) in norm_params or leaf == "bias" or leaf.endswith("_bias")
                  or "logit_scale" in name or "embedding" in leaf or "token_embedding" in name)
        split["no_decay" if exempt else "decay"].append(name)
    return split


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, betas=(0.9, 0.98), eps: float = 1e-6,
                    device: torch.device = torch.device("cpu")) -> torch.optim.AdamW:
    """AdamW over two groups (decay / no decay); ``fused`` on CUDA, ``foreach`` elsewhere. CLIP's betas and eps."""
    params = dict(model.named_parameters())
    split = decay_split(model)
    groups = [{"params": [params[n] for n in split["decay"]], "weight_decay": weight_decay},
              {"params": [params[n] for n in split["no_decay"]], "weight_decay": 0.0}]
    kwargs = {"fused": True} if device.type == "cuda" else {"foreach": True}
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, **kwargs)


@dataclass(frozen=True)
class CosineWarmup:
    """``lr(t)``: linear from ``base_lr / warmup`` to ``base_lr`` over the first ``warmup`` steps, then cosine to
    ``min_lr`` at ``total`` (open_clip's ``cosine_lr`` with a floor)."""

    base_lr: float
    total: int
    warmup: int
    min_lr: float = 0.0

    def lr(self, step: int) -> float:
        if step < self.warmup:
            return self.base_lr * (step + 1) / self.warmup
        span = max(1, self.total - self.warmup)
        progress = min(1.0, (step - self.warmup) / span)
        return self.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (self.base_lr - self.min_lr)

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        value = self.lr(step)
        for group in optimizer.param_groups:
            group["lr"] = value
        return value

    def state_dict(self) -> dict:
        return asdict(self)
