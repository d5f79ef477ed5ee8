"""Cross-rank gathering helpers (single-process runs pass tensors through unchanged)."""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["world_size", "all_gather_cat", "broadcast_module"]


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_gather_cat(tensor: torch.Tensor, differentiable: bool = False) -> torch.Tensor:
    """Concatenate equally-shaped tensors from every rank along dim 0, in rank order.

    With ``differentiable=True`` the gradient flows back to every rank's slice
    (``torch.distributed.nn.all_gather``, whose backward sums the gradients of all ranks, as open_clip's
    contrastive losses use); FastReID's ``GatherLayer`` does not all-reduce in backward.
    """
    if world_size() == 1:
        return tensor
    if differentiable:
        from torch.distributed.nn.functional import all_gather

        return torch.cat(all_gather(tensor.contiguous()), dim=0)
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


@torch.no_grad()
def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Copy ``src``'s parameters and buffers to every rank (DDP only does so when it wraps the module, which is too
    late for work done before, such as caching features with the image encoder)."""
    if world_size() == 1:
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src)
