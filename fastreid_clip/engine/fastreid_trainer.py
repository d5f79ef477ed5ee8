"""Support for FastReID's own ``DefaultTrainer`` with fastreid-clip's single-stage configs.

``import fastreid_clip`` calls :func:`apply`, which changes four things on fastreid's module objects (no fastreid
file is edited), so that an unmodified ``fastreid.engine.DefaultTrainer`` - or a user's subclass of it, in their own
``train_net.py`` - trains ``configs/CLIP-Baseline/*.yml`` and ``configs/Synthetic/clip_baseline_*.yml``:

* ``build_lr_scheduler`` knows our per-epoch schedulers. FastReID builds ``SOLVER.SCHED`` by name from a fixed table
  of arguments (``MultiStepLR``, ``CosineAnnealingLR``); for ``WarmupMultiStepEpochLR`` and ``CosineEpochLR`` it now
  returns ``{"lr_sched": ...}`` built exactly as :class:`~fastreid_clip.engine.ClipTrainer` builds a single-stage run's
  scheduler (:func:`~fastreid_clip.config.stages.solver_stage`). FastReID's ``LRScheduler`` hook steps ``lr_sched``
  after every epoch, which is the schedule's own granularity. They warm up per epoch (``SOLVER.WARMUP_EPOCHS``), so
  ``SOLVER.WARMUP_ITERS`` and ``SOLVER.DELAY_EPOCHS`` must be 0 (FastReID's per-iteration warm-up would multiply in).
  Both classes are also registered in ``fastreid.solver.lr_scheduler``.
* ``build_reid_train_loader`` / ``build_reid_test_loader``, called with a config, instantiate datasets like our
  trainer does (:func:`fastreid_clip.data.build.build_dataset`): a dataset class with ``kwargs_from_config(cfg)``
  (``SyntheticReID``: ``DATASETS.SYNTHETIC.*``) gets those arguments, and every dataset's root is
  ``$FASTREID_DATASETS`` read at call time (FastReID reads it once, at import, into ``fastreid.data.build._root``,
  which these builders no longer use). Everything else - FastReID's ``build_transforms``, ``CommDataset``, samplers,
  ``DataLoaderX`` - is FastReID's. This also covers ``DefaultTrainer.build_test_loader`` / ``build_evaluator`` and
  the PreciseBN loader.
* A config that trains in stages (``STAGES.NAMES`` non-empty, e.g. ``ClipReID``) raises a ``ValueError`` naming
  ``fastreid_clip.engine.ClipTrainer`` and ``tools/train_net.py``: at the start of ``DefaultTrainer.__init__`` (before
  any data is built; every subclass that calls it), and in ``build_optimizer`` / ``build_lr_scheduler``.
* Nothing else: the optimizer is FastReID's ``build_optimizer`` (its parameter groups differ slightly from
  ClipTrainer's, see :func:`build_clip_optimizer` for ClipTrainer's) and evaluation is FastReID's ``ReidEvaluator``.

Each patch is idempotent and keeps the function it wraps in ``_fastreid_clip_wrapped``.
"""

from __future__ import annotations

import functools
from typing import Dict, Tuple

import torch
import torch.nn as nn
from fastreid.config import CfgNode

from ..config.validate import ConfigValueError
from ..config.stages import EPOCH_SCHEDULERS, SOLVER_KEYS, StageSpec, solver_stage
from ..solver import CosineEpochLR, WarmupMultiStepEpochLR, build_stage_optimizer, build_stage_scheduler

__all__ = ["apply", "check_single_stage", "build_lr_scheduler", "build_clip_optimizer", "FASTREID_SCHEDULERS"]

FASTREID_SCHEDULERS = ("MultiStepLR", "CosineAnnealingLR")  # the names fastreid.solver.build_lr_scheduler builds

_WRAPPED = "_fastreid_clip_wrapped"


def check_single_stage(cfg, where: str = "DefaultTrainer") -> None:
    """Raise ``ValueError`` if ``cfg`` trains in stages (``STAGES.NAMES`` non-empty): FastReID cannot run them."""
    names = tuple(cfg.STAGES.NAMES) if "STAGES" in cfg and "NAMES" in cfg.STAGES else ()
    if not names:
        return
    raise ValueError(
        f"{where}: MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE} trains in stages (STAGES.NAMES "
        f"{list(names)}), each with its own trainable parameters, data, optimizer and schedule; FastReID's "
        f"DefaultTrainer trains one stage from SOLVER.* and cannot run them. Train this config with "
        f"fastreid_clip.engine.ClipTrainer (tools/train_net.py uses it: `python tools/train_net.py --config-file "
        f"<config>`; in Python: `trainer = ClipTrainer(cfg); trainer.resume_or_load(resume=False); trainer.train()`). "
        f"Single-stage configs (STAGES.NAMES empty, e.g. ClipBaseline) work with DefaultTrainer."
    )


