"""Config and input validation: bad values fail early with ``KEY = VALUE: expected ...``.

:func:`validate_train_config` runs at the start of :func:`fastreid_clip.data.build.build_clip_train_set`, i.e.
when ``ClipTrainer`` starts and before any data is generated or read, a model built or an epoch trained. It
covers the stage keys (through :func:`~fastreid_clip.config.stages.stage_specs`, whose specs validate every field
under its real key), the dataset names, the sampler / batch keys, the test batch and the ViT stride. The helpers
below are also called where the values are used (loaders, feature cache, trainer, meta-architectures), so code
that bypasses the trainer gets the same messages. docs/bad_inputs.md lists every case.
"""

from __future__ import annotations

import difflib
from typing import Any, Iterable, Optional, Sequence

__all__ = [
    "ConfigValueError", "validate_train_config", "check_dataset_names", "registered_datasets", "unknown_dataset_error",
    "check_test_batch_size", "combineall_per_source",
    "pk_num_instances", "check_trainable_prefixes", "check_label_smoothing", "check_positive_int",
    "TRAIN_SAMPLERS",
]

# FastReID's DATALOADER.SAMPLER_TRAIN names. ClipTrainer draws random batches for TrainingSampler and its per-epoch
# PK plan (CLIP-ReID's identity sampler, DATALOADER.NUM_INSTANCE images per id) for the identity samplers.
RANDOM_SAMPLER = "TrainingSampler"
TRAIN_SAMPLERS = (RANDOM_SAMPLER, "NaiveIdentitySampler", "BalancedIdentitySampler", "SetReWeightSampler",
                  "ImbalancedDatasetSampler")


class ConfigValueError(ValueError):
    """A config value (or file / command-line value) that cannot work.

    ``str(err)`` is ``"KEY = VALUE: expected EXPECTED"`` (``VALUE`` as ``repr``), plus ``". HINT"`` when given.

    Attributes:
        key: the config key (or file / CLI flag) that holds the value.
        value: the bad value.
        expected: what would have been accepted.
        hint: what to do about it (optional).
    """

    def __init__(self, key: str, value: Any, expected: str, hint: str = ""):
        self.key, self.value, self.expected, self.hint = key, value, expected, hint
        message = f"{key} = {value!r}: expected {expected}"
        super().__init__(f"{message}. {hint}" if hint else message)

    def __reduce__(self):  # picklable (DDP workers send exceptions to the parent) despite the custom signature
        return type(self), (self.key, self.value, self.expected, self.hint)


# SOLVER.OPT_IMPL: how torch.optim runs the update over the parameter list. "fused" (one kernel for all parameters;
# Adam on ViT-B/16 measured 0.14 s / step vs 1.75 s foreach vs 3.52 s for-loop on a 2-core CPU), "foreach"
# (multi-tensor ops, torch's default), "for_loop" (one parameter at a time, the reference code's behaviour).
OPT_IMPLS = ("fused", "foreach", "for_loop")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_positive_int(key: str, value: Any, what: str = "a positive integer") -> int:
    """``value`` if it is an integer > 0, else :class:`ConfigValueError` naming ``key``."""
    if not _is_int(value) or value <= 0:
        raise ConfigValueError(key, value, what)
    return value


def check_label_smoothing(key: str, value: Any) -> float:
    """Label smoothing ``eps`` must be in ``[0, 1)`` (``eps = 1`` removes the target from the loss)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ConfigValueError(key, value, "a label smoothing in [0, 1) (0 = none; CLIP-ReID uses 0.1)")
    return float(value)


def check_test_batch_size(cfg) -> int:
    """``TEST.IMS_PER_BATCH`` (test loader and training-feature cache) must be a positive integer."""
    return check_positive_int("TEST.IMS_PER_BATCH", cfg.TEST.IMS_PER_BATCH,
                              "a positive integer (images per inference batch)")


def registered_datasets() -> Sequence[str]:
    """The names in FastReID's ``DATASET_REGISTRY``, sorted."""
    from fastreid.data.datasets import DATASET_REGISTRY

    # fastreid's Registry (fvcore's, older) has no public listing: its name -> class map is ``_obj_map``.
    return sorted(DATASET_REGISTRY._obj_map)


