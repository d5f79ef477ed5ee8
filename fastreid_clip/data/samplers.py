"""Epoch-indexed batch plans: identity (PK) batches of image indices and random minibatches of cached features.

Both are pure functions of ``(seed, epoch)``, so a run resumed at epoch ``e`` sees exactly the batches an
uninterrupted run sees, and every rank of a distributed run draws the same global plan and takes its slice.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Dict, List, Sequence

import numpy as np

__all__ = ["pk_batches", "random_batches", "fixed_batches", "shard_batch"]


def _rng(seed: int, epoch: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch)])


def _check_positive(name: str, value) -> None:
    """Sizes must be positive integers: a 0 batch would make the PK loop below draw empty batches forever."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def pk_batches(pids: Sequence, num_instances: int, batch_size: int, seed: int, epoch: int) -> List[List[int]]:
    """CLIP-ReID's identity sampler for one epoch: global batches of ``P = batch_size / K`` ids x ``K`` images.

    Each id's images are shuffled (ids with fewer than K images are up-sampled to K with replacement) and cut into
    chunks of K, dropping the remainder. Then, while at least P ids still have chunks, P of them are drawn at
    random and one chunk of each forms the next batch (notes §1.8: the epoch is slightly shorter than
    sum(n' - n' mod K)).

    Args:
        pids: the identity label of every image index.
        num_instances: ``K``.
        batch_size: ``P * K``.
        seed, epoch: the plan is a pure function of these.

    Returns:
        Batches of ``batch_size`` dataset indices.
    """
    _check_positive("batch_size", batch_size)
    _check_positive("num_instances (DATALOADER.NUM_INSTANCE)", num_instances)
    if batch_size % num_instances:
        raise ValueError(f"batch size {batch_size} is not a multiple of DATALOADER.NUM_INSTANCE {num_instances}")
    num_ids = batch_size // num_instances
    rng = _rng(seed, epoch)
    by_pid: Dict[object, List[int]] = defaultdict(list)
    for index, pid in enumerate(pids):
        by_pid[pid].append(index)
    if len(by_pid) < num_ids:
        raise ValueError(f"the training set has {len(by_pid)} identities but a batch needs {num_ids}")
    chunks: Dict[object, List[List[int]]] = {}
    for pid in sorted(by_pid, key=str):
        idxs = np.asarray(by_pid[pid])
        if len(idxs) < num_instances:
            idxs = rng.choice(idxs, size=num_instances, replace=True)
        idxs = rng.permutation(idxs)
        usable = len(idxs) - len(idxs) % num_instances
        chunks[pid] = [idxs[i:i + num_instances].tolist() for i in range(0, usable, num_instances)]
    available = sorted(chunks, key=str)
    batches = []
    while len(available) >= num_ids:
        chosen = rng.choice(len(available), size=num_ids, replace=False)
        batch = []
        for i in chosen:
            batch.extend(chunks[available[i]].pop(0))
        batches.append(batch)
        available = [p for p in available if chunks[p]]
    return batches


def random_batches(num_items: int, batch_size: int, seed: int, epoch: int, multiple_of: int = 1) -> List[List[int]]:
    """A random permutation of ``num_items`` cut into minibatches of ``batch_size`` (CLIP-ReID stage 1).

    The last, partial minibatch is kept (as the reference does), truncated to a multiple of ``multiple_of`` (the
    world size) so that every rank gets an equal slice; an empty remainder is dropped. No items: no batches.
    """
    _check_positive("batch_size", batch_size)
    _check_positive("multiple_of", multiple_of)
    if isinstance(num_items, bool) or not isinstance(num_items, (int, np.integer)) or num_items < 0:
        raise ValueError(f"num_items must be an integer >= 0, got {num_items!r}")
    order = _rng(seed, epoch).permutation(num_items)
    batches = [order[i:i + batch_size].tolist() for i in range(0, num_items, batch_size)]
    if not batches:
        return []
    last = batches[-1]
    batches[-1] = last[:len(last) - len(last) % multiple_of]
    return [b for b in batches if b]


def fixed_batches(num_items: int, batch_size: int) -> List[List[int]]:
    """``0..num_items-1`` in order, cut into full minibatches of ``batch_size``; the remainder is dropped. The same
    plan every epoch (CLIP-FGDI's prompt stages iterate the cached features this way [ref-code])."""
    _check_positive("batch_size", batch_size)
    if isinstance(num_items, bool) or not isinstance(num_items, (int, np.integer)) or num_items < 0:
        raise ValueError(f"num_items must be an integer >= 0, got {num_items!r}")
    return [list(range(i, i + batch_size)) for i in range(0, num_items - batch_size + 1, batch_size)]


def shard_batch(batch: Sequence[int], rank: int, world_size: int) -> List[int]:
    """Rank ``rank``'s contiguous slice of a global batch (PK batches keep whole identities per rank)."""
    if len(batch) % world_size:
        raise ValueError(f"global batch of {len(batch)} does not split over {world_size} processes")
    size = len(batch) // world_size
    return list(batch[rank * size:(rank + 1) * size])