def check_no_sample_fields(cfg, where: str = "DefaultTrainer") -> None:
    """Raise ``ValueError`` if the meta-architecture needs per-sample training fields (``train_sample_fields``,
    e.g. CLIP-SCGI's caption embeddings): FastReID's train loader does not deliver them."""
    from fastreid.modeling.meta_arch import META_ARCH_REGISTRY

    arch = cfg.MODEL.META_ARCHITECTURE
    if getattr(META_ARCH_REGISTRY._obj_map.get(arch), "train_sample_fields", None) is None:
        return
    raise ValueError(
        f"{where}: MODEL.META_ARCHITECTURE {arch} needs per-sample training data that FastReID's train loader does "
        f"not deliver (its train_sample_fields, e.g. caption embeddings or source-domain ids). Train this config "
        f"with fastreid_clip.engine.ClipTrainer (`python tools/train_net.py --config-file <config>`).")


def build_lr_scheduler(cfg, optimizer: torch.optim.Optimizer, iters_per_epoch: int,
                       _fastreid_build=None) -> Dict[str, object]:
    """FastReID's ``build_lr_scheduler`` extended with ``WarmupMultiStepEpochLR`` and ``CosineEpochLR``.

    Our schedulers give ``{"lr_sched": scheduler}`` (no ``warmup_sched``: they warm up per epoch with
    ``SOLVER.WARMUP_EPOCHS``), with the same arguments as ClipTrainer's single stage: milestones ``SOLVER.STEPS``
    in absolute epochs, ``GAMMA``, ``WARMUP_FACTOR``; cosine over ``MAX_EPOCH`` epochs down to ``ETA_MIN_LR``.
    Other names go to FastReID's builder.
    """
    check_single_stage(cfg, "build_lr_scheduler")
    name = cfg.SOLVER.SCHED
    if name in EPOCH_SCHEDULERS:
        return {"lr_sched": build_stage_scheduler(optimizer, solver_stage(cfg))}  # solver_stage checks WARMUP_ITERS
    if name not in FASTREID_SCHEDULERS:
        raise ValueError(f"SOLVER.SCHED '{name}' is not a scheduler FastReID's build_lr_scheduler builds: use one of "
                         f"{FASTREID_SCHEDULERS + EPOCH_SCHEDULERS}")
    if _fastreid_build is None:
        import fastreid.solver.build as solver_build

        _fastreid_build = getattr(solver_build.build_lr_scheduler, _WRAPPED, solver_build.build_lr_scheduler)
    return _fastreid_build(cfg, optimizer, iters_per_epoch)


def build_clip_optimizer(cfg, model: nn.Module) -> Tuple[torch.optim.Optimizer, None]:
    """ClipTrainer's optimizer for a single-stage config, with ``DefaultTrainer.build_optimizer``'s signature.

    CLIP-ReID's parameter groups (:func:`~fastreid_clip.solver.clip_param_groups`: biases matched by
    ``SOLVER.BIAS_LR_MATCH``, "substring" includes the attention ``in_proj_bias``; ``WEIGHT_DECAY`` on every other
    parameter, norms included) and ``SOLVER.OPT``. To use it::

        class Trainer(DefaultTrainer):
            @classmethod
            def build_optimizer(cls, cfg, model):
                return build_clip_optimizer(cfg, model)

    FastReID's ``SOLVER.CLIP_GRADIENTS``, ``MODEL.FREEZE_LAYERS`` and ``HEADS_LR_FACTOR`` are not applied here.
    """
    check_single_stage(cfg, "build_clip_optimizer")
    s = cfg.SOLVER
    stage = StageSpec(name="train", epochs=max(int(s.MAX_EPOCH), 1), opt=s.OPT, base_lr=s.BASE_LR,
                      weight_decay=s.WEIGHT_DECAY, weight_decay_bias=s.WEIGHT_DECAY_BIAS,
                      bias_lr_factor=s.BIAS_LR_FACTOR, lr_factors=s.LR_FACTORS, keys=SOLVER_KEYS)
    return build_stage_optimizer(model, stage, s.BIAS_LR_MATCH, s.MOMENTUM, s.NESTEROV, s.OPT_IMPL), None


# ---------------------------------------------------------------------------------------------------- patches
def _split_cfg(args: tuple, kwargs: dict):
    """``(cfg, remaining positional args, remaining kwargs)`` of a ``@configurable`` call; cfg None if absent."""
    if args and isinstance(args[0], CfgNode):
        return args[0], args[1:], dict(kwargs)
    if isinstance(kwargs.get("cfg"), CfgNode):
        kwargs = dict(kwargs)
        return kwargs.pop("cfg"), args, kwargs
    return None, args, kwargs


