"""Optimizer parameter groups: CLIP-ReID's bias rule plus per-module learning-rate factors."""

from __future__ import annotations

from collections import defaultdict
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch.nn as nn

__all__ = ["clip_param_groups", "lr_factor_of", "unmatched_lr_prefixes"]


def _matches(name: str, prefix: str) -> bool:
    """``prefix`` matches ``name`` by whole dotted components (``head`` matches ``head.bn.weight``, not
    ``head_proj.bn.weight``; ``backbone.visual`` matches ``backbone.visual.conv1.weight``)."""
    return name == prefix or name.startswith(prefix + ".")


def lr_factor_of(name: str, lr_factors: Sequence[Tuple[str, float]]) -> float:
    """The lr multiplier of parameter ``name``: the factor of the longest matching prefix, 1 if none matches."""
    best, factor = -1, 1.0
    for prefix, value in lr_factors:
        if len(prefix) > best and _matches(name, prefix):
            best, factor = len(prefix), float(value)
    return factor


def unmatched_lr_prefixes(names: Iterable[str], lr_factors: Sequence[Tuple[str, float]]) -> List[str]:
    """The prefixes of ``lr_factors`` that match none of the parameter ``names``."""
    names = list(names)
    return [prefix for prefix, _ in lr_factors if not any(_matches(n, prefix) for n in names)]


def clip_param_groups(model: nn.Module, base_lr: float, weight_decay: float, bias_lr_factor: float = 2.0,
                      weight_decay_bias: float = None, bias_match: str = "substring",
                      lr_factors: Optional[Sequence[Tuple[str, float]]] = None) -> List[Dict]:
    """Parameter groups: every trainable parameter at ``base_lr * factor``/``weight_decay``, biases at
    ``base_lr * factor * bias_lr_factor``/``weight_decay_bias``.

    CLIP-ReID [ref-code ``solver/make_optimizer.py``] treats every parameter whose *name contains* "bias" as a bias,
    which includes the attention ``in_proj_bias``; FastReID's rule only matches parameters named exactly ``bias``
    (``bias_match="exact"``). Weight decay applies to every parameter, norms and position tables included.
    Frozen parameters (``requires_grad=False``) are left out. Parameters with equal hyper-parameters share a group.

    ``lr_factors`` (``STAGES.<NAME>.LR_FACTORS`` / ``SOLVER.LR_FACTORS``) are ``(module-name prefix, factor)``
    pairs; a parameter takes the factor of the longest prefix matching its name by whole components
    (:func:`lr_factor_of`), 1 otherwise. PromptSG: the CLIP visual encoder at 5e-6, its new modules at 5e-5. With no
    factors the groups are exactly CLIP-ReID's. Prefixes that match no parameter are the caller's to reject
    (:func:`unmatched_lr_prefixes`; ``build_stage_optimizer`` names the config key).
    """
    if bias_match not in ("substring", "exact"):
        raise ValueError(f"SOLVER.BIAS_LR_MATCH must be 'substring' or 'exact', got '{bias_match}'")
    weight_decay_bias = weight_decay if weight_decay_bias is None else weight_decay_bias
    lr_factors = tuple(lr_factors or ())
    grouped: Dict[Tuple[float, float], List[nn.Parameter]] = defaultdict(list)
    seen = set()
    for name, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        leaf = name.rsplit(".", 1)[-1]
        is_bias = "bias" in leaf if bias_match == "substring" else leaf == "bias"
        lr = base_lr * lr_factor_of(name, lr_factors) if lr_factors else base_lr
        key = (lr * bias_lr_factor, weight_decay_bias) if is_bias else (lr, weight_decay)
        grouped[key].append(param)
    return [{"params": params, "lr": lr, "weight_decay": wd} for (lr, wd), params in grouped.items()]
