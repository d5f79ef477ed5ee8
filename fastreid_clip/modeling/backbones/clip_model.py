"""Building an open_clip CLIP model from a local weight file, with ReID geometry.

``build_clip_model`` is the one place where open_clip models are created. It

1. registers this package's tiny architecture JSONs (``model_configs/``) with open_clip;
2. creates the architecture with ``pretrained=None`` (no download; ``HF_HUB_OFFLINE`` is set by
   :mod:`fastreid_clip.compat` before open_clip is imported), QuickGELU as configured;
3. loads a local weight file after checking every key and shape against the architecture, so a file
   for another architecture fails loudly instead of loading partially;
4. adapts the vision tower's geometry: ViT patch stride and token grid with the position table resized
   bilinearly from the checkpoint's grid (CLIP-ReID), or ModifiedResNet last stride 1 with the
   attention-pool table resized the same way.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn

from .pos_embed import check_patch_stride, patch_grid, resize_pos_embed, square_grid
from .weights import check_state_dict_matches, describe_clip_state_dict, read_clip_state_dict

__all__ = ["ClipGeometry", "build_clip_model", "register_model_configs", "is_vit", "vit_patch_size"]

logger = logging.getLogger(__name__)

MODEL_CONFIG_DIR = os.path.join(os.path.dirname(__file__), "model_configs")
_REGISTERED = False


def register_model_configs() -> None:
    """Register the JSON architectures shipped in ``model_configs/`` (tiny test models) with open_clip."""
    global _REGISTERED
    if not _REGISTERED:
        import open_clip

        open_clip.add_model_config(MODEL_CONFIG_DIR)
        _REGISTERED = True


@dataclass(frozen=True)
class ClipGeometry:
    """Input geometry of the vision tower.

    Attributes:
        image_size: ``(H, W)`` of the network input (train and test size must agree for ViTs).
        stride: ViT patch-embedding stride ``(s_h, s_w)``; 16 for ViT-B/16, 12 for overlapping patches.
        last_stride: ModifiedResNet layer4 stride (1 for ReID, 2 for CLIP's original).
    """

    image_size: Tuple[int, int] = (256, 128)
    stride: Optional[Tuple[int, int]] = None
    last_stride: int = 1


def is_vit(visual: nn.Module) -> bool:
    return hasattr(visual, "class_embedding") and hasattr(visual, "conv1") and hasattr(visual, "transformer")


def _adapt_vit(visual: nn.Module, geometry: ClipGeometry, checkpoint_pos: Optional[torch.Tensor]) -> None:
    patch = visual.conv1.kernel_size[0]
    stride = check_patch_stride(geometry.stride, patch) if geometry.stride is not None else (patch, patch)
    grid = patch_grid(geometry.image_size, patch, stride)
    table = checkpoint_pos if checkpoint_pos is not None else visual.positional_embedding.data
    src_grid = square_grid(table.shape[0] - 1, "ViT position table")
    visual.conv1.stride = stride
    visual.image_size = tuple(geometry.image_size)
    visual.grid_size = grid
    visual.positional_embedding = nn.Parameter(resize_pos_embed(table, src_grid, grid).clone())


def _adapt_resnet(visual: nn.Module, geometry: ClipGeometry, checkpoint_pos: Optional[torch.Tensor]) -> None:
    if geometry.last_stride not in (1, 2):
        raise ValueError(f"MODEL.BACKBONE.LAST_STRIDE must be 1 or 2 for a ModifiedResNet, got {geometry.last_stride}")
    if geometry.stride is not None and tuple(geometry.stride) != (16, 16):
        raise ValueError("MODEL.BACKBONE.STRIDE_SIZE applies to ViT patch embeddings only; leave it at (16, 16)")
    first = visual.layer4[0]
    if geometry.last_stride == 1:
        # The stride of CLIP's Bottleneck lives in its anti-aliasing average pools (no parameters), so
        # replacing them keeps every state-dict key.
        first.avgpool = nn.Identity()
        if first.downsample is not None:
            first.downsample._modules["-1"] = nn.Identity()
        first.stride = 1
    total_stride = 16 * geometry.last_stride
    height, width = geometry.image_size
    if height % total_stride or width % total_stride:
        raise ValueError(f"input {height}x{width} is not divisible by the ResNet's total stride {total_stride}")
    grid = (height // total_stride, width // total_stride)
    table = checkpoint_pos if checkpoint_pos is not None else visual.attnpool.positional_embedding.data
    src_grid = square_grid(table.shape[0] - 1, "attention-pool position table")
    visual.attnpool.positional_embedding = nn.Parameter(resize_pos_embed(table, src_grid, grid).clone())
    visual.image_size = tuple(geometry.image_size)
    visual.grid_size = grid


class _DropOpenClipRandomInitWarning(logging.Filter):
    """open_clip warns "No pretrained weights loaded ... initialized randomly" for ``pretrained=None``, even when we
    load a local weight file right after: that line would be the only one a user sees about weights."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded for model" not in record.getMessage()


@contextlib.contextmanager
def _quiet_open_clip_random_init():
    root = logging.getLogger()  # open_clip logs through the root logger
    drop = _DropOpenClipRandomInitWarning()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def build_clip_model(
    arch: str,
    weights: Optional[str],
    geometry: ClipGeometry,
    quick_gelu: bool = True,
    trust_torchscript: bool = False,
    weights_follow: Optional[str] = None,
) -> nn.Module:
    """Create an open_clip CLIP model, load local weights and adapt its vision geometry.

    Args:
        arch: open_clip architecture name (``ViT-B-16``, ``ViT-B-32``, ``ViT-L-14``, ``RN50``, ``RN101``,
            or a tiny test architecture from ``model_configs/``).
        weights: local weight file, or ``None`` for random initialisation (an explicit choice).
        geometry: input size, ViT stride and ResNet last stride.
        quick_gelu: use QuickGELU (OpenAI's weights were trained with it).
        trust_torchscript: allow OpenAI TorchScript archives.
        weights_follow: with ``weights=None``, the trained checkpoint that will be loaded over the random init
            (``MODEL.WEIGHTS``: evaluation, feature extraction); logged instead of the random-weights warning.

    Returns:
        The open_clip ``CLIP`` module (fp32, CPU) with adapted ``visual``.
    """
    register_model_configs()
    import open_clip

    if arch not in open_clip.list_models():
        raise ValueError(
            f"unknown open_clip architecture '{arch}' (MODEL.BACKBONE.CLIP_NAME); known CLIP towers include "
            f"ViT-B-16, ViT-B-32, ViT-L-14, RN50, RN101 and the test models ViT-Tiny-16, RN-Tiny"
        )
    with _quiet_open_clip_random_init():  # our own line below says which weights the model has
        model = open_clip.create_model(arch, pretrained=None, force_quick_gelu=quick_gelu)
    model.eval()
    checkpoint_pos = None
    if weights is not None:
        state_dict = read_clip_state_dict(weights, arch, trust_torchscript=trust_torchscript)
        check_state_dict_matches(state_dict, model.state_dict(), weights, arch)
        pos_key = "visual.positional_embedding" if is_vit(model.visual) else "visual.attnpool.positional_embedding"
        checkpoint_pos = state_dict.pop(pos_key).float()  # fp16 files (OpenAI's archives): an fp32 table like the rest
        incompatible = model.load_state_dict(state_dict, strict=False)
        assert list(incompatible.unexpected_keys) == [] and list(incompatible.missing_keys) == [pos_key]
        logger.info("Loaded CLIP weights for %s from %s: %d tensors (%s)", arch, weights, len(state_dict) + 1,
                    describe_clip_state_dict(state_dict))
    elif weights_follow:
        logger.info("CLIP architecture %s built without CLIP weights: every weight comes from %s (MODEL.WEIGHTS)",
                    arch, weights_follow)
    else:
        logger.warning("CLIP architecture %s built with RANDOM weights (MODEL.BACKBONE.PRETRAIN False)", arch)
    if is_vit(model.visual):
        _adapt_vit(model.visual, geometry, checkpoint_pos)
    else:
        _adapt_resnet(model.visual, geometry, checkpoint_pos)
    return model


def vit_patch_size(arch: str) -> Optional[int]:
    """The patch size of open_clip architecture ``arch`` if it is a ViT (None for a ResNet or an unknown name)."""
    register_model_configs()
    import open_clip

    config = open_clip.get_model_config(arch) or {}
    vision = config.get("vision_cfg", {})
    layers = vision.get("layers")
    return None if isinstance(layers, (list, tuple)) else vision.get("patch_size")


def geometry_from_cfg(cfg, image_size: Optional[Sequence[int]] = None) -> ClipGeometry:
    """:class:`ClipGeometry` from ``INPUT.SIZE_TRAIN`` and ``MODEL.BACKBONE.{STRIDE_SIZE,LAST_STRIDE}``."""
    size = tuple(image_size or cfg.INPUT.SIZE_TRAIN)
    if tuple(cfg.INPUT.SIZE_TEST) != size:
        raise ValueError(
            f"INPUT.SIZE_TEST {list(cfg.INPUT.SIZE_TEST)} differs from INPUT.SIZE_TRAIN {list(size)}: the CLIP "
            f"token grid is fixed by the train size, so test images must be resized to the same size"
        )
    return ClipGeometry(image_size=size, stride=tuple(cfg.MODEL.BACKBONE.STRIDE_SIZE),
                        last_stride=int(cfg.MODEL.BACKBONE.LAST_STRIDE))


def build_clip_model_from_cfg(cfg) -> nn.Module:
    """:func:`build_clip_model` with every argument read from a config (``MODEL.BACKBONE.*``)."""
    bb = cfg.MODEL.BACKBONE
    return build_clip_model(
        bb.CLIP_NAME,
        bb.PRETRAIN_PATH if bb.PRETRAIN else None,
        geometry_from_cfg(cfg),
        quick_gelu=bb.QUICK_GELU,
        trust_torchscript=bb.TRUST_TORCHSCRIPT,
        weights_follow=cfg.MODEL.WEIGHTS or None,
    )
