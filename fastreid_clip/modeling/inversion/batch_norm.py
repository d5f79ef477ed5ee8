"""BatchNorm1d whose training statistics cover the global batch of a distributed run."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn

from ...utils.distributed import all_gather_cat, world_size

__all__ = ["GlobalBatchNorm1d"]


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` that, in training under DDP, normalises with the statistics of the *global* batch.

    The local ``[b, C]`` inputs of all ranks are gathered (differentiably: the backward sums every rank's gradient
    into each rank's slice), normalised together and the local slice is returned, so the outputs, the gradients and
    the running statistics are those of one process seeing the whole batch (PromptSG trains on one GPU with 64
    images; per-rank statistics over 64 / world images would be another model). Every rank must pass the same
    number of rows. Single-process runs and evaluation are exactly ``nn.BatchNorm1d`` (same parameter and buffer
    names, so checkpoints are interchangeable). This is SyncBatchNorm's job, but SyncBatchNorm only runs on CUDA,
    not under gloo on the CPU.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and world_size() > 1):
            return super().forward(x)
        local = x.shape[0]
        out = super().forward(all_gather_cat(x, differentiable=True))
        start = dist.get_rank() * local
        return out[start:start + local]
