"""Training stages as config: what a stage trains, on which data, with which optimizer and schedule.

A meta-architecture that trains in stages (CLIP-ReID: prompt learning, then image fine-tuning) lists its stage
names in ``STAGES.NAMES`` and adds one config node per stage with :func:`add_stage_config`. A single-stage model
(the baseline) gets one implicit stage built from FastReID's ``SOLVER.*`` keys (:func:`solver_stage`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Mapping, Optional, Tuple

from fastreid.config import CfgNode as CN

from .validate import ConfigValueError

__all__ = ["StageSpec", "add_stage_config", "stage_specs", "solver_stage", "shared_stage", "DATA_KINDS",
           "EPOCH_SCHEDULERS", "SOLVER_KEYS"]

DATA_KINDS = ("images", "features")
EPOCH_SCHEDULERS = ("WarmupMultiStepEpochLR", "CosineEpochLR")


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
        lr_factors: ``((module-name prefix, lr multiplier), ...)``: a parameter's lr is ``base_lr`` times the factor
            of the longest prefix that matches its name by whole components (``head`` matches ``head.bn.weight``,
            not ``head_proj.bn.weight``), 1 when none does; a bias's ``bias_lr_factor`` multiplies on top. ``()`` =
            every parameter at ``base_lr`` (PromptSG: new modules x10).
        sched: ``WarmupMultiStepEpochLR`` or ``CosineEpochLR`` (per-epoch schedules).
        steps, gamma, warmup_factor, warmup_epochs, warmup_lr_init, eta_min_lr: schedule parameters.
        checkpoint_period: save every this many epochs (and at the end of the stage).
        eval_period: evaluate every this many epochs and at the end of the stage; 0 = never in this stage.
        batch_order: order of a ``features`` stage's minibatches: ``"shuffle"`` (a new permutation every epoch, the
            last partial minibatch kept; CLIP-ReID) or ``"fixed"`` (training-set order, the same full minibatches
            every epoch, remainder dropped; CLIP-FGDI's prompt stages [ref-code]). An ``images`` stage takes PK or
            random batches (``DATALOADER``) and must leave it at ``"shuffle"``.
        share_optimizer_with: name of an earlier stage whose optimizer and scheduler this stage continues
            (``""`` = its own). The stage then trains the same parameters with that stage's optimizer and schedule
            keys, starting from their state at the end of that stage: e.g. CLIP-FGDI's ``image`` stage continues
            ``prior``'s Adam moments and its per-epoch schedule at scheduler epoch 3. Its own ``OPT``, ``BASE_LR``,
            ``SCHED``, ... keys are not used; ``TRAINABLE`` must equal the earlier stage's (checked).
        keys: field name -> the config key it was read from, for error messages (:meth:`config_key`). Fields not
            in it are named ``STAGES.<NAME>.<KEY>``; :func:`solver_stage` passes :data:`SOLVER_KEYS`.

    Every field is validated on construction: a bad value raises
    :class:`~fastreid_clip.config.validate.ConfigValueError` naming its config key.
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
    lr_factors: Tuple[Tuple[str, float], ...] = ()
    sched: str = "WarmupMultiStepEpochLR"
    steps: Tuple[int, ...] = field(default_factory=tuple)
    gamma: float = 0.1
    warmup_factor: float = 0.1
    warmup_epochs: int = 10
    warmup_lr_init: float = 1e-5
    eta_min_lr: float = 1e-6
    checkpoint_period: int = 10
    eval_period: int = 10
    batch_order: str = "shuffle"
    share_optimizer_with: str = ""
    keys: Optional[Mapping[str, str]] = field(default=None, compare=False, repr=False)

    def config_key(self, attr: str) -> str:
        """The config key field ``attr`` comes from (``SOLVER.MAX_EPOCH``, ``STAGES.IMAGE.BASE_LR``, ...)."""
        if self.keys and attr in self.keys:
            return self.keys[attr]
        return f"STAGES.{str(self.name).upper()}.{_FIELD_KEYS.get(attr, attr.upper())}"

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ConfigValueError("STAGES.NAMES", self.name, "non-empty stage names")
        for check in _CHECKS:
            check(self)
        # Checked as given (the config's lists, named in errors), then stored as a hashable tuple of pairs.
        object.__setattr__(self, "lr_factors", tuple((str(p), float(f)) for p, f in self.lr_factors))


def _fail(stage: StageSpec, attr: str, expected: str, hint: str = "") -> None:
    raise ConfigValueError(stage.config_key(attr), getattr(stage, attr), expected, hint)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _int_at_least(attr: str, low: int, what: str):
    def check(stage: StageSpec) -> None:
        value = getattr(stage, attr)
        if not _is_int(value) or value < low:
            _fail(stage, attr, what)
    return check


def _number(attr: str, what: str, ok: Callable[[float], bool]):
    def check(stage: StageSpec) -> None:
        value = getattr(stage, attr)
        if not _is_number(value) or not ok(value):
            _fail(stage, attr, what)
    return check


def _check_data(stage: StageSpec) -> None:
    if stage.data not in DATA_KINDS:
        _fail(stage, "data", f"one of {DATA_KINDS}")


def _check_sched(stage: StageSpec) -> None:
    if stage.sched not in EPOCH_SCHEDULERS:
        _fail(stage, "sched", f"one of {EPOCH_SCHEDULERS} (ClipTrainer's per-epoch schedules)")


def _check_opt(stage: StageSpec) -> None:
    import torch

    optimizer = getattr(torch.optim, str(stage.opt), None) if isinstance(stage.opt, str) else None
    if not (isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer)):
        _fail(stage, "opt", "the name of a torch.optim optimizer (Adam, AdamW, SGD, ...)")


def _check_steps(stage: StageSpec) -> None:
    steps = stage.steps
    if not all(_is_int(s) and s >= 0 for s in steps) or list(steps) != sorted(steps):
        _fail(stage, "steps", "non-decreasing epoch numbers >= 0 (the lr is multiplied by the gamma at each)")


def _check_lr_factors(stage: StageSpec) -> None:
    expected = ("pairs [module-name prefix, lr factor > 0] with distinct non-empty prefixes, e.g. "
                "[[\"inversion\", 10.0], [\"mim\", 10.0]] (() = every parameter at the base lr)")
    value = stage.lr_factors
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)):
        _fail(stage, "lr_factors", expected)
    prefixes = []
    for entry in value:
        if isinstance(entry, (str, bytes)) or not isinstance(entry, (tuple, list)) or len(entry) != 2:
            _fail(stage, "lr_factors", expected, f"{entry!r} is not a [prefix, factor] pair")
        prefix, factor = entry
        if not isinstance(prefix, str) or not prefix or prefix.startswith(".") or prefix.endswith("."):
            _fail(stage, "lr_factors", expected, f"{prefix!r} is not a module-name prefix")
        if not _is_number(factor) or not factor > 0:
            _fail(stage, "lr_factors", expected, f"the factor of {prefix!r} is {factor!r}")
        prefixes.append(prefix)
    if len(set(prefixes)) != len(prefixes):
        duplicate = next(p for p in prefixes if prefixes.count(p) > 1)
        _fail(stage, "lr_factors", expected, f"{duplicate!r} is listed twice")


def _check_batch_order(stage: StageSpec) -> None:
    from ..data.epoch_data import BATCH_ORDERS

    if stage.batch_order not in BATCH_ORDERS:
        _fail(stage, "batch_order", f"one of {BATCH_ORDERS}")
    if stage.batch_order != "shuffle" and stage.data != "features":
        _fail(stage, "batch_order", "'shuffle' for an images stage (its batches come from the PK or random sampler)",
              f"BATCH_ORDER '{stage.batch_order}' orders the minibatches of a DATA 'features' stage")


def _check_share(stage: StageSpec) -> None:
    value = stage.share_optimizer_with
    if not isinstance(value, str) or (value and value.upper() == str(stage.name).upper()):
        _fail(stage, "share_optimizer_with", "the name of an earlier stage in STAGES.NAMES, or '' (own optimizer)")


def _check_trainable(stage: StageSpec) -> None:
    if not all(isinstance(p, str) and p for p in stage.trainable):
        _fail(stage, "trainable", "non-empty module-name prefixes (() = train every parameter)")


_CHECKS = (
    _int_at_least("epochs", 1, "a positive number of epochs"),
    _check_data,
    _int_at_least("ims_per_batch", 1, "a positive batch size"),
    _check_opt,
    _number("base_lr", "a learning rate > 0", lambda v: v > 0),
    _number("weight_decay", "a weight decay >= 0", lambda v: v >= 0),
    _number("weight_decay_bias", "a weight decay >= 0", lambda v: v >= 0),
    _number("bias_lr_factor", "a bias lr factor >= 0", lambda v: v >= 0),
    _check_lr_factors,
    _check_sched,
    _check_steps,
    _number("gamma", "a decay factor > 0", lambda v: v > 0),
    _number("warmup_factor", "a warm-up start factor in [0, 1]", lambda v: 0 <= v <= 1),
    _int_at_least("warmup_epochs", 0, "a number of warm-up epochs >= 0"),
    _number("warmup_lr_init", "a warm-up start lr >= 0", lambda v: v >= 0),
    _number("eta_min_lr", "a minimum lr >= 0", lambda v: v >= 0),
    _int_at_least("checkpoint_period", 0, "a checkpoint period >= 0 epochs (0 = only at the end of the stage)"),
    _int_at_least("eval_period", 0, "an evaluation period >= 0 epochs (0 = never in this stage)"),
    _check_trainable,
    _check_batch_order,
    _check_share,
)

_NODE_KEYS = {  # config key -> StageSpec field
    "EPOCHS": "epochs", "TRAINABLE": "trainable", "DATA": "data", "IMS_PER_BATCH": "ims_per_batch", "OPT": "opt",
    "BASE_LR": "base_lr", "WEIGHT_DECAY": "weight_decay", "WEIGHT_DECAY_BIAS": "weight_decay_bias",
    "BIAS_LR_FACTOR": "bias_lr_factor", "LR_FACTORS": "lr_factors", "SCHED": "sched", "STEPS": "steps",
    "GAMMA": "gamma",
    "WARMUP_FACTOR": "warmup_factor", "WARMUP_EPOCHS": "warmup_epochs", "WARMUP_LR_INIT": "warmup_lr_init",
    "ETA_MIN_LR": "eta_min_lr", "CHECKPOINT_PERIOD": "checkpoint_period", "EVAL_PERIOD": "eval_period",
    "BATCH_ORDER": "batch_order", "SHARE_OPTIMIZER_WITH": "share_optimizer_with",
}
_FIELD_KEYS = {attr: key for key, attr in _NODE_KEYS.items()}

# StageSpec field -> the key solver_stage reads it from (fields it does not read keep StageSpec's default).
SOLVER_KEYS = {
    "epochs": "SOLVER.MAX_EPOCH", "ims_per_batch": "SOLVER.IMS_PER_BATCH", "opt": "SOLVER.OPT",
    "base_lr": "SOLVER.BASE_LR", "weight_decay": "SOLVER.WEIGHT_DECAY", "weight_decay_bias": "SOLVER.WEIGHT_DECAY_BIAS",
    "bias_lr_factor": "SOLVER.BIAS_LR_FACTOR", "lr_factors": "SOLVER.LR_FACTORS", "sched": "SOLVER.SCHED",
    "steps": "SOLVER.STEPS",
    "gamma": "SOLVER.GAMMA", "warmup_factor": "SOLVER.WARMUP_FACTOR", "warmup_epochs": "SOLVER.WARMUP_EPOCHS",
    "eta_min_lr": "SOLVER.ETA_MIN_LR", "checkpoint_period": "SOLVER.CHECKPOINT_PERIOD",
    "eval_period": "TEST.EVAL_PERIOD",
}


def add_stage_config(cfg: CN, name: str, **values) -> None:
    """Add ``cfg.STAGES.<NAME>`` with every stage key (``values`` override :class:`StageSpec`'s defaults).

    Keys: EPOCHS, TRAINABLE, DATA, IMS_PER_BATCH, OPT, BASE_LR, WEIGHT_DECAY, WEIGHT_DECAY_BIAS, BIAS_LR_FACTOR,
    LR_FACTORS (``[[prefix, factor], ...]``), SCHED, STEPS, GAMMA, WARMUP_FACTOR, WARMUP_EPOCHS, WARMUP_LR_INIT,
    ETA_MIN_LR, CHECKPOINT_PERIOD, EVAL_PERIOD, BATCH_ORDER, SHARE_OPTIMIZER_WITH.
    """
    defaults = StageSpec(name=name, epochs=values.pop("EPOCHS", 1))
    node = CN()
    node.EPOCHS = defaults.epochs
    for key, attr in _NODE_KEYS.items():
        if key == "EPOCHS":
            continue
        value = values.pop(key, getattr(defaults, attr))
        if key == "STEPS" and isinstance(value, tuple):
            value = list(value)
        elif key == "LR_FACTORS":
            value = [list(pair) for pair in value]
        node[key] = value
    if values:
        raise KeyError(f"unknown stage keys {sorted(values)}")
    if "STAGES" not in cfg:
        cfg.STAGES = CN()
        cfg.STAGES.NAMES = ()
    cfg.STAGES[name.upper()] = node


def _spec_from_node(name: str, node: CN) -> StageSpec:
    optional = ("SHARE_OPTIMIZER_WITH", "BATCH_ORDER")  # added later: a node made by an older add_stage_config
    kwargs = {attr: node[key] for key, attr in _NODE_KEYS.items() if key in node or key not in optional}
    kwargs["trainable"] = tuple(kwargs["trainable"])
    kwargs["steps"] = tuple(kwargs["steps"])
    return StageSpec(name=name, **kwargs)


def solver_stage(cfg) -> StageSpec:
    """The single stage of a one-stage model, from FastReID's ``SOLVER``/``TEST`` keys.

    Only our per-epoch schedulers are accepted (they warm up per epoch with ``SOLVER.WARMUP_EPOCHS``), so FastReID's
    per-iteration warm-up and delay keys must be 0 instead of being silently ignored.
    """
    s = cfg.SOLVER
    if s.SCHED not in EPOCH_SCHEDULERS:
        raise ConfigValueError("SOLVER.SCHED", s.SCHED, f"one of {EPOCH_SCHEDULERS}: ClipTrainer's per-epoch "
                                                        f"schedules (FastReID's are not supported by ClipTrainer)")
    for key, value in (("WARMUP_ITERS", s.WARMUP_ITERS), ("DELAY_EPOCHS", s.DELAY_EPOCHS)):
        if value != 0:
            raise ConfigValueError(f"SOLVER.{key}", value, f"0: SOLVER.SCHED {s.SCHED} warms up per epoch "
                                                           f"(SOLVER.WARMUP_EPOCHS)",
                                   "Set SOLVER.WARMUP_ITERS 0 and SOLVER.DELAY_EPOCHS 0")
    return StageSpec(name="train", epochs=s.MAX_EPOCH, data="images", ims_per_batch=s.IMS_PER_BATCH, opt=s.OPT,
                     base_lr=s.BASE_LR, weight_decay=s.WEIGHT_DECAY, weight_decay_bias=s.WEIGHT_DECAY_BIAS,
                     bias_lr_factor=s.BIAS_LR_FACTOR, lr_factors=s.get("LR_FACTORS", ()),
                     sched=s.SCHED, steps=tuple(s.STEPS), gamma=s.GAMMA,
                     warmup_factor=s.WARMUP_FACTOR, warmup_epochs=s.WARMUP_EPOCHS, eta_min_lr=s.ETA_MIN_LR,
                     checkpoint_period=s.CHECKPOINT_PERIOD, eval_period=cfg.TEST.EVAL_PERIOD, keys=SOLVER_KEYS)


def stage_specs(cfg) -> List[StageSpec]:
    """The stages of ``cfg``: ``STAGES.NAMES`` in order, or the single :func:`solver_stage`."""
    names = tuple(cfg.STAGES.NAMES) if "STAGES" in cfg else ()
    if not names:
        return [solver_stage(cfg)]
    if len({n.upper() for n in names}) != len(names):
        raise ConfigValueError("STAGES.NAMES", names, "distinct stage names (each has its own STAGES.<NAME> node)")
    missing = [n for n in names if n.upper() not in cfg.STAGES]
    if missing:
        raise ConfigValueError("STAGES.NAMES", names, f"names of STAGES.<NAME> nodes; the config has no "
                                                      f"STAGES.{missing[0].upper()}")
    specs = [_spec_from_node(n, cfg.STAGES[n.upper()]) for n in names]
    for index, spec in enumerate(specs):
        if spec.share_optimizer_with:
            shared_stage(specs, index)
    return specs


def shared_stage(specs: List[StageSpec], index: int) -> Optional[StageSpec]:
    """The earlier stage whose optimizer and scheduler ``specs[index]`` continues (``SHARE_OPTIMIZER_WITH``), or
    None; a name that is not an earlier stage, or a different ``TRAINABLE``, raises :class:`ConfigValueError`."""
    spec = specs[index]
    wanted = spec.share_optimizer_with.upper()
    if not wanted:
        return None
    earlier = {s.name.upper(): s for s in specs[:index]}
    if wanted not in earlier:
        raise ConfigValueError(spec.config_key("share_optimizer_with"), spec.share_optimizer_with,
                               f"the name of an earlier stage (before '{spec.name}' in STAGES.NAMES: "
                               f"{[s.name for s in specs[:index]]}) or ''")
    other = earlier[wanted]
    if other.share_optimizer_with:
        raise ConfigValueError(spec.config_key("share_optimizer_with"), spec.share_optimizer_with,
                               f"a stage with its own optimizer; '{other.name}' shares the optimizer of "
                               f"'{other.share_optimizer_with}': name that stage")
    if tuple(other.trainable) != tuple(spec.trainable):
        raise ConfigValueError(spec.config_key("trainable"), tuple(spec.trainable),
                               f"the TRAINABLE of stage '{other.name}' ({tuple(other.trainable)}), whose optimizer "
                               f"this stage continues ({spec.config_key('share_optimizer_with')})")
    return other
