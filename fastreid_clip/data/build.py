"""Train/test data loaders for the CLIP methods, built on FastReID's datasets, samplers and loaders."""

from __future__ import annotations

import logging
import os
import re
from typing import Dict, List, Tuple

from fastreid.data import samplers
from fastreid.data.build import build_reid_test_loader, build_reid_train_loader
from fastreid.data.common import CommDataset
from fastreid.data.datasets import DATASET_REGISTRY
from fastreid.utils import comm
from PIL import UnidentifiedImageError

from .transforms import build_clip_transforms

__all__ = ["ReIDImageDataset", "build_dataset", "build_clip_train_loader", "build_clip_test_loader", "datasets_root"]

logger = logging.getLogger(__name__)


def datasets_root() -> str:
    """``$FASTREID_DATASETS`` (read at call time, unlike FastReID which reads it once at import), default ``datasets``."""
    return os.getenv("FASTREID_DATASETS", "datasets")


def _natural_key(label) -> Tuple:
    """``"msmt17_10"`` sorts after ``"msmt17_9"``: camera labels keep their numeric order when relabelled."""
    match = re.fullmatch(r"(.*?)(\d+)", str(label))
    return (match.group(1), int(match.group(2))) if match else (str(label), -1)


class ReIDImageDataset(CommDataset):
    """FastReID's ``CommDataset`` with two changes.

    * Training cameras are relabelled in natural numeric order (``market1501_0..5 -> 0..5``), so that for a single
      dataset with 0-based cameras the SIE row of a camera is the same at training and test time (FastReID sorts the
      prefixed strings, which puts ``msmt17_10`` before ``msmt17_2``).
    * An unreadable image raises an error that names the file.
    """

    def __init__(self, img_items: List[tuple], transform=None, relabel: bool = True):
        super().__init__(img_items, transform, relabel)
        if relabel:
            self.cams = sorted(self.cams, key=_natural_key)
            self.cam_dict = {c: i for i, c in enumerate(self.cams)}

    def __getitem__(self, index: int) -> Dict:
        path = self.img_items[index][0]
        try:
            return super().__getitem__(index)
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
            raise RuntimeError(f"cannot read image '{path}' (index {index}): {type(err).__name__}: {err}. "
                               f"Replace or remove the file.") from err


def _dataset_kwargs(cfg, name: str) -> Dict:
    if name == "SyntheticReID":
        from .synthetic import synthetic_kwargs_from_cfg

        return synthetic_kwargs_from_cfg(cfg)
    return {}


def build_dataset(cfg, name: str, **kwargs):
    """Instantiate a registered dataset under :func:`datasets_root` with its config-driven arguments."""
    try:
        dataset_cls = DATASET_REGISTRY.get(name)
    except KeyError:
        raise KeyError(f"dataset '{name}' is not registered in FastReID's DATASET_REGISTRY (registered: "
                       f"{', '.join(sorted(k for k, _ in DATASET_REGISTRY))})") from None
    return dataset_cls(root=datasets_root(), **_dataset_kwargs(cfg, name), **kwargs)


def build_clip_train_loader(cfg):
    """Training loader: datasets of ``DATASETS.NAMES``, CLIP train transforms, FastReID's sampler and loader."""
    items = []
    for name in cfg.DATASETS.NAMES:
        data = build_dataset(cfg, name, combineall=cfg.DATASETS.COMBINEALL)
        if comm.is_main_process():
            data.show_train()
        items.extend(data.train)
    train_set = ReIDImageDataset(items, build_clip_transforms(cfg, is_train=True), relabel=True)

    name = cfg.DATALOADER.SAMPLER_TRAIN
    mini_batch = cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size()
    num_instance = cfg.DATALOADER.NUM_INSTANCE
    if name == "TrainingSampler":
        sampler = samplers.TrainingSampler(len(train_set))
    elif name in ("NaiveIdentitySampler", "BalancedIdentitySampler"):
        per_batch = mini_batch // num_instance
        if mini_batch % num_instance or per_batch < 2:
            raise ValueError(f"SOLVER.IMS_PER_BATCH per process ({mini_batch}) must be a multiple of "
                             f"DATALOADER.NUM_INSTANCE ({num_instance}) with at least 2 identities per batch")
        if train_set.num_classes < per_batch:
            # FastReID's identity samplers loop forever in this case.
            raise ValueError(f"the training set has {train_set.num_classes} identities but a batch needs {per_batch} "
                             f"(SOLVER.IMS_PER_BATCH / DATALOADER.NUM_INSTANCE per process)")
        sampler = getattr(samplers, name)(train_set.img_items, mini_batch, num_instance)
    else:
        raise ValueError(f"DATALOADER.SAMPLER_TRAIN '{name}' is not supported: use TrainingSampler, "
                         f"NaiveIdentitySampler or BalancedIdentitySampler")
    return build_reid_train_loader(train_set, sampler=sampler, total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
                                   num_workers=cfg.DATALOADER.NUM_WORKERS)


def build_clip_test_loader(cfg, dataset_name: str):
    """``(loader, num_query)`` over query + gallery of ``dataset_name`` with the CLIP test transform."""
    data = build_dataset(cfg, dataset_name)
    if comm.is_main_process():
        data.show_test()
    test_set = ReIDImageDataset(data.query + data.gallery, build_clip_transforms(cfg, is_train=False), relabel=False)
    return build_reid_test_loader(test_set=test_set, test_batch_size=cfg.TEST.IMS_PER_BATCH,
                                  num_query=len(data.query), num_workers=cfg.DATALOADER.NUM_WORKERS)
