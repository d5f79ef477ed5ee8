"""Optimizer and scheduler of a training stage (a single-stage run's stage comes from ``SOLVER.*``)."""

from __future__ import annotations

import inspect
import logging

import torch
import torch.nn as nn

from ..config.stages import EPOCH_SCHEDULERS, StageSpec
from ..config.validate import OPT_IMPLS, ConfigValueError
from .lr_scheduler import CosineEpochLR, WarmupMultiStepEpochLR
from .optimizer import clip_param_groups, lr_factor_of, unmatched_lr_prefixes

__all__ = ["OPT_IMPLS", "build_stage_optimizer", "build_stage_scheduler"]


logger = logging.getLogger(__name__)


def _check_lr_factors(model: nn.Module, stage: StageSpec) -> None:
    """Every ``LR_FACTORS`` prefix must match some parameter (a typo would silently leave a module at base lr)."""
    if not stage.lr_factors:
        return
    names = [name for name, _ in model.named_parameters()]
    missing = unmatched_lr_prefixes(names, stage.lr_factors)
    if missing:
        top = sorted({name.split(".")[0] for name in names})
        raise ConfigValueError(stage.config_key("lr_factors"), [list(p) for p in stage.lr_factors],
                               f"prefixes of the model's parameter names (matched by whole dotted components); "
                               f"'{missing[0]}' matches no parameter of {type(model).__name__} (top-level modules: "
                               f"{', '.join(top)})")
    counts = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            factor = lr_factor_of(name, stage.lr_factors)
            counts[factor] = counts.get(factor, 0) + param.numel()
    logger.info("Stage '%s' lr factors %s: %s", stage.name, [list(p) for p in stage.lr_factors],
                ", ".join(f"x{f:g} on {n:,} params" for f, n in sorted(counts.items())))


def _impl_kwargs(opt_class: type, impl: str) -> dict:
    """Keyword arguments that select ``impl`` for ``opt_class``; an optimizer without that switch is an error."""
    if impl not in OPT_IMPLS:
        raise ConfigValueError("SOLVER.OPT_IMPL", impl, f"one of {list(OPT_IMPLS)}")
    params = inspect.signature(opt_class.__init__).parameters
    switch = "fused" if impl == "fused" else "foreach"
    if switch not in params:
        raise ConfigValueError("SOLVER.OPT_IMPL", impl, f"an implementation torch.optim.{opt_class.__name__} has",
                               f"torch.optim.{opt_class.__name__} has no '{switch}' argument")
    return {"fused": True} if impl == "fused" else {"foreach": impl == "foreach"}


def build_stage_optimizer(model: nn.Module, stage: StageSpec, bias_match: str = "substring",
                          momentum: float = 0.9, nesterov: bool = False,
                          impl: str = "fused") -> torch.optim.Optimizer:
    """The stage's optimizer (Adam by default: coupled L2 weight decay, as CLIP-ReID) over its trainable params,
    with the stage's per-module lr factors (``LR_FACTORS``), run by the ``impl`` kernel (``SOLVER.OPT_IMPL``).

    The three implementations compute the same update up to float rounding."""
    _check_lr_factors(model, stage)
    groups = clip_param_groups(model, stage.base_lr, stage.weight_decay, stage.bias_lr_factor,
                               stage.weight_decay_bias, bias_match, stage.lr_factors)
    if not groups:
        raise ValueError(f"stage '{stage.name}' has no trainable parameters (TRAINABLE {list(stage.trainable)})")
    if not hasattr(torch.optim, stage.opt) or not isinstance(getattr(torch.optim, stage.opt), type):
        raise ValueError(f"optimizer '{stage.opt}' is not a torch.optim optimizer")
    opt_class = getattr(torch.optim, stage.opt)
    kwargs = _impl_kwargs(opt_class, impl)
    if stage.opt == "SGD":
        kwargs.update(momentum=momentum, nesterov=nesterov)
    return opt_class(groups, lr=stage.base_lr, **kwargs)


def build_stage_scheduler(optimizer: torch.optim.Optimizer, stage: StageSpec):
    """The stage's per-epoch scheduler (stepped by FastReID's ``LRScheduler`` hook after every epoch)."""
    if stage.sched == "WarmupMultiStepEpochLR":
        return WarmupMultiStepEpochLR(optimizer, stage.steps, stage.gamma, stage.warmup_factor, stage.warmup_epochs)
    if stage.sched == "CosineEpochLR":
        return CosineEpochLR(optimizer, stage.epochs, stage.warmup_epochs, stage.warmup_lr_init, stage.eta_min_lr)
    raise ValueError(f"stage '{stage.name}': scheduler '{stage.sched}' is not one of {EPOCH_SCHEDULERS}")
