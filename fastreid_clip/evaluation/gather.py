"""Order-preserving gathering of per-rank evaluation tensors onto one rank.

FastReID's ``ReidEvaluator`` pickles every rank's predictions with ``comm.gather`` and concatenates them in
rank order, then splits query from gallery at ``num_query``. That is only right when rank ``r`` holds the
``r``-th contiguous block of the test set. FastReID 1.4.0's ``InferenceSampler`` does shard that way, but
nothing checks it: a loader with an interleaving sampler (``DistributedSampler`` also pads with repeated
samples) silently mixes query and gallery and scores garbage.

:func:`gather_to_main` gathers tensors (on the GPU with NCCL, on the CPU with gloo) and restores dataset
order in one of two ways:

* with dataset indices (``indices``): items are sorted by index and repeated indices (sampler padding) are
  dropped; the indices must then be exactly ``0..N-1``;
* without: the per-rank counts must be those of ``InferenceSampler`` (rank ``r`` holds items
  ``[r * ceil(N / W), (r + 1) * ceil(N / W))``), and the blocks are concatenated in rank order.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.distributed as dist

__all__ = ["gather_to_main", "inference_shard_sizes"]


def inference_shard_sizes(total: int, world_size: int) -> list[int]:
    """Items per rank under FastReID's ``InferenceSampler`` (contiguous shards of ``ceil(N / W)``).

    Args:
        total: N, the dataset size.
        world_size: W, the number of ranks.

    Returns:
        ``[W]`` shard sizes.
    """
    shard = (total - 1) // world_size + 1 if total else 0
    return [max(0, min(shard, total - rank * shard)) for rank in range(world_size)]


def gather_to_main(
    tensors: Sequence[torch.Tensor], indices: Optional[torch.Tensor] = None, dst: int = 0
) -> Optional[list[torch.Tensor]]:
    """Gathers same-length tensors from every rank onto ``dst``, in dataset order.

    Every rank must call this (it is a collective). Without an initialised process group it only reorders.

    Args:
        tensors: this rank's tensors, each ``[n, ...]`` with the same ``n``; any device.
        indices: ``[n]`` int64 dataset index of each item, or None to rely on contiguous
            ``InferenceSampler`` shards.
        dst: rank that receives the result.

    Returns:
        On ``dst``, the tensors of all ranks, ``[N, ...]`` each, in dataset order, on the devices of the inputs;
        ``None`` on the other ranks.

    Raises:
        RuntimeError: if the shards do not fit the chosen ordering contract.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return _to_dataset_order(list(tensors), indices)

    world_size, rank = dist.get_world_size(), dist.get_rank()
    comm_device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    local = torch.tensor([tensors[0].shape[0]], dtype=torch.int64, device=comm_device)
    sizes = [torch.zeros_like(local) for _ in range(world_size)]
    dist.all_gather(sizes, local)
    sizes = [int(size) for size in sizes]
    if indices is None and sizes != inference_shard_sizes(sum(sizes), world_size):
        raise RuntimeError(
            f"per-rank item counts {sizes} are not the contiguous InferenceSampler shards of {sum(sizes)} items: "
            "rank-order concatenation would mix query and gallery; provide dataset indices"
        )

    payload = list(tensors) if indices is None else [*tensors, indices]
    gathered = [_gather_padded(tensor, sizes, dst, comm_device) for tensor in payload]
    if rank != dst:
        return None
    if indices is None:
        return gathered
    return _to_dataset_order(gathered[:-1], gathered[-1])


def _gather_padded(tensor: torch.Tensor, sizes: list[int], dst: int, comm_device) -> Optional[torch.Tensor]:
    """``dist.gather`` of rows of unequal count: pad to the largest count, gather, trim, concatenate.

    Args:
        tensor: ``[n, ...]`` this rank's rows.
        sizes: ``[W]`` row counts of all ranks.
        dst: receiving rank.
        comm_device: device the backend communicates on.

    Returns:
        ``[sum(sizes), ...]`` on ``dst`` (on ``tensor``'s device), else None.
    """
    padded = torch.zeros((max(sizes), *tensor.shape[1:]), dtype=tensor.dtype, device=comm_device)
    padded[: tensor.shape[0]] = tensor
    receive = [torch.empty_like(padded) for _ in sizes] if dist.get_rank() == dst else None
    dist.gather(padded, receive, dst=dst)
    if receive is None:
        return None
    return torch.cat([part[:size] for part, size in zip(receive, sizes)]).to(tensor.device)


def _to_dataset_order(tensors: list[torch.Tensor], indices: Optional[torch.Tensor]) -> list[torch.Tensor]:
    """Sorts rows by dataset index and drops repeated indices (sampler padding).

    Args:
        tensors: ``[n, ...]`` tensors.
        indices: ``[n]`` dataset indices, or None to keep the order.

    Returns:
        The tensors in dataset order.

    Raises:
        RuntimeError: if the unique indices are not ``0..N-1``.
    """
    if indices is None:
        return tensors
    indices = indices.to(torch.int64)
    sorted_indices, order = torch.sort(indices, stable=True)
    first = torch.ones_like(sorted_indices, dtype=torch.bool)
    first[1:] = sorted_indices[1:] != sorted_indices[:-1]
    order, unique = order[first], sorted_indices[first]
    if not torch.equal(unique, torch.arange(unique.numel(), device=unique.device)):
        raise RuntimeError("gathered dataset indices are not 0..N-1: some samples are missing")
    return [tensor[order.to(tensor.device)] for tensor in tensors]
