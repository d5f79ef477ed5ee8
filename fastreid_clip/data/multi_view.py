"""Training sets that return extra augmented views of every image (``INPUT.VIEWS``), for self-supervised losses.

With ``INPUT.VIEWS.NUM = V > 0`` each training item carries, besides the usual ``"images"`` (the train pipeline),
``"views"``: ``[V, 3, H, W]``, ``V`` further draws of the *view pipeline* from the same decoded image, so a batch
has ``"views"`` ``[B, V, 3, H, W]``. The view pipeline is the train pipeline (``INPUT.*``: resize, flip, pad + crop,
colour jitter) with its own random erasing (``INPUT.VIEWS.REA.ENABLED/PROB/AREA``; mode, aspect range and attempts
from ``INPUT.REA``). With ``V = 0`` (the default) the training set is the plain ``ReIDImageDataset``: batches are
unchanged. Used by SVLL-ReID's image stage (two views, erasing of a fixed 1/3 area).
"""

from __future__ import annotations

from typing import Callable, List, Sequence, Tuple

import torch
from fastreid.config import CfgNode as CN

from ..config.validate import ConfigValueError
from .build import ReIDImageDataset
from .transforms import build_clip_transforms

__all__ = ["MultiViewReIDDataset", "add_multi_view_config", "check_view_config", "build_view_transforms"]


def add_multi_view_config(cfg: CN) -> None:
    """Add ``INPUT.VIEWS``: extra augmented views per training image (none by default)."""
    cfg.INPUT.VIEWS = CN()
    cfg.INPUT.VIEWS.NUM = 0  # extra views per training image (batch key "views" [B, NUM, 3, H, W]); 0 = none [ours]
    cfg.INPUT.VIEWS.REA = CN()  # random erasing of the views (replaces INPUT.REA's ENABLED/PROB/AREA for them)
    cfg.INPUT.VIEWS.REA.ENABLED = True
    cfg.INPUT.VIEWS.REA.PROB = 0.5  # SVLL-ReID views: p 0.5 [ref-code]
    cfg.INPUT.VIEWS.REA.AREA = (0.33, 1.0 / 3.0)  # a fixed ~1/3 of the image (paper beta = 1/3) [both]


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_view_config(cfg) -> int:
    """The number of extra views, after checking ``INPUT.VIEWS.*`` (:class:`ConfigValueError` naming the key)."""
    views = cfg.INPUT.VIEWS
    if isinstance(views.NUM, bool) or not isinstance(views.NUM, int) or views.NUM < 0:
        raise ConfigValueError("INPUT.VIEWS.NUM", views.NUM, "an integer >= 0 (extra augmented views per training "
                                                             "image; 0 = none)")
    if not _is_number(views.REA.PROB) or not 0 <= views.REA.PROB <= 1:
        raise ConfigValueError("INPUT.VIEWS.REA.PROB", views.REA.PROB, "an erasing probability in [0, 1]")
    area = tuple(views.REA.AREA)
    if len(area) != 2 or not all(_is_number(a) for a in area) or not 0 < area[0] <= area[1] < 1:
        raise ConfigValueError("INPUT.VIEWS.REA.AREA", area, "(min, max) erased area fractions with "
                                                             "0 < min <= max < 1 (SVLL-ReID: (0.33, 1/3))")
    return views.NUM


def build_view_transforms(cfg) -> List[Callable]:
    """``INPUT.VIEWS.NUM`` view pipelines: the train pipeline with ``INPUT.VIEWS.REA`` as its erasing."""
    num = check_view_config(cfg)
    if not num:
        return []
    view_cfg = cfg.clone()
    view_cfg.defrost()
    view_cfg.INPUT.REA.ENABLED = cfg.INPUT.VIEWS.REA.ENABLED
    view_cfg.INPUT.REA.PROB = cfg.INPUT.VIEWS.REA.PROB
    view_cfg.INPUT.REA.AREA = tuple(cfg.INPUT.VIEWS.REA.AREA)
    transform = build_clip_transforms(view_cfg, is_train=True)
    return [transform] * num


class _MainAndViews:
    """``image -> (transform(image), [V, 3, H, W] stacked views)``: one decode, then the main draw and the views."""

    def __init__(self, transform: Callable, view_transforms: Sequence[Callable]):
        self.transform = transform
        self.view_transforms = list(view_transforms)

    def __call__(self, image) -> Tuple[torch.Tensor, torch.Tensor]:
        main = self.transform(image) if self.transform is not None else image
        return main, torch.stack([t(image) for t in self.view_transforms])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(main={self.transform!r}, views={len(self.view_transforms)})"


class MultiViewReIDDataset(ReIDImageDataset):
    """:class:`ReIDImageDataset` whose items also hold ``"views"``: ``[V, 3, H, W]`` extra draws of one image.

    Args:
        img_items: ``(path, pid, camid)`` items.
        transform: the main image's transform (``"images"``).
        view_transforms: one transform per extra view (at least one).
        relabel: relabel pids and cameras (training).
    """

    def __init__(self, img_items: List[tuple], transform: Callable, view_transforms: Sequence[Callable],
                 relabel: bool = True, sample_fields=None):
        if not view_transforms:
            raise ValueError("MultiViewReIDDataset needs at least one view transform (use ReIDImageDataset)")
        super().__init__(img_items, _MainAndViews(transform, view_transforms), relabel, sample_fields)
        self.num_views = len(view_transforms)

    def __getitem__(self, index: int):
        item = super().__getitem__(index)
        item["images"], item["views"] = item["images"]
        return item
