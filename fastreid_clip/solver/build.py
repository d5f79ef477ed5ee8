"""Schedulers from config: ours for our ``SOLVER.SCHED`` names, FastReID's otherwise."""

from __future__ import annotations

from typing import Dict

import torch
from fastreid.solver import build_lr_scheduler as fastreid_build_lr_scheduler

from .lr_scheduler import WarmupMultiStepEpochLR

__all__ = ["build_clip_lr_scheduler", "EPOCH_SCHEDULERS"]

EPOCH_SCHEDULERS = ("WarmupMultiStepEpochLR",)


def build_clip_lr_scheduler(cfg, optimizer: torch.optim.Optimizer, iters_per_epoch: int) -> Dict[str, object]:
    """``{"lr_sched": scheduler}`` as FastReID's ``LRScheduler`` hook and checkpointer expect."""
    solver = cfg.SOLVER
    if solver.SCHED not in EPOCH_SCHEDULERS:
        return fastreid_build_lr_scheduler(cfg, optimizer, iters_per_epoch)
    if solver.WARMUP_ITERS != 0 or solver.DELAY_EPOCHS != 0:
        raise ValueError(f"SOLVER.SCHED {solver.SCHED} warms up per epoch (SOLVER.WARMUP_EPOCHS): set "
                         f"SOLVER.WARMUP_ITERS 0 and SOLVER.DELAY_EPOCHS 0 (got {solver.WARMUP_ITERS}, {solver.DELAY_EPOCHS})")
    return {"lr_sched": WarmupMultiStepEpochLR(optimizer, solver.STEPS, solver.GAMMA, solver.WARMUP_FACTOR,
                                                solver.WARMUP_EPOCHS)}
