"""Strict loading of trained model weights (FastReID's checkpointer silently keeps random weights for missing keys)."""

from __future__ import annotations

import os
from typing import Dict, Optional

import torch
import torch.nn as nn

__all__ = ["read_training_checkpoint", "load_model_weights"]


def read_training_checkpoint(path: str) -> Dict[str, torch.Tensor]:
    """The model state dict of a FastReID checkpoint (``{"model": ..., "optimizer": ...}``) or a bare state dict."""
    if not path:
        raise ValueError("MODEL.WEIGHTS is empty: name the checkpoint to evaluate (e.g. OUTPUT_DIR/model_final.pth)")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint '{path}' (MODEL.WEIGHTS) does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"cannot read checkpoint '{path}' (MODEL.WEIGHTS): {err}") from err
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"checkpoint '{path}' holds no model state dict")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def load_model_weights(model: nn.Module, path: str, state: Optional[Dict[str, torch.Tensor]] = None) -> None:
    """Load ``path`` into ``model``; every model key must be present with the right shape.

    ``state`` is the already-read content of ``path`` (:func:`read_training_checkpoint`), to avoid reading it twice.
    """
    if state is None:
        state = read_training_checkpoint(path)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    wrong = [f"{k}: file {list(state[k].shape)} vs model {list(own[k].shape)}"
             for k in own if k in state and state[k].shape != own[k].shape]
    if missing or wrong:
        raise ValueError(
            f"checkpoint '{path}' does not fit the configured model ({type(model).__name__}): "
            f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])}); {len(wrong)} shape mismatches "
            f"(e.g. {'; '.join(wrong[:2])}). Check MODEL.BACKBONE.CLIP_NAME, STRIDE_SIZE, INPUT.SIZE_TRAIN and SIE.")
    unexpected = sorted(set(state) - set(own))
    if unexpected:
        raise ValueError(f"checkpoint '{path}' has {len(unexpected)} keys the configured model lacks "
                         f"(e.g. {', '.join(unexpected[:3])}): was it trained with another META_ARCHITECTURE?")
    model.load_state_dict(state, strict=True)
