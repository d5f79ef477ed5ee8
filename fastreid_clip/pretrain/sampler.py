"""Batch plans that are functions of ``(seed, step)``: a resumed run sees exactly the batches it would have seen.

CLIP's loss treats every other caption of the batch as a negative. All captions of one identity describe the
same person (in the synthetic ReID set they are even the same sentence), so with two images of an identity in a
batch each image would be pushed away from a caption that describes it correctly: a false negative, in the
synthetic world a certain one rather than the occasional one of web data. :class:`DistinctIdentityBatches` (the
default) therefore puts at most one image of an identity in a batch; ``"random"`` (plain shuffling) is kept for
comparison.

Epoch ``e`` of :class:`DistinctIdentityBatches` is ``R`` rounds (``R`` = the largest number of images of an
identity). Round ``r`` visits every identity once, in an order drawn from ``(seed, e, r)``, with the image
``perm_i[r mod n_i]`` of identity ``i`` (``perm_i`` drawn from ``(seed, e, i)``), and cuts that order into
batches of ``B``; the last, short batch of a round is filled with the first identities of the round, which are
not in it (``B`` <= number of identities). So every batch has ``B`` distinct identities and every image is seen
about once per epoch.
"""

from __future__ import annotations

from typing import Dict, List

import numpy as np
import torch

__all__ = ["SAMPLERS", "BatchPlan", "DistinctIdentityBatches", "RandomBatches", "build_batch_plan"]

SAMPLERS = ("distinct", "random")


class BatchPlan:
    """``plan.batch(step)``: the corpus indices of the batch of global step ``step`` (0-based)."""

    batches_per_epoch: int

    def __init__(self, seed: int, batch_size: int):
        self.seed, self.batch_size = int(seed), int(batch_size)
        self._cache: Dict[int, np.ndarray] = {}

    def _epoch(self, epoch: int) -> np.ndarray:
        raise NotImplementedError

    def batch(self, step: int) -> torch.Tensor:
        epoch, within = divmod(int(step), self.batches_per_epoch)
        if epoch not in self._cache:
            self._cache = {epoch: self._epoch(epoch)}  # one epoch held at a time
        return torch.from_numpy(self._cache[epoch][within].astype(np.int64))


class DistinctIdentityBatches(BatchPlan):
    def __init__(self, identities: torch.Tensor, batch_size: int, seed: int):
        super().__init__(seed, batch_size)
        ids = np.asarray(identities, dtype=np.int64)
        unique, inverse = np.unique(ids, return_inverse=True)
        if batch_size > len(unique):
            raise ValueError(f"--batch-size {batch_size} is larger than the corpus's {len(unique)} identities: a "
                             f"batch of distinct identities cannot be formed (lower the batch size, add identities, "
                             f"or use --sampler random)")
        self.members: List[np.ndarray] = [np.flatnonzero(inverse == k) for k in range(len(unique))]
        self.rounds = max(len(m) for m in self.members)
        self.per_round = -(-len(unique) // batch_size)
        self.batches_per_epoch = self.rounds * self.per_round

    def _epoch(self, epoch: int) -> np.ndarray:
        num_ids, size = len(self.members), self.batch_size
        perms = [m[np.random.default_rng([self.seed, 11, epoch, i]).permutation(len(m))]
                 for i, m in enumerate(self.members)]
        out = np.empty((self.batches_per_epoch, size), dtype=np.int64)
        row = 0
        for r in range(self.rounds):
            order = np.random.default_rng([self.seed, 12, epoch, r]).permutation(num_ids)
            padded = np.concatenate([order, order[: self.per_round * size - num_ids]])
            for chunk in padded.reshape(self.per_round, size):
                out[row] = [perms[i][r % len(perms[i])] for i in chunk]
                row += 1
        return out


class RandomBatches(BatchPlan):
    """A fresh permutation of all items per epoch, cut into batches (the remainder dropped)."""

    def __init__(self, num_items: int, batch_size: int, seed: int):
        super().__init__(seed, batch_size)
        if batch_size > num_items:
            raise ValueError(f"--batch-size {batch_size} is larger than the corpus ({num_items} images)")
        self.num_items = int(num_items)
        self.batches_per_epoch = num_items // batch_size

    def _epoch(self, epoch: int) -> np.ndarray:
        perm = np.random.default_rng([self.seed, 13, epoch]).permutation(self.num_items)
        return perm[: self.batches_per_epoch * self.batch_size].reshape(self.batches_per_epoch, self.batch_size)


def build_batch_plan(kind: str, identities: torch.Tensor, batch_size: int, seed: int) -> BatchPlan:
    if kind == "distinct":
        return DistinctIdentityBatches(identities, batch_size, seed)
    if kind == "random":
        return RandomBatches(len(identities), batch_size, seed)
    raise ValueError(f"--sampler must be one of {SAMPLERS}, got '{kind}'")
