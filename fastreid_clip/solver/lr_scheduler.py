"""Epoch-indexed learning-rate schedules of the CLIP ReID papers."""

from __future__ import annotations

from bisect import bisect_right
from typing import List, Sequence

import torch
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["WarmupMultiStepEpochLR", "warmup_multistep_factor"]


def warmup_multistep_factor(epoch: int, milestones: Sequence[int], gamma: float, warmup_factor: float,
                            warmup_epochs: int) -> float:
    """lr multiplier of 1-based ``epoch`` in CLIP-ReID's stage-2 schedule.

    ``w(e) * gamma ** #{m in milestones : m <= e}`` with ``w(e) = wf + (1 - wf) * e / W`` for ``e < W``, else 1.
    ViT (wf 0.1, W 10, milestones 30/50): e1 0.19, e5 0.55, e9 0.91, e10-29 1, e30-49 0.1, e50-60 0.01.
    """
    warm = warmup_factor + (1.0 - warmup_factor) * epoch / warmup_epochs if epoch < warmup_epochs else 1.0
    return warm * gamma ** bisect_right(sorted(milestones), epoch)


class WarmupMultiStepEpochLR(LRScheduler):
    """CLIP-ReID's WarmupMultiStepLR, stepped once per epoch (``last_epoch`` = 0-based epoch index).

    The lr is constant within an epoch; during 0-based epoch ``k`` it is ``base * warmup_multistep_factor(k + 1)``.
    FastReID's ``LRScheduler`` hook steps ``lr_sched`` after every epoch, so this plugs into its engine unchanged.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, milestones: Sequence[int], gamma: float = 0.1,
                 warmup_factor: float = 0.1, warmup_epochs: int = 10, last_epoch: int = -1):
        self.milestones = list(milestones)
        self.gamma = gamma
        self.warmup_factor = warmup_factor
        self.warmup_epochs = warmup_epochs
        super().__init__(optimizer, last_epoch)

    def factor(self, epoch_index: int) -> float:
        return warmup_multistep_factor(epoch_index + 1, self.milestones, self.gamma, self.warmup_factor,
                                       self.warmup_epochs)

    def get_lr(self) -> List[float]:
        return [base * self.factor(self.last_epoch) for base in self.base_lrs]
