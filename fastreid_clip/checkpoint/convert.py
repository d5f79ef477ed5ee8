"""Convert released CLIP-ReID checkpoints (Syliz517/CLIP-ReID) to this package's ``ClipReID`` layout.

A released CLIP-ReID ``.pth`` is the ``state_dict()`` of the reference model (keys possibly prefixed with
``module.``). Its vision and text towers already use OpenAI/open_clip parameter names, so the conversion is a
prefix mapping:

=====================================  ==========================================
CLIP-ReID key                          ``ClipReID`` key
=====================================  ==========================================
``image_encoder.<tower>``              ``backbone.visual.<tower>``
``cv_embed``                           ``backbone.sie_embed``
``bottleneck.<bn>``                    ``head.bn.<bn>``
``classifier.weight``                  ``head.classifier.weight``
``bottleneck_proj.<bn>``               ``head_proj.bn.<bn>``
``classifier_proj.weight``             ``head_proj.classifier.weight``
``text_encoder.<tower>``               ``text_encoder.<tower>``
``prompt_learner.cls_ctx``             ``prompt_learner.ctx``
``prompt_learner.token_prefix``        ``prompt_learner.token_prefix``
``prompt_learner.token_suffix``        ``prompt_learner.token_suffix``
=====================================  ==========================================

What the checkpoint does not record is the input geometry: the ViT patch stride (16, or 12 for overlapping
patches) and the input size, or the ResNet's last stride. The position table was resized to that geometry when
the model was trained, so :func:`convert_clipreid_state_dict` checks its row count against the configured
geometry and fails with the expected and found counts instead of silently evaluating a mismatched model (the
0.3% mAP report of CLIP-ReID#57).
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

__all__ = [
    "convert_clipreid_state_dict",
    "detect_clipreid_layout",
    "expected_position_rows",
    "summarize_clipreid_state_dict",
]

# Exact renames, then prefix renames (checked in order; the dots keep "bottleneck." apart from "bottleneck_proj.").
_EXACT = {
    "cv_embed": "backbone.sie_embed",
    "classifier.weight": "head.classifier.weight",
    "classifier_proj.weight": "head_proj.classifier.weight",
    "prompt_learner.cls_ctx": "prompt_learner.ctx",
    "prompt_learner.token_prefix": "prompt_learner.token_prefix",
    "prompt_learner.token_suffix": "prompt_learner.token_suffix",
}
_PREFIX = (
    ("image_encoder.", "backbone.visual."),
    ("bottleneck.", "head.bn."),
    ("bottleneck_proj.", "head_proj.bn."),
    ("text_encoder.", "text_encoder."),
)

# Names allowed below each prefix (OpenAI CLIP modules; open_clip uses the same names).
_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_BLOCK = (r"transformer\.resblocks\.\d+\.(ln_1\.(weight|bias)|ln_2\.(weight|bias)|attn\.in_proj_(weight|bias)"
          r"|attn\.out_proj\.(weight|bias)|mlp\.c_fc\.(weight|bias)|mlp\.c_proj\.(weight|bias))")
_VIT = re.compile(rf"(conv1\.weight|class_embedding|positional_embedding|ln_pre\.(weight|bias)|ln_post\.(weight|bias)"
                  rf"|proj|{_BLOCK})")
_RESNET = re.compile(rf"(conv[123]\.weight|bn[123]\.{_BN}"
                     rf"|layer[1-4]\.\d+\.(conv[123]\.weight|bn[123]\.{_BN}|downsample\.0\.weight|downsample\.1\.{_BN})"
                     rf"|attnpool\.(positional_embedding|[qkvc]_proj\.(weight|bias)))")
_TEXT = re.compile(rf"(positional_embedding|text_projection|ln_final\.(weight|bias)|{_BLOCK})")
_SUBKEYS = {"image_encoder.": None, "bottleneck.": re.compile(_BN), "bottleneck_proj.": re.compile(_BN),
            "text_encoder.": _TEXT}

_VIT_POS = "image_encoder.positional_embedding"
_RESNET_POS = "image_encoder.attnpool.positional_embedding"
_TEXT_KEYS = ("text_encoder.", "prompt_learner.")
_CONFIG_HINT = "MODEL.BACKBONE.STRIDE_SIZE, INPUT.SIZE_TRAIN (and INPUT.SIZE_TEST)"
# Geometries tried when suggesting what a checkpoint was trained with.
_SIZES = ((256, 128), (384, 128), (320, 160), (384, 192), (224, 224), (256, 256), (320, 320))


def _strip_module(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    out = {}
    for key, value in state_dict.items():
        name = key[len("module."):] if key.startswith("module.") else key
        if name in out:
            raise ValueError(f"key '{name}' appears both with and without the 'module.' prefix")
        out[name] = value
    return out


def detect_clipreid_layout(state_dict: Mapping[str, Any]) -> bool:
    """Whether ``state_dict`` looks like a CLIP-ReID reference model (``image_encoder.*`` plus its heads).

    True for the released CLIP-ReID checkpoints (with or without ``module.`` prefixes), False for this
    package's own checkpoints (``backbone.*``) and for plain CLIP weights.

    Args:
        state_dict: a model state dict (keys are inspected only).

    Returns:
        True when the keys use CLIP-ReID's names.
    """
    keys = {k[len("module."):] if k.startswith("module.") else k for k in state_dict}
    has_encoder = any(k.startswith("image_encoder.") for k in keys)
    has_heads = "classifier.weight" in keys or any(k.startswith("bottleneck.") for k in keys)
    return has_encoder and has_heads and not any(k.startswith("backbone.") for k in keys)


def _rename(key: str) -> Optional[str]:
    if key in _EXACT:
        return _EXACT[key]
    for src, dst in _PREFIX:
        if key.startswith(src):
            rest = key[len(src):]
            pattern = _SUBKEYS[src]
            if pattern is None:  # image tower: ViT or ModifiedResNet names
                ok = _VIT.fullmatch(rest) or _RESNET.fullmatch(rest)
            else:
                ok = pattern.fullmatch(rest)
            return dst + rest if ok else None
    return None


def expected_position_rows(kind: str, image_size: Sequence[int], *, stride: Sequence[int] = (16, 16),
                           patch_size: int = 16, last_stride: int = 1) -> Tuple[int, Tuple[int, int]]:
    """Rows of the position table a trained model has for a geometry, and its token grid.

    ViT: ``((H - P) // s_h + 1) * ((W - P) // s_w + 1) + 1`` (129 at 256x128 stride 16, 211 at stride 12).
    ModifiedResNet attention pool: ``(H // (16 * last_stride)) * (W // (16 * last_stride)) + 1`` (129 at 256x128
    with last stride 1).

    Args:
        kind: ``"vit"`` or ``"resnet"``.
        image_size: ``(H, W)`` input size (``INPUT.SIZE_TRAIN``).
        stride: ViT patch stride (``MODEL.BACKBONE.STRIDE_SIZE``).
        patch_size: ViT patch size.
        last_stride: ResNet layer-4 stride (``MODEL.BACKBONE.LAST_STRIDE``).

    Returns:
        ``(rows, (h, w))``.
    """
    height, width = (int(v) for v in image_size)
    if kind == "vit":
        from ..modeling.backbones.pos_embed import check_patch_stride

        sh, sw = check_patch_stride(tuple(int(v) for v in stride), patch_size)
        if height < patch_size or width < patch_size:
            raise ValueError(f"input {height}x{width} is smaller than the {patch_size}x{patch_size} patch")
        grid = ((height - patch_size) // sh + 1, (width - patch_size) // sw + 1)
    elif kind == "resnet":
        total = 16 * int(last_stride)
        if height % total or width % total:
            raise ValueError(f"input {height}x{width} is not divisible by the ResNet's total stride {total} "
                             f"(MODEL.BACKBONE.LAST_STRIDE {last_stride})")
        grid = (height // total, width // total)
    else:
        raise ValueError(f"kind must be 'vit' or 'resnet', got '{kind}'")
    return grid[0] * grid[1] + 1, grid


def _suggest(kind: str, rows: int, patch_size: int) -> List[str]:
    found = []
    for size in _SIZES:
        options = [(s, 1) for s in (16, 14, 12, 10, 8)] if kind == "vit" else [(16, 1), (16, 2)]
        for s, last in options:
            try:
                n, grid = expected_position_rows(kind, size, stride=(s, s), patch_size=patch_size, last_stride=last)
            except ValueError:
                continue
            if n == rows:
                if kind == "vit":
                    found.append(f"INPUT.SIZE_TRAIN {list(size)} with MODEL.BACKBONE.STRIDE_SIZE ({s}, {s}) "
                                 f"({grid[0]}x{grid[1]} grid)")
                else:
                    found.append(f"INPUT.SIZE_TRAIN {list(size)} with MODEL.BACKBONE.LAST_STRIDE {last} "
                                 f"({grid[0]}x{grid[1]} grid)")
    return found


def _check_geometry(state: Mapping[str, torch.Tensor], image_size, stride, patch_size, last_stride) -> None:
    if _VIT_POS in state:
        table = state[_VIT_POS]
        conv = state.get("image_encoder.conv1.weight")
        kernel = int(conv.shape[-1]) if conv is not None and conv.dim() == 4 else None
        if patch_size is None:
            patch_size = kernel or 16
        elif kernel is not None and kernel != patch_size:
            raise ValueError(f"patch_size {patch_size} does not match the checkpoint's {kernel}x{kernel} patch "
                             f"embedding (image_encoder.conv1.weight)")
        kind, what = "vit", f"ViT position table '{_VIT_POS}'"
        config = (f"INPUT.SIZE_TRAIN {list(image_size)}, MODEL.BACKBONE.STRIDE_SIZE {tuple(stride)}, "
                  f"patch {patch_size}")
        hint = _CONFIG_HINT
    else:
        table = state[_RESNET_POS]
        kind, what = "resnet", f"ResNet attention-pool position table '{_RESNET_POS}'"
        config = f"INPUT.SIZE_TRAIN {list(image_size)}, MODEL.BACKBONE.LAST_STRIDE {last_stride}"
        hint = "MODEL.BACKBONE.LAST_STRIDE, INPUT.SIZE_TRAIN (and INPUT.SIZE_TEST)"
    if table.dim() != 2:
        raise ValueError(f"{what} has shape {list(table.shape)}, expected [rows, width]")
    rows, grid = expected_position_rows(kind, image_size, stride=stride, patch_size=patch_size or 16,
                                        last_stride=last_stride)
    found = int(table.shape[0])
    if found != rows:
        guesses = _suggest(kind, found, patch_size or 16)
        guess = f" The table fits e.g. {'; '.join(guesses[:4])}." if guesses else ""
        raise ValueError(
            f"{what} has {found} rows, but the configured geometry ({config}) gives a {grid[0]}x{grid[1]} grid, "
            f"i.e. {rows} rows (expected {rows}, found {found}). The checkpoint was trained with another input "
            f"size or stride: set {hint} to the values it was trained with.{guess}")


def _check_consistency(state: Mapping[str, torch.Tensor]) -> None:
    """Shape relations between the heads, the SIE table and the prompt tensors."""
    problems = []
    num_classes = state["classifier.weight"].shape[0] if "classifier.weight" in state else None
    if "classifier_proj.weight" in state and num_classes is not None \
            and state["classifier_proj.weight"].shape[0] != num_classes:
        problems.append(f"classifier.weight has {num_classes} classes but classifier_proj.weight "
                        f"{state['classifier_proj.weight'].shape[0]}")
    if "cv_embed" in state:
        width = None
        if "image_encoder.class_embedding" in state:
            width = state["image_encoder.class_embedding"].shape[-1]
        if state["cv_embed"].dim() != 2 or (width is not None and state["cv_embed"].shape[1] != width):
            problems.append(f"cv_embed has shape {list(state['cv_embed'].shape)}, expected [rows, {width}]")
    ctx = state.get("prompt_learner.cls_ctx")
    prefix = state.get("prompt_learner.token_prefix")
    suffix = state.get("prompt_learner.token_suffix")
    if ctx is not None:
        if ctx.dim() != 3:
            problems.append(f"prompt_learner.cls_ctx has shape {list(ctx.shape)}, expected [C, M, width]")
        elif num_classes is not None and ctx.shape[0] != num_classes:
            problems.append(f"prompt_learner.cls_ctx has {ctx.shape[0]} identities but the classifier {num_classes}")
        text_pos = state.get("text_encoder.positional_embedding")
        if ctx.dim() == 3 and prefix is not None and suffix is not None and text_pos is not None:
            total = prefix.shape[1] + ctx.shape[1] + suffix.shape[1]
            if total != text_pos.shape[0]:
                problems.append(f"prompt rows {prefix.shape[1]} + {ctx.shape[1]} + {suffix.shape[1]} != the text "
                                f"context length {text_pos.shape[0]}")
    if problems:
        raise ValueError("inconsistent CLIP-ReID checkpoint: " + "; ".join(problems))


def convert_clipreid_state_dict(state_dict: Mapping[str, torch.Tensor], *, image_size: Sequence[int] = (256, 128),
                                stride: Sequence[int] = (16, 16), patch_size: Optional[int] = 16,
                                last_stride: int = 1) -> Dict[str, torch.Tensor]:
    """Rename a released CLIP-ReID state dict to the ``ClipReID`` layout, after checking its geometry.

    Pure function (like timm's ``checkpoint_filter_fn``): no model is built; the returned dict holds the input
    tensors themselves (no copies, dtypes unchanged) under the new names. A checkpoint without text encoder and
    prompt learner (CLIP-ReID's baseline model) maps to the ``ClipBaseline`` layout the same way.

    Args:
        state_dict: the reference model's ``state_dict()``; a ``module.`` prefix (DataParallel) is stripped.
        image_size: ``(H, W)`` the model was trained at (``INPUT.SIZE_TRAIN``).
        stride: ViT patch stride (``MODEL.BACKBONE.STRIDE_SIZE``; ``(12, 12)`` for OLP). Ignored for ResNets.
        patch_size: ViT patch size; checked against ``image_encoder.conv1.weight`` (``None``: read from it).
        last_stride: ResNet layer-4 stride (``MODEL.BACKBONE.LAST_STRIDE``). Ignored for ViTs.

    Returns:
        ``{new_key: tensor}`` (see the module docstring for the mapping).

    Raises:
        ValueError: unknown keys (listed), a missing image tower or heads, a ViT/ResNet mix, inconsistent head or
            prompt shapes, or a position table whose row count does not fit the geometry (the message gives the
            expected and found rows and the config keys to set).
    """
    state = _strip_module(state_dict)
    not_tensors = sorted(k for k, v in state.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise ValueError(f"not a state dict: {len(not_tensors)} values are not tensors (e.g. {not_tensors[:5]})")

    converted: Dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state.items():
        new = _rename(key)
        if new is None:
            unknown.append(key)
        else:
            converted[new] = value
    if unknown:
        shown = ", ".join(sorted(unknown)[:20]) + (f", ... ({len(unknown)} in all)" if len(unknown) > 20 else "")
        raise ValueError(f"{len(unknown)} keys are not part of a CLIP-ReID model: {shown}. Expected only "
                         f"image_encoder.*, cv_embed, bottleneck(_proj).*, classifier(_proj).weight, text_encoder.* "
                         f"and prompt_learner.{{cls_ctx,token_prefix,token_suffix}}")

    vit_keys = [k for k in state if k.startswith("image_encoder.") and _VIT.fullmatch(k[len("image_encoder."):])
                and not _RESNET.fullmatch(k[len("image_encoder."):])]
    resnet_keys = [k for k in state if k.startswith("image_encoder.attnpool.") or k.startswith("image_encoder.layer")]
    if vit_keys and resnet_keys:
        raise ValueError(f"the image encoder mixes ViT keys (e.g. {vit_keys[0]}) and ResNet keys (e.g. "
                         f"{resnet_keys[0]})")
    if _VIT_POS not in state and _RESNET_POS not in state:
        raise ValueError(f"no image-encoder position table: neither '{_VIT_POS}' (ViT) nor '{_RESNET_POS}' "
                         f"(ModifiedResNet) is in the checkpoint")
    missing = [k for k in ("classifier.weight", "classifier_proj.weight", "bottleneck.weight",
                           "bottleneck_proj.weight") if k not in state]
    has_text = [p for p in _TEXT_KEYS if any(k.startswith(p) for k in state)]
    if has_text:
        missing += [k for k in ("text_encoder.positional_embedding", "text_encoder.text_projection",
                                "prompt_learner.cls_ctx", "prompt_learner.token_prefix",
                                "prompt_learner.token_suffix") if k not in state]
    if missing:
        raise ValueError(f"incomplete CLIP-ReID checkpoint: missing {', '.join(missing)}")
    _check_consistency(state)
    _check_geometry(state, tuple(image_size), tuple(stride), patch_size, last_stride)
    return converted


def summarize_clipreid_state_dict(converted: Mapping[str, torch.Tensor]) -> Dict[str, Any]:
    """Facts about a converted (``ClipReID`` layout) state dict, for logs and the conversion tool.

    Args:
        converted: output of :func:`convert_clipreid_state_dict`.

    Returns:
        ``{"tensors", "backbone" ("vit" | "resnet"), "width", "layers", "position_rows", "num_classes",
        "context_tokens" (M, or None without prompts), "sie_rows" (or None), "has_text"}``.
    """
    vit = "backbone.visual.positional_embedding" in converted
    if vit:
        pos = converted["backbone.visual.positional_embedding"]
        blocks = {k.split(".")[4] for k in converted if k.startswith("backbone.visual.transformer.resblocks.")}
        width, layers = int(pos.shape[1]), len(blocks)
    else:
        pos = converted["backbone.visual.attnpool.positional_embedding"]
        stages = []
        for i in range(1, 5):
            ids = {k.split(".")[3] for k in converted if k.startswith(f"backbone.visual.layer{i}.")}
            stages.append(len(ids))
        width, layers = int(converted["backbone.visual.conv1.weight"].shape[0]) * 2, stages
    ctx = converted.get("prompt_learner.ctx")
    sie = converted.get("backbone.sie_embed")
    return {
        "tensors": len(converted),
        "backbone": "vit" if vit else "resnet",
        "width": width,
        "layers": layers,
        "position_rows": int(pos.shape[0]),
        "num_classes": int(converted["head.classifier.weight"].shape[0]),
        "context_tokens": int(ctx.shape[1]) if ctx is not None else None,
        "sie_rows": int(sie.shape[0]) if sie is not None else None,
        "has_text": "text_encoder.positional_embedding" in converted,
    }
