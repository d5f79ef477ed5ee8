"""Per-epoch training data of a stage: loaders of augmented images, or minibatches of cached features."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

import torch
from fastreid.data.build import fast_batch_collator
from torch.utils.data import DataLoader, Dataset

from .samplers import fixed_batches, pk_batches, random_batches, shard_batch

__all__ = ["ImageEpochs", "FeatureEpochs", "BATCH_ORDERS"]


class _EpochPlan:
    """Global batch size, seed and this process's place in the world, shared by the plans below."""

    def __init__(self, batch_size: int, seed: int, rank: int, world_size: int):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch size must be a positive integer, got {batch_size!r}")
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} does not split over {world_size} processes")
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size


class ImageEpochs(_EpochPlan):
    """Training images batched per epoch: PK batches (identity sampler) or random batches, sharded by rank.

    Args:
        dataset: training set (``ReIDImageDataset`` with the train transform).
        batch_size: global batch size.
        num_instances: images per identity in a PK batch; 0 = random batches (``TrainingSampler``).
        num_workers: loader workers.
        seed: the batch plan and the worker seeds are functions of ``(seed, epoch)``.
        rank, world_size: this process and the number of processes.
    """

    def __init__(self, dataset: Dataset, batch_size: int, num_instances: int, num_workers: int, seed: int,
                 rank: int = 0, world_size: int = 1):
        super().__init__(batch_size, seed, rank, world_size)
        if isinstance(num_instances, bool) or not isinstance(num_instances, int) or num_instances < 0:
            raise ValueError(f"num_instances must be an integer >= 0 (0 = random batches), got {num_instances!r}")
        self.dataset = dataset
        self.pids = [item[1] for item in dataset.img_items]
        self.num_instances = num_instances
        self.num_workers = num_workers

    @staticmethod
    def instances_for(cfg, stage) -> int:
        """``num_instances`` of ``stage``'s image batches from ``cfg`` (0 for ``TrainingSampler``), checked:
        :func:`fastreid_clip.config.validate.pk_num_instances`."""
        from ..config.validate import pk_num_instances

        return pk_num_instances(cfg, stage)

    def global_batches(self, epoch: int) -> List[List[int]]:
        if self.num_instances:
            return pk_batches(self.pids, self.num_instances, self.batch_size, self.seed, epoch)
        batches = random_batches(len(self.pids), self.batch_size, self.seed, epoch)
        return [b for b in batches if len(b) == self.batch_size]  # drop_last, as FastReID's loader

    def nominal_iters(self) -> int:
        return len(self.global_batches(0))

    def epoch(self, epoch: int) -> DataLoader:
        batches = [shard_batch(b, self.rank, self.world_size) for b in self.global_batches(epoch)]
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch * 101 + self.rank) % (2 ** 63))
        return DataLoader(self.dataset, batch_sampler=batches, num_workers=self.num_workers,
                          collate_fn=fast_batch_collator, generator=generator,
                          pin_memory=torch.cuda.is_available())


BATCH_ORDERS = ("shuffle", "fixed")


class FeatureEpochs(_EpochPlan):
    """Minibatches of cached features: a new random permutation every epoch (``order="shuffle"``, CLIP-ReID stage 1,
    the last partial minibatch kept), or the cached rows in training-set order, the same full minibatches every
    epoch with the remainder dropped (``order="fixed"``, CLIP-FGDI's prompt stages [ref-code]).

    Args:
        features: ``[N, D]`` cached image features (on the training device).
        labels: ``[N]`` identity labels.
        batch_size: global minibatch size; each rank takes its contiguous slice.
        seed: the permutation of epoch ``e`` is a function of ``(seed, e)``, identical on every rank.
        fields: the training set's per-sample fields (``ReIDImageDataset.sample_fields``: ``{name: values}``, one
            value per cached row, in the same order), added to every minibatch as ``batch[name]``: tensors are
            indexed on their first dim (on the features' device), other sequences give a list. So a method reads
            e.g. ``batch["domains"]`` in a cached-feature stage exactly as in an image stage.
        order: ``"shuffle"`` or ``"fixed"`` (:data:`BATCH_ORDERS`; ``STAGES.<NAME>.BATCH_ORDER``).
    """

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1, fields: Optional[Mapping[str, Any]] = None, order: str = "shuffle"):
        super().__init__(batch_size, seed, rank, world_size)
        if order not in BATCH_ORDERS:
            raise ValueError(f"batch order must be one of {BATCH_ORDERS}, got {order!r}")
        self.order = order
        self.features = features
        self.labels = labels
        self.fields = {}
        for name, values in (fields or {}).items():
            if name in ("features", "targets"):
                raise ValueError(f"sample field '{name}' would overwrite the cached-feature batch key of that name")
            if len(values) != len(labels):
                raise ValueError(f"sample field '{name}' has {len(values)} values for {len(labels)} cached features")
            self.fields[name] = values.to(features.device) if torch.is_tensor(values) else values

    def nominal_iters(self) -> int:
        return len(self._global(0))

    def _global(self, epoch: int) -> List[List[int]]:
        if self.order == "fixed":
            return fixed_batches(len(self.labels), self.batch_size)
        return random_batches(len(self.labels), self.batch_size, self.seed, epoch, multiple_of=self.world_size)

    def epoch(self, epoch: int) -> List[Dict[str, torch.Tensor]]:
        out = []
        for batch in self._global(epoch):
            index = torch.as_tensor(shard_batch(batch, self.rank, self.world_size), device=self.features.device)
            item = {"features": self.features[index], "targets": self.labels[index]}
            for name, values in self.fields.items():
                item[name] = values[index] if torch.is_tensor(values) else [values[i] for i in index.tolist()]
            out.append(item)
        return out