def unknown_dataset_error(key: str, value: Any, name: str) -> ConfigValueError:
    """The error for dataset ``name`` (in ``key = value``) that is not registered."""
    registered = registered_datasets()
    close = difflib.get_close_matches(str(name), registered, n=1)
    return ConfigValueError(key, value, f"names registered in FastReID's DATASET_REGISTRY; '{name}' is not "
                                        f"(registered: {', '.join(registered)})",
                            f"Did you mean '{close[0]}'?" if close else "")


def check_dataset_names(key: str, names: Iterable[str], allow_empty: bool = False) -> None:
    """Every name in ``names`` (the value of ``key``: DATASETS.NAMES or DATASETS.TESTS) is a registered dataset."""
    names = tuple(names)
    registered = registered_datasets()
    if not names and not allow_empty:
        raise ConfigValueError(key, names, f"at least one dataset name (registered: {', '.join(registered)})")
    for name in names:
        if name not in registered:
            raise unknown_dataset_error(key, names, name)


def combineall_per_source(cfg) -> Sequence[bool]:
    """Whether each ``DATASETS.NAMES`` source is trained with combineall (train + query + gallery).

    ``DATASETS.COMBINEALL_PER_SOURCE`` empty (default): ``DATASETS.COMBINEALL`` for every source; otherwise one bool
    per ``DATASETS.NAMES`` entry (a wrong length or a non-bool entry is a :class:`ConfigValueError`).
    ``DATASETS.COMBINEALL_KEEP_PID0`` must be a bool (checked here too)."""
    names = tuple(cfg.DATASETS.NAMES)
    keep = cfg.DATASETS.get("COMBINEALL_KEEP_PID0", False)
    if not isinstance(keep, bool):
        raise ConfigValueError("DATASETS.COMBINEALL_KEEP_PID0", keep, "True or False")
    per_source = tuple(cfg.DATASETS.get("COMBINEALL_PER_SOURCE", ()))
    if not per_source:
        if not isinstance(cfg.DATASETS.COMBINEALL, bool):
            raise ConfigValueError("DATASETS.COMBINEALL", cfg.DATASETS.COMBINEALL, "True or False")
        return tuple(cfg.DATASETS.COMBINEALL for _ in names)
    if len(per_source) != len(names) or not all(isinstance(v, bool) for v in per_source):
        raise ConfigValueError("DATASETS.COMBINEALL_PER_SOURCE", per_source,
                               f"() (= DATASETS.COMBINEALL for every source) or one True/False per DATASETS.NAMES "
                               f"entry, len(DATASETS.NAMES) = {len(names)} {names}")
    return per_source


def pk_num_instances(cfg, stage=None) -> int:
    """Images per identity ``K`` of a stage's image batches: 0 = random batches (``TrainingSampler``).

    Every other ``DATALOADER.SAMPLER_TRAIN`` gets ClipTrainer's PK plan, which needs ``DATALOADER.NUM_INSTANCE``
    > 0 and the stage's batch size (``SOLVER.IMS_PER_BATCH`` or ``STAGES.<NAME>.IMS_PER_BATCH``) a multiple of it.

    Args:
        cfg: the config.
        stage: the :class:`~fastreid_clip.config.stages.StageSpec` whose batch size is checked (None: only K).
    """
    sampler = cfg.DATALOADER.SAMPLER_TRAIN
    if sampler not in TRAIN_SAMPLERS:
        close = difflib.get_close_matches(str(sampler), TRAIN_SAMPLERS, n=1)
        raise ConfigValueError("DATALOADER.SAMPLER_TRAIN", sampler, f"one of {', '.join(TRAIN_SAMPLERS)}",
                               f"Did you mean '{close[0]}'?" if close else "")
    if sampler == RANDOM_SAMPLER:
        return 0
    k = cfg.DATALOADER.NUM_INSTANCE
    if not _is_int(k) or k <= 0:
        raise ConfigValueError("DATALOADER.NUM_INSTANCE", k,
                               f"a positive number of images per identity: DATALOADER.SAMPLER_TRAIN {sampler} draws "
                               f"identity (PK) batches", f"For random batches set DATALOADER.SAMPLER_TRAIN "
                                                         f"{RANDOM_SAMPLER}")
    if stage is not None and stage.ims_per_batch % k:
        key = stage.config_key("ims_per_batch")
        raise ConfigValueError(key, stage.ims_per_batch,
                               f"a multiple of DATALOADER.NUM_INSTANCE = {k} (batches of P identities x {k} images)")
    return k


