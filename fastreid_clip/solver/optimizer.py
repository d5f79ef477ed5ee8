"""CLIP-ReID's optimizer parameter groups."""

from __future__ import annotations

from collections import defaultdict
from typing import Dict, List, Tuple

import torch.nn as nn

__all__ = ["clip_param_groups"]


def clip_param_groups(model: nn.Module, base_lr: float, weight_decay: float, bias_lr_factor: float = 2.0,
                      weight_decay_bias: float = None, bias_match: str = "substring") -> List[Dict]:
    """Parameter groups: every trainable parameter at ``base_lr``/``weight_decay``, biases at
    ``base_lr * bias_lr_factor``/``weight_decay_bias``.

    CLIP-ReID [ref-code ``solver/make_optimizer.py``] treats every parameter whose *name contains* "bias" as a bias,
    which includes the attention ``in_proj_bias``; FastReID's rule only matches parameters named exactly ``bias``
    (``bias_match="exact"``). Weight decay applies to every parameter, norms and position tables included.
    Frozen parameters (``requires_grad=False``) are left out. Parameters with equal hyper-parameters share a group.
    """
    if bias_match not in ("substring", "exact"):
        raise ValueError(f"SOLVER.BIAS_LR_MATCH must be 'substring' or 'exact', got '{bias_match}'")
    weight_decay_bias = weight_decay if weight_decay_bias is None else weight_decay_bias
    grouped: Dict[Tuple[float, float], List[nn.Parameter]] = defaultdict(list)
    seen = set()
    for name, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        leaf = name.rsplit(".", 1)[-1]
        is_bias = "bias" in leaf if bias_match == "substring" else leaf == "bias"
        key = (base_lr * bias_lr_factor, weight_decay_bias) if is_bias else (base_lr, weight_decay)
        grouped[key].append(param)
    return [{"params": params, "lr": lr, "weight_decay": wd} for (lr, wd), params in grouped.items()]
