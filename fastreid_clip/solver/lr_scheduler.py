"""Epoch-indexed learning-rate schedules of the CLIP ReID papers."""

from __future__ import annotations

import math
from bisect import bisect_right
from typing import List, Sequence

import torch
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["WarmupMultiStepEpochLR", "warmup_multistep_factor", "CosineEpochLR", "cosine_epoch_lr"]


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


def cosine_epoch_lr(epoch: int, base_lr: float, total_epochs: int, warmup_epochs: int, warmup_lr_init: float,
                    eta_min: float) -> float:
    """lr of 1-based ``epoch`` in CLIP-ReID's stage-1 schedule (timm ``CosineLRScheduler`` semantics).

    Warm-up ``lr = warmup_lr_init + e * (base - warmup_lr_init) / W`` for ``e < W``; afterwards
    ``eta_min + (base - eta_min) * (1 + cos(pi * e / E)) / 2``, the cosine not shifted by the warm-up.
    Base 3.5e-4, E 120, W 5, init 1e-5, min 1e-6: e1 7.8e-5, e4 2.82e-4, e5 3.485e-4, e60 1.755e-4, e120 1e-6.
    """
    if epoch < warmup_epochs:
        return warmup_lr_init + epoch * (base_lr - warmup_lr_init) / warmup_epochs
    return eta_min + 0.5 * (base_lr - eta_min) * (1.0 + math.cos(math.pi * epoch / total_epochs))


class CosineEpochLR(LRScheduler):
    """:func:`cosine_epoch_lr` stepped once per epoch (``last_epoch`` = 0-based epoch index, lr uses ``k + 1``)."""

    def __init__(self, optimizer: torch.optim.Optimizer, total_epochs: int, warmup_epochs: int = 5,
                 warmup_lr_init: float = 1e-5, eta_min: float = 1e-6, last_epoch: int = -1):
        self.total_epochs = total_epochs
        self.warmup_epochs = warmup_epochs
        self.warmup_lr_init = warmup_lr_init
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> List[float]:
        return [cosine_epoch_lr(self.last_epoch + 1, base, self.total_epochs, self.warmup_epochs,
                                self.warmup_lr_init, self.eta_min) for base in self.base_lrs]