def _top_level_names(model) -> Sequence[str]:
    names = [name for name, _ in model.named_children()]
    names += [name for name, _ in model.named_parameters(recurse=False)]
    return names


def check_trainable_prefixes(model, stage) -> None:
    """Every prefix in ``stage.trainable`` (``STAGES.<NAME>.TRAINABLE``) must start some parameter name of ``model``.

    A prefix that matches nothing would otherwise silently freeze what it was meant to train.
    """
    names = [name for name, _ in model.named_parameters()]
    for prefix in stage.trainable:
        if any(name.startswith(prefix) for name in names):
            continue
        top = _top_level_names(model)
        depth = str(prefix).count(".")
        same_depth = sorted({".".join(n.split(".")[:depth + 1]) for n in names})
        close = difflib.get_close_matches(str(prefix), same_depth, n=1) or difflib.get_close_matches(
            str(prefix), top, n=1)
        hint = f"Did you mean '{close[0]}'?" if close else ""
        raise ConfigValueError(stage.config_key("trainable"), tuple(stage.trainable),
                               f"prefixes of the model's parameter names; '{prefix}' matches no parameter of "
                               f"{type(model).__name__} (top-level modules: {', '.join(top)})", hint)


def _check_vit_stride(cfg) -> None:
    from ..modeling.backbones.clip_model import vit_patch_size
    from ..modeling.backbones.pos_embed import check_patch_stride

    patch = vit_patch_size(cfg.MODEL.BACKBONE.CLIP_NAME)
    if patch is not None:
        check_patch_stride(cfg.MODEL.BACKBONE.STRIDE_SIZE, patch)


def validate_train_config(cfg, stages: Optional[Sequence] = None) -> None:
    """Check the keys a training run needs before anything is built (raises :class:`ConfigValueError`).

    Args:
        cfg: the config.
        stages: its stage specs (default: :func:`~fastreid_clip.config.stages.stage_specs`, which validates them).
    """
    from .stages import stage_specs

    check_dataset_names("DATASETS.NAMES", cfg.DATASETS.NAMES)
    check_dataset_names("DATASETS.TESTS", cfg.DATASETS.TESTS, allow_empty=True)
    combineall_per_source(cfg)
    stages = stage_specs(cfg) if stages is None else stages
    for stage in stages:
        if stage.data == "images":
            pk_num_instances(cfg, stage)
    check_test_batch_size(cfg)
    workers = cfg.DATALOADER.NUM_WORKERS
    if not _is_int(workers) or workers < 0:
        raise ConfigValueError("DATALOADER.NUM_WORKERS", workers, "an integer >= 0 (0 = load in the main process)")
    if cfg.SOLVER.OPT_IMPL not in OPT_IMPLS:
        raise ConfigValueError("SOLVER.OPT_IMPL", cfg.SOLVER.OPT_IMPL, f"one of {list(OPT_IMPLS)}")
    check_label_smoothing("MODEL.LOSSES.CE.EPSILON", cfg.MODEL.LOSSES.CE.EPSILON)
    if "I2T" in cfg.MODEL.LOSSES:
        check_label_smoothing("MODEL.LOSSES.I2T.EPSILON", cfg.MODEL.LOSSES.I2T.EPSILON)
    _check_vit_stride(cfg)
    _check_meta_arch_keys(cfg)


def _check_meta_arch_keys(cfg) -> None:
    """A meta-architecture with a ``check_config(cfg)`` classmethod checks its own keys here (e.g. ``SVLLReID``)."""
    from fastreid.modeling.meta_arch import META_ARCH_REGISTRY

    check = getattr(META_ARCH_REGISTRY._obj_map.get(cfg.MODEL.META_ARCHITECTURE), "check_config", None)
    if check is not None:
        check(cfg)
