"""Training stages as config: what a stage trains, on which data, with which optimizer and schedule.

A meta-architecture that trains in stages (CLIP-ReID: prompt learning, then image fine-tuning) lists its stage
names in ``STAGES.NAMES`` and adds one config node per stage with :func:`add_stage_config`. A single-stage model
(the baseline) gets one implicit stage built from FastReID's ``SOLVER.*`` keys (:func:`solver_stage`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Tuple

from fastreid.config import CfgNode as CN

__all__ = ["StageSpec", "add_stage_config", "stage_specs", "solver_stage", "DATA_KINDS", "EPOCH_SCHEDULERS"]

DATA_KINDS = ("images", "features")


@dataclass(frozen=True)
class StageSpec:
    """One training stage.

    Attributes:
        name: stage name; the meta-architecture switches its losses on it (``model.set_stage(name)``).
        epochs: number of epochs.
        trainable: module-name prefixes whose parameters train in this stage (``()`` = every parameter); all
            other parameters get ``requires_grad=False``.
        data: ``"images"`` (PK batches of augmented training images) or ``"features"`` (random minibatches of
            image features cached once with the test transform, for prompt learning with a frozen image encoder).
        ims_per_batch: global batch size.
        opt, base_lr, weight_decay, weight_decay_bias, bias_lr_factor: optimizer (see ``clip_param_groups``).
        sched: ``WarmupMultiStepEpochLR`` or ``CosineEpochLR`` (per-epoch schedules).
        steps, gamma, warmup_factor, warmup_epochs, warmup_lr_init, eta_min_lr: schedule parameters.
        checkpoint_period: save every this many epochs (and at the end of the stage).
        eval_period: evaluate every this many epochs and at the end of the stage; 0 = never in this stage.
    """

    name: str
    epochs: int
    trainable: Tuple[str, ...] = ()
    data: str = "images"
    ims_per_batch: int = 64
    opt: str = "Adam"
    base_lr: float = 5e-6
    weight_decay: float = 1e-4
    weight_decay_bias: float = 1e-4
    bias_lr_factor: float = 2.0
    sched: str = "WarmupMultiStepEpochLR"
    steps: Tuple[int, ...] = field(default_factory=tuple)
    gamma: float = 0.1
    warmup_factor: float = 0.1
    warmup_epochs: int = 10
    warmup_lr_init: float = 1e-5
    eta_min_lr: float = 1e-6
    checkpoint_period: int = 10
    eval_period: int = 10

    def __post_init__(self):
        if self.data not in DATA_KINDS:
            raise ValueError(f"STAGES.{self.name.upper()}.DATA must be one of {DATA_KINDS}, got '{self.data}'")
        if self.epochs <= 0:
            raise ValueError(f"STAGES.{self.name.upper()}.EPOCHS must be positive, got {self.epochs}")


_NODE_KEYS = {  # config key -> StageSpec field
    "EPOCHS": "epochs", "TRAINABLE": "trainable", "DATA": "data", "IMS_PER_BATCH": "ims_per_batch", "OPT": "opt",
    "BASE_LR": "base_lr", "WEIGHT_DECAY": "weight_decay", "WEIGHT_DECAY_BIAS": "weight_decay_bias",
    "BIAS_LR_FACTOR": "bias_lr_factor", "SCHED": "sched", "STEPS": "steps", "GAMMA": "gamma",
    "WARMUP_FACTOR": "warmup_factor", "WARMUP_EPOCHS": "warmup_epochs", "WARMUP_LR_INIT": "warmup_lr_init",
    "ETA_MIN_LR": "eta_min_lr", "CHECKPOINT_PERIOD": "checkpoint_period", "EVAL_PERIOD": "eval_period",
}


def add_stage_config(cfg: CN, name: str, **values) -> None:
    """Add ``cfg.STAGES.<NAME>`` with every stage key (``values`` override :class:`StageSpec`'s defaults).

    Keys: EPOCHS, TRAINABLE, DATA, IMS_PER_BATCH, OPT, BASE_LR, WEIGHT_DECAY, WEIGHT_DECAY_BIAS, BIAS_LR_FACTOR,
    SCHED, STEPS, GAMMA, WARMUP_FACTOR, WARMUP_EPOCHS, WARMUP_LR_INIT, ETA_MIN_LR, CHECKPOINT_PERIOD, EVAL_PERIOD.
    """
    defaults = StageSpec(name=name, epochs=values.pop("EPOCHS", 1))
    node = CN()
    node.EPOCHS = defaults.epochs
    for key, attr in _NODE_KEYS.items():
        if key == "EPOCHS":
            continue
        value = values.pop(key, getattr(defaults, attr))
        node[key] = list(value) if isinstance(value, tuple) and key == "STEPS" else value
    if values:
        raise KeyError(f"unknown stage keys {sorted(values)}")
    if "STAGES" not in cfg:
        cfg.STAGES = CN()
        cfg.STAGES.NAMES = ()
    cfg.STAGES[name.upper()] = node


def _spec_from_node(name: str, node: CN) -> StageSpec:
    kwargs = {attr: node[key] for key, attr in _NODE_KEYS.items()}
    kwargs["trainable"] = tuple(kwargs["trainable"])
    kwargs["steps"] = tuple(kwargs["steps"])
    return StageSpec(name=name, **kwargs)


EPOCH_SCHEDULERS = ("WarmupMultiStepEpochLR", "CosineEpochLR")


def solver_stage(cfg) -> StageSpec:
    """The single stage of a one-stage model, from FastReID's ``SOLVER``/``TEST`` keys.

    Only our per-epoch schedulers are accepted (they warm up per epoch with ``SOLVER.WARMUP_EPOCHS``), so FastReID's
    per-iteration warm-up and delay keys must be 0 instead of being silently ignored.
    """
    s = cfg.SOLVER
    if s.SCHED not in EPOCH_SCHEDULERS:
        raise ValueError(f"SOLVER.SCHED '{s.SCHED}' is not supported by ClipTrainer: use one of {EPOCH_SCHEDULERS}")
    if s.WARMUP_ITERS != 0 or s.DELAY_EPOCHS != 0:
        raise ValueError(f"SOLVER.SCHED {s.SCHED} warms up per epoch (SOLVER.WARMUP_EPOCHS): set SOLVER.WARMUP_ITERS 0 "
                         f"and SOLVER.DELAY_EPOCHS 0 (got {s.WARMUP_ITERS}, {s.DELAY_EPOCHS})")
    return StageSpec(name="train", epochs=s.MAX_EPOCH, data="images", ims_per_batch=s.IMS_PER_BATCH, opt=s.OPT,
                     base_lr=s.BASE_LR, weight_decay=s.WEIGHT_DECAY, weight_decay_bias=s.WEIGHT_DECAY_BIAS,
                     bias_lr_factor=s.BIAS_LR_FACTOR, sched=s.SCHED, steps=tuple(s.STEPS), gamma=s.GAMMA,
                     warmup_factor=s.WARMUP_FACTOR, warmup_epochs=s.WARMUP_EPOCHS, eta_min_lr=s.ETA_MIN_LR,
                     checkpoint_period=s.CHECKPOINT_PERIOD, eval_period=cfg.TEST.EVAL_PERIOD)


def stage_specs(cfg) -> List[StageSpec]:
    """The stages of ``cfg``: ``STAGES.NAMES`` in order, or the single :func:`solver_stage`."""
    names = tuple(cfg.STAGES.NAMES) if "STAGES" in cfg else ()
    if not names:
        return [solver_stage(cfg)]
    missing = [n for n in names if n.upper() not in cfg.STAGES]
    if missing:
        raise KeyError(f"STAGES.NAMES lists {missing} but the config has no STAGES.{missing[0].upper()} node")
    return [_spec_from_node(n, cfg.STAGES[n.upper()]) for n in names]
