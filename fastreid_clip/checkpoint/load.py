"""Strict loading of trained model weights (FastReID's checkpointer silently keeps random weights for missing keys)."""

from __future__ import annotations

import logging
from typing import Dict, Optional

import torch
import torch.nn as nn

from .files import CHECKSUM_KEY, read_checkpoint

__all__ = ["read_training_checkpoint", "load_model_weights", "fill_shapes_from_checkpoint"]

_EXPECTED = "a trained fastreid-clip checkpoint (e.g. OUTPUT_DIR/model_final.pth)"

logger = logging.getLogger(__name__)


def read_training_checkpoint(path: str) -> Dict[str, torch.Tensor]:
    """The model state dict of a FastReID checkpoint (``{"model": ..., "optimizer": ...}``) or a bare state dict."""
    if not path:
        raise ValueError("MODEL.WEIGHTS is empty: name the checkpoint to evaluate (e.g. OUTPUT_DIR/model_final.pth)")
    checkpoint = read_checkpoint(path, what="checkpoint (MODEL.WEIGHTS)")
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if isinstance(state, dict):
        state = {k: v for k, v in state.items() if k != CHECKSUM_KEY}
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"checkpoint '{path}' (MODEL.WEIGHTS) holds no model state dict")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def load_model_weights(model: nn.Module, path: str, state: Optional[Dict[str, torch.Tensor]] = None,
                       partial: bool = False) -> int:
    """Load ``path`` into ``model`` and return the number of tensors loaded.

    Strict (default): every model key must be in the file with the right shape, and the file may hold no other
    keys. ``partial`` (``MODEL.WEIGHTS_PARTIAL``, e.g. fine-tuning a model trained on another dataset, whose
    classifier has another size): only the tensors whose name and shape match are loaded, the rest keep their
    initialisation, and a summary is logged; a file of which no tensor fits is still an error.

    ``state`` is the already-read content of ``path`` (:func:`read_training_checkpoint`), to avoid reading it twice.
    """
    if state is None:
        state = read_training_checkpoint(path)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    wrong = [f"{k}: file {list(state[k].shape)} vs model {list(own[k].shape)}"
             for k in own if k in state and state[k].shape != own[k].shape]
    unexpected = sorted(set(state) - set(own))
    fitting = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    summary = (f"{len(fitting)} of the model's {len(own)} tensors fit; {len(missing)} missing keys (e.g. "
               f"{', '.join(missing[:3]) or '-'}); {len(wrong)} shape mismatches (e.g. {'; '.join(wrong[:2]) or '-'}); "
               f"{len(unexpected)} keys the model lacks (e.g. {', '.join(unexpected[:3]) or '-'})")
    if partial:
        if not fitting:
            raise ValueError(f"checkpoint '{path}' (MODEL.WEIGHTS) has no tensor that fits the configured model "
                             f"({type(model).__name__}): {summary}. Was it saved for another architecture?")
        model.load_state_dict(fitting, strict=False)
        logger.info("Loaded %d tensors from %s (MODEL.WEIGHTS_PARTIAL): %s", len(fitting), path, summary)
        return len(fitting)
    if missing or wrong or unexpected:
        hint = "was it trained with another META_ARCHITECTURE? " if unexpected and not (missing or wrong) else ""
        raise ValueError(
            f"checkpoint '{path}' (MODEL.WEIGHTS) does not fit the configured model ({type(model).__name__}): "
            f"{summary}. {hint}Check MODEL.META_ARCHITECTURE, MODEL.BACKBONE.CLIP_NAME, STRIDE_SIZE, INPUT.SIZE_TRAIN "
            f"and SIE, or set MODEL.WEIGHTS_PARTIAL True to load only the tensors that fit (e.g. to fine-tune a "
            f"model trained on another dataset).")
    model.load_state_dict(state, strict=True)
    logger.info("Loaded %d tensors from %s (MODEL.WEIGHTS)", len(state), path)
    return len(state)


def fill_shapes_from_checkpoint(cfg, state: dict, path: Optional[str] = None) -> None:
    """What ``tools/train_net.py --eval-only`` derives from a checkpoint: the class and SIE camera counts, and no CLIP
    backbone file (every weight comes from the checkpoint). A file that is not a trained fastreid-clip checkpoint
    raises :class:`~fastreid_clip.config.ConfigValueError` naming the file (``path``, default ``MODEL.WEIGHTS``) and
    what it is instead. Used by ``tools/train_net.py --eval-only`` and :class:`~fastreid_clip.FeatureExtractor`."""
    from ..config import ConfigValueError
    from .convert import detect_clipreid_layout
    from ..modeling.backbones.weights import describe_clip_state_dict

    path = cfg.MODEL.WEIGHTS if path is None else path
    if any(k.startswith("visual.") for k in state) and not any(k.startswith("backbone.") for k in state):
        raise ConfigValueError("MODEL.WEIGHTS", path, _EXPECTED,
                               f"The file looks like CLIP backbone weights ({describe_clip_state_dict(state)}): those "
                               f"go to MODEL.BACKBONE.PRETRAIN_PATH, to train from")
    if detect_clipreid_layout(state):
        raise ConfigValueError("MODEL.WEIGHTS", path, _EXPECTED,
                               "The file is an official CLIP-ReID checkpoint: convert it with "
                               "tools/convert_clipreid.py first")
    cfg.MODEL.BACKBONE.PRETRAIN = False
    if cfg.MODEL.HEADS.NUM_CLASSES == 0:
        if "head.classifier.weight" not in state:
            raise ConfigValueError("MODEL.WEIGHTS", path, _EXPECTED,
                                   f"The file has no head.classifier.weight (keys: {', '.join(list(state)[:3])}, ...), "
                                   f"so the number of identities is unknown; set MODEL.HEADS.NUM_CLASSES")
        cfg.MODEL.HEADS.NUM_CLASSES = state["head.classifier.weight"].shape[0]
    if cfg.MODEL.BACKBONE.NUM_CAMERAS == 0 and "backbone.sie_embed" in state:
        views = max(cfg.MODEL.BACKBONE.NUM_VIEWS, 1) if cfg.MODEL.BACKBONE.SIE_VIEW else 1
        cfg.MODEL.BACKBONE.NUM_CAMERAS = state["backbone.sie_embed"].shape[0] // views
