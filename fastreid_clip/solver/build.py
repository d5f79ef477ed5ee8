"""Optimizers and schedulers from config: per training stage, or from FastReID's ``SOLVER.*`` keys."""

from __future__ import annotations

from typing import Dict

import torch
import torch.nn as nn
from fastreid.solver import build_lr_scheduler as fastreid_build_lr_scheduler

from ..config.stages import StageSpec, solver_stage
from .lr_scheduler import CosineEpochLR, WarmupMultiStepEpochLR
from .optimizer import clip_param_groups

__all__ = ["build_stage_optimizer", "build_stage_scheduler", "build_clip_optimizer", "build_clip_lr_scheduler",
           "EPOCH_SCHEDULERS"]

EPOCH_SCHEDULERS = ("WarmupMultiStepEpochLR", "CosineEpochLR")


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


def build_clip_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """Optimizer of a single-stage run from ``SOLVER.*``."""
    s = cfg.SOLVER
    return build_stage_optimizer(model, solver_stage(cfg), s.BIAS_LR_MATCH, s.MOMENTUM, s.NESTEROV)


def build_clip_lr_scheduler(cfg, optimizer: torch.optim.Optimizer, iters_per_epoch: int) -> Dict[str, object]:
    """``{"lr_sched": scheduler}`` for ``SOLVER.SCHED``: ours for our names, FastReID's otherwise."""
    solver = cfg.SOLVER
    if solver.SCHED not in EPOCH_SCHEDULERS:
        return fastreid_build_lr_scheduler(cfg, optimizer, iters_per_epoch)
    if solver.WARMUP_ITERS != 0 or solver.DELAY_EPOCHS != 0:
        raise ValueError(f"SOLVER.SCHED {solver.SCHED} warms up per epoch (SOLVER.WARMUP_EPOCHS): set "
                         f"SOLVER.WARMUP_ITERS 0 and SOLVER.DELAY_EPOCHS 0 (got {solver.WARMUP_ITERS}, {solver.DELAY_EPOCHS})")
    return {"lr_sched": build_stage_scheduler(optimizer, solver_stage(cfg))}