def _patch_solver() -> None:
    import fastreid.engine.defaults as engine_defaults
    import fastreid.solver as solver_pkg
    import fastreid.solver.build as solver_build
    import fastreid.solver.lr_scheduler as fastreid_lr_scheduler

    fastreid_lr_scheduler.WarmupMultiStepEpochLR = WarmupMultiStepEpochLR
    fastreid_lr_scheduler.CosineEpochLR = CosineEpochLR

    if not hasattr(solver_build.build_lr_scheduler, _WRAPPED):
        fastreid_build = solver_build.build_lr_scheduler

        @functools.wraps(fastreid_build)
        def patched_build_lr_scheduler(cfg, optimizer, iters_per_epoch):
            return build_lr_scheduler(cfg, optimizer, iters_per_epoch, _fastreid_build=fastreid_build)

        setattr(patched_build_lr_scheduler, _WRAPPED, fastreid_build)
        for module in (solver_build, solver_pkg, engine_defaults):
            module.build_lr_scheduler = patched_build_lr_scheduler

    if not hasattr(solver_build.build_optimizer, _WRAPPED):
        fastreid_build_optimizer = solver_build.build_optimizer  # compat's in-place zero_grad fix included

        @functools.wraps(fastreid_build_optimizer)
        def patched_build_optimizer(cfg, model, *args, **kwargs):
            check_single_stage(cfg, "build_optimizer")
            if list(cfg.SOLVER.get("LR_FACTORS", [])):
                raise ConfigValueError("SOLVER.LR_FACTORS", [list(p) for p in cfg.SOLVER.LR_FACTORS],
                                       "[] with FastReID's build_optimizer",
                                       "FastReID's optimizer does not apply per-module lr factors; override "
                                       "build_optimizer with fastreid_clip.engine.fastreid_trainer.build_clip_optimizer (it does), "
                                       "or train with tools/train_net.py")
            return fastreid_build_optimizer(cfg, model, *args, **kwargs)

        setattr(patched_build_optimizer, _WRAPPED, fastreid_build_optimizer)
        for module in (solver_build, solver_pkg, engine_defaults):
            module.build_optimizer = patched_build_optimizer


def _patch_loaders() -> None:
    import fastreid.data as data_pkg
    import fastreid.data.build as data_build
    import fastreid.engine.defaults as engine_defaults
    from fastreid.data.common import CommDataset
    from fastreid.data.transforms import build_transforms

    from ..data.build import query_gallery_items, train_items

    if not hasattr(data_build.build_reid_train_loader, _WRAPPED):
        train_loader = data_build.build_reid_train_loader

        @functools.wraps(train_loader)
        def build_reid_train_loader(*args, **kwargs):
            """FastReID's train loader; with a config, datasets are built by ``fastreid_clip``'s ``build_dataset``."""
            cfg, rest, kw = _split_cfg(args, kwargs)
            if cfg is None or rest or kw.get("train_set") is not None:
                return train_loader(*args, **kwargs)
            kw.pop("train_set", None)
            transforms = kw.pop("transforms", None) or build_transforms(cfg, is_train=True)
            sampler = kw.pop("sampler", None)
            train_set = CommDataset(train_items(cfg), transforms, relabel=True)  # COMBINEALL per source (train_items)
            return train_loader(cfg, train_set=train_set, transforms=transforms, sampler=sampler)

        setattr(build_reid_train_loader, _WRAPPED, train_loader)
        for module in (data_build, data_pkg, engine_defaults):
            module.build_reid_train_loader = build_reid_train_loader

    if not hasattr(data_build.build_reid_test_loader, _WRAPPED):
        test_loader = data_build.build_reid_test_loader  # compat's: num_workers from DATALOADER.NUM_WORKERS

        @functools.wraps(test_loader)
        def build_reid_test_loader(*args, **kwargs):
            """FastReID's test loader; with a config, the dataset is built by ``fastreid_clip``'s ``build_dataset``."""
            cfg, rest, kw = _split_cfg(args, kwargs)
            if cfg is None or kw.get("test_set") is not None:
                return test_loader(*args, **kwargs)
            dataset_name = rest[0] if rest else kw.pop("dataset_name", None)
            if dataset_name is None:
                return test_loader(*args, **kwargs)  # FastReID's own error
            transforms = kw.pop("transforms", None) or build_transforms(cfg, is_train=False)
            items, num_query = query_gallery_items(cfg, dataset_name)
            return test_loader(cfg, test_set=CommDataset(items, transforms, relabel=False), num_query=num_query,
                               transforms=transforms)

        setattr(build_reid_test_loader, _WRAPPED, test_loader)
        for module in (data_build, data_pkg, engine_defaults):
            module.build_reid_test_loader = build_reid_test_loader


def _patch_trainer_init() -> None:
    from fastreid.engine.defaults import DefaultTrainer

    if hasattr(DefaultTrainer.__init__, _WRAPPED):
        return
    init = DefaultTrainer.__init__

    @functools.wraps(init)
    def __init__(self, cfg, *args, **kwargs):
        from .trainer import ClipTrainer

        if not isinstance(self, ClipTrainer):  # ClipTrainer runs stages (and does not call this __init__ today)
            check_single_stage(cfg, type(self).__name__)
            check_no_sample_fields(cfg, type(self).__name__)
        init(self, cfg, *args, **kwargs)

    setattr(__init__, _WRAPPED, init)
    DefaultTrainer.__init__ = __init__


def apply() -> None:
    """Install the patches described in the module docstring (idempotent). ``import fastreid_clip`` calls it."""
    _patch_solver()
    _patch_loaders()
    _patch_trainer_init()
