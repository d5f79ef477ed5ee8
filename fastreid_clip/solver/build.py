"""Optimizer and scheduler of a training stage (a single-stage run's stage comes from ``SOLVER.*``)."""

from __future__ import annotations

import logging

import torch
import torch.nn as nn

from ..config.stages import EPOCH_SCHEDULERS, StageSpec
from ..config.validate import ConfigValueError
from .lr_scheduler import CosineEpochLR, WarmupMultiStepEpochLR
from .optimizer import clip_param_groups, lr_factor_of, unmatched_lr_prefixes

__all__ = ["build_stage_optimizer", "build_stage_scheduler"]

logger = logging.getLogger(__name__)


def _check_lr_factors(model: nn.Module, stage: StageSpec) -> None:
    """Every ``LR_FACTORS`` prefix must match some parameter (a typo would silently leave a module at base lr)."""
    if not stage.lr_factors:
        return
    names = [name for name, _ in model.named_parameters()]
    missing = unmatched_lr_prefixes(names, stage.lr_factors)
    if missing:
        top = sorted({name.split(".")[0] for name in names})
        raise ConfigValueError(stage.config_key("lr_factors"), [list(p) for p in stage.lr_factors],
                               f"prefixes of the model's parameter names (matched by whole dotted components); "
                               f"'{missing[0]}' matches no parameter of {type(model).__name__} (top-level modules: "
                               f"{', '.join(top)})")
    counts = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            factor = lr_factor_of(name, stage.lr_factors)
            counts[factor] = counts.get(factor, 0) + param.numel()
    logger.info("Stage '%s' lr factors %s: %s", stage.name, [list(p) for p in stage.lr_factors],
                ", ".join(f"x{f:g} on {n:,} params" for f, n in sorted(counts.items())))


def build_stage_optimizer(model: nn.Module, stage: StageSpec, bias_match: str = "substring",
                          momentum: float = 0.9, nesterov: bool = False) -> torch.optim.Optimizer:
    """The stage's optimizer (Adam by default: coupled L2 weight decay, as CLIP-ReID) over its trainable params,
    with the stage's per-module lr factors (``LR_FACTORS``)."""
    _check_lr_factors(model, stage)
    groups = clip_param_groups(model, stage.base_lr, stage.weight_decay, stage.bias_lr_factor,
                               stage.weight_decay_bias, bias_match, stage.lr_factors)
    if not groups:
        raise ValueError(f"stage '{stage.name}' has no trainable parameters (TRAINABLE {list(stage.trainable)})")
    if stage.opt == "SGD":
        return torch.optim.SGD(groups, lr=stage.base_lr, momentum=momentum, nesterov=nesterov)
    if not hasattr(torch.optim, stage.opt):
        raise ValueError(f"optimizer '{stage.opt}' is not a torch.optim optimizer")
    return getattr(torch.optim, stage.opt)(groups, lr=stage.base_lr)


def build_stage_scheduler(optimizer: torch.optim.Optimizer, stage: StageSpec):
    """The stage's per-epoch scheduler (stepped by FastReID's ``LRScheduler`` hook after every epoch)."""
    if stage.sched == "WarmupMultiStepEpochLR":
        return WarmupMultiStepEpochLR(optimizer, stage.steps, stage.gamma, stage.warmup_factor, stage.warmup_epochs)
    if stage.sched == "CosineEpochLR":
        return CosineEpochLR(optimizer, stage.epochs, stage.warmup_epochs, stage.warmup_lr_init, stage.eta_min_lr)
    raise ValueError(f"stage '{stage.name}': scheduler '{stage.sched}' is not one of {EPOCH_SCHEDULERS}")
