"""Data: CLIP transforms, loaders, and the datasets we register (Occluded-Duke, the synthetic ReID set)."""

from . import datasets, synthetic  # noqa: F401  (registration side effects)
from .build import build_clip_test_loader, build_clip_train_set, build_dataset
from .transforms import build_clip_transforms

__all__ = ["build_clip_test_loader", "build_clip_train_set", "build_dataset", "build_clip_transforms"]
