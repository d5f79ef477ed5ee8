"""Train/test data loaders for the CLIP methods, built on FastReID's datasets, samplers and loaders."""

from __future__ import annotations

import logging
import os
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

from fastreid.data.build import build_reid_test_loader
from fastreid.data.common import CommDataset
from fastreid.data.datasets import DATASET_REGISTRY
from fastreid.utils import comm
from PIL import UnidentifiedImageError

from ..config.validate import (ConfigValueError, check_test_batch_size, combineall_per_source, registered_datasets,
                               unknown_dataset_error, validate_train_config)
from .transforms import build_clip_transforms

__all__ = ["ReIDImageDataset", "build_dataset", "build_clip_train_set", "build_clip_test_loader", "datasets_root",
           "train_items", "training_sources", "background_pid0_items", "query_gallery_items"]

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

    ``sample_fields`` adds per-sample values to every item: ``{name: values}`` with one value per image, aligned
    with ``img_items`` (a tensor indexed on its first dim, or a sequence). It is how a method gets per-image data
    that is not part of FastReID's ``(path, pid, camid)`` item, e.g. a source-domain index or a cached caption
    embedding; the default collate stacks tensors and numbers into batch tensors under the same name.
    """

    def __init__(self, img_items: List[tuple], transform=None, relabel: bool = True,
                 sample_fields: Optional[Mapping[str, Any]] = None):
        super().__init__(img_items, transform, relabel)
        self.sample_fields = dict(sample_fields or {})
        for name, values in self.sample_fields.items():
            if name in ("images", "targets", "camids", "img_paths"):
                raise ValueError(f"sample field '{name}' would overwrite FastReID's item key of the same name")
            if len(values) != len(img_items):
                raise ValueError(f"sample field '{name}' has {len(values)} values for {len(img_items)} images; "
                                 f"it needs one per image, in img_items order")
        if relabel:
            self.cams = sorted(self.cams, key=_natural_key)
            self.cam_dict = {c: i for i, c in enumerate(self.cams)}

    def __getitem__(self, index: int) -> Dict:
        path = self.img_items[index][0]
        try:
            item = super().__getitem__(index)
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
            raise RuntimeError(f"cannot read image '{path}' (index {index}): {type(err).__name__}: {err}. "
                               f"Replace or remove the file.") from err
        for name, values in self.sample_fields.items():
            item[name] = values[index]
        return item


def _dataset_key(cfg, name: str):
    """``(key, value)`` of the config key that names dataset ``name``: DATASETS.NAMES (training) or DATASETS.TESTS."""
    for key in ("NAMES", "TESTS"):
        names = tuple(cfg.DATASETS[key])
        if name in names:
            return f"DATASETS.{key}", names
    return "dataset name", name


def build_dataset(cfg, name: str, **kwargs):
    """Instantiate a registered dataset under :func:`datasets_root` (plus its config-driven arguments).

    An unregistered ``name`` raises :class:`~fastreid_clip.config.validate.ConfigValueError` naming the config key
    it came from (DATASETS.NAMES or DATASETS.TESTS) and the registered names.
    """
    if name not in registered_datasets():
        raise unknown_dataset_error(*_dataset_key(cfg, name), name)
    dataset_cls = DATASET_REGISTRY.get(name)
    # A dataset whose constructor arguments come from the config provides ``kwargs_from_config(cfg)``.
    from_config = getattr(dataset_cls, "kwargs_from_config", None)
    return dataset_cls(root=datasets_root(), **(from_config(cfg) if from_config else {}), **kwargs)


def build_clip_train_set(cfg) -> ReIDImageDataset:
    """Training images of ``DATASETS.NAMES`` (pids and cameras relabelled) with the CLIP train transform.

    First runs :func:`~fastreid_clip.config.validate.validate_train_config`, so a bad config fails before any data
    is generated or read. Batches are planned per epoch by the trainer (:mod:`fastreid_clip.data.samplers`), not by
    a FastReID sampler. With ``INPUT.VIEWS.NUM > 0`` it is a
    :class:`~fastreid_clip.data.multi_view.MultiViewReIDDataset` (items also hold ``"views"``); otherwise a plain
    :class:`ReIDImageDataset`.

    Per-sample fields: a meta-architecture with a ``train_sample_fields(cfg, img_items)`` classmethod returns
    ``{name: values}`` (one value per training item, see :class:`ReIDImageDataset`), added to every item.
    """
    from .multi_view import MultiViewReIDDataset, build_view_transforms

    validate_train_config(cfg)
    views = build_view_transforms(cfg)  # INPUT.VIEWS (checked here, before any data)
    transform = build_clip_transforms(cfg, is_train=True)
    items, sources = train_items(cfg, with_sources=True)
    fields = meta_arch_sample_fields(cfg, items, sources)
    if views:
        return MultiViewReIDDataset(items, transform, views, relabel=True, sample_fields=fields)
    return ReIDImageDataset(items, transform, relabel=True, sample_fields=fields)


def meta_arch_sample_fields(cfg, img_items: List[tuple], sources: Optional[List[int]] = None) -> Dict[str, Any]:
    """``MODEL.META_ARCHITECTURE``'s per-sample training fields (its ``train_sample_fields`` classmethod), or {}.

    A provider that declares a ``sources`` parameter also gets each item's source: the index of its dataset in
    ``DATASETS.NAMES`` (``sources`` here; computed with :func:`train_items` when None)."""
    import inspect

    from fastreid.modeling.meta_arch import META_ARCH_REGISTRY

    provider = getattr(META_ARCH_REGISTRY._obj_map.get(cfg.MODEL.META_ARCHITECTURE), "train_sample_fields", None)
    if provider is None:
        return {}
    if "sources" in inspect.signature(provider).parameters:
        if sources is None:
            _, sources = train_items(cfg, with_sources=True)
        return dict(provider(cfg, img_items, sources=sources))
    return dict(provider(cfg, img_items))


def background_pid0_items(data) -> List[tuple]:
    """The query / gallery images of pid 0 of a dataset whose class lists 0 in ``_junk_pids`` (Market-1501's
    background, which FastReID's ``combine_all`` drops), as ONE training identity in FastReID's combine_all naming:
    pid ``"<dataset_name>_test_0"``, camera ``"<dataset_name>_test_<camid>"``. Pid -1 is never returned; a dataset
    without 0 among its junk pids gives []."""
    if 0 not in getattr(type(data), "_junk_pids", ()):
        return []
    prefix = getattr(data, "dataset_name", "Unknown") + "_test_"
    return [(path, prefix + "0", prefix + str(camid)) for path, pid, camid in list(data.query) + list(data.gallery)
            if pid == 0 and not isinstance(pid, bool)]


def training_sources(cfg):
    """``(index, name, dataset, training items, combined, background)`` of every ``DATASETS.NAMES`` source: built
    with its combineall setting (``combined``, from ``DATASETS.COMBINEALL_PER_SOURCE`` / ``DATASETS.COMBINEALL``) and,
    when combined with ``DATASETS.COMBINEALL_KEEP_PID0``, its background pid-0 images (``background``, else None;
    :func:`background_pid0_items`) appended to the training items. The one place that decides which images of a
    source are training images (:func:`train_items`; CLIP-SCGI's caption files are matched against the same)."""
    combine = combineall_per_source(cfg)
    keep_pid0 = bool(cfg.DATASETS.get("COMBINEALL_KEEP_PID0", False))
    for index, name in enumerate(cfg.DATASETS.NAMES):
        data = build_dataset(cfg, name, combineall=combine[index])
        background = background_pid0_items(data) if combine[index] and keep_pid0 else None
        yield index, name, data, list(data.train) + (background or []), combine[index], background


def train_items(cfg, with_sources: bool = False):
    """The ``(path, pid, camid)`` training items of every ``DATASETS.NAMES`` dataset, logged per dataset; an empty
    result is an error naming the datasets and the root.

    Source ``k`` is built with combineall (FastReID's rule: train + query + gallery, junk pids dropped) when
    ``DATASETS.COMBINEALL_PER_SOURCE[k]`` (or, with that key empty, ``DATASETS.COMBINEALL``) is True. With
    ``DATASETS.COMBINEALL_KEEP_PID0`` such a source also keeps its background pid-0 query / gallery images as one
    extra identity (:func:`background_pid0_items`; Market-1501: 1,502 classes, as the CLIP-FGDI reference).

    With ``with_sources`` returns ``(items, sources)``, ``sources[i]`` being the index in ``DATASETS.NAMES`` of the
    dataset item ``i`` comes from (multi-source training: CLIP-FGDI's domain labels)."""
    items, sources, counts = [], [], []
    for index, name, data, train, combined, background in training_sources(cfg):
        if comm.is_main_process():
            data.show_train()
        items.extend(train)
        sources.extend([index] * len(train))
        counts.append(f"{name}: {len(train)}")
        if comm.is_main_process():
            note = ""
            if background is not None:
                note = (f", background pid 0 kept as one identity ({len(background)} images)" if background else
                        ", no background pid-0 images to keep")
            logger.info(f"training source {index} '{name}': {len(train)} images, "
                        f"{len({pid for _, pid, _ in train})} identities, combineall "
                        f"{'used (train + query + gallery)' if combined else 'not used (train split)'}{note}")
    if not items:
        root = os.path.abspath(datasets_root())
        raise ConfigValueError("DATASETS.NAMES", tuple(cfg.DATASETS.NAMES), "datasets with training images",
                               f"Found no training images under the dataset root '{root}' ($FASTREID_DATASETS; "
                               f"{', '.join(counts)} images): check that the data is there in the layout the "
                               f"dataset expects")
    return (items, sources) if with_sources else items


def query_gallery_items(cfg, dataset_name: str) -> Tuple[List[tuple], int]:
    """``(query + gallery items, number of queries)`` of a test dataset, logged."""
    data = build_dataset(cfg, dataset_name)
    if comm.is_main_process():
        data.show_test()
    return data.query + data.gallery, len(data.query)


def build_clip_test_loader(cfg, dataset_name: str):
    """``(loader, num_query)`` over query + gallery of ``dataset_name`` with the CLIP test transform."""
    batch_size = check_test_batch_size(cfg)
    items, num_query = query_gallery_items(cfg, dataset_name)
    test_set = ReIDImageDataset(items, build_clip_transforms(cfg, is_train=False), relabel=False)
    return build_reid_test_loader(test_set=test_set, test_batch_size=batch_size,
                                  num_query=num_query, num_workers=cfg.DATALOADER.NUM_WORKERS)
