"""Optimizer and scheduler of a training stage (a single-stage run's stage comes from ``SOLVER.*``)."""

from __future__ import annotations

import torch
import torch.nn as nn

from ..config.stages import EPOCH_SCHEDULERS, StageSpec
from .lr_scheduler import CosineEpochLR, WarmupMultiStepEpochLR
from .optimizer import clip_param_groups

__all__ = ["build_stage_optimizer", "build_stage_scheduler"]


def build_stage_optimizer(model: nn.Module, stage: StageSpec, bias_match: str = "substring",
                          momentum: float = 0.9, nesterov: bool = False) -> torch.optim.Optimizer:
    """The stage's optimizer (Adam by default: coupled L2 weight decay, as CLIP-ReID) over its trainable params."""
    groups = clip_param_groups(model, stage.base_lr, stage.weight_decay, stage.bias_lr_factor,
                               stage.weight_decay_bias, bias_match)
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
