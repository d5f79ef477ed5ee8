"""Attention maps of a model over its input patches, for pictures (tools/visualize_attention.py).

Normal inference runs fused attention kernels that never form the attention weights. :class:`AttentionRecorder`
hooks the attention modules for one forward of the images being visualised and recomputes their weights from the
same inputs (``need_weights=True`` of the same ``nn.MultiheadAttention``; ``softmax(QK^T / sqrt(d))`` of a
:class:`~fastreid_clip.modeling.fusion.CrossAttention`); the model itself is not changed and other forwards are not
slowed down. Maps (each ``[B, h, w]`` over the patch grid, summing to one per image):

* ``rollout``: attention rollout from the class token (Abnar & Zuidema, 2020): per block the head-averaged
  attention plus the identity (the residual), rows renormalised, multiplied over the blocks; the class token's row
  over the patches, renormalised. ViT backbones only.
* ``last``: the last block's head-averaged class-token attention over the patches, renormalised.
* ``cross`` (``cross_1``, ... when there are several): a text-query interaction / fusion module's cross-attention
  over the image's patch tokens (PromptSG's MIM: the prompt over the patches; CLIP-SCGI's fusion with
  ``CFF.KV patches`` or ``all``), head-averaged and averaged over the query tokens; a leading global token, when the
  keys hold one, is left out and the rest renormalised. Modules whose keys are not the patch tokens (text tokens,
  the class token alone) give no map.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

__all__ = ["AttentionRecorder", "attention_maps", "heatmap_overlay"]


def _vit_backbones(model: nn.Module):
    from ..modeling.backbones import ClipViTBackbone

    return [m for m in model.modules() if isinstance(m, ClipViTBackbone)]


def _image_backbones(model: nn.Module):
    from ..modeling.backbones import ClipResNetBackbone, ClipViTBackbone

    return [m for m in model.modules() if isinstance(m, (ClipViTBackbone, ClipResNetBackbone))]


def _cross_modules(model: nn.Module):
    from ..modeling.fusion import CrossAttention

    return [m for m in model.modules() if isinstance(m, CrossAttention)]


class AttentionRecorder:
    """Context manager recording attention weights of the model's image ViT blocks and cross-attention modules.

    Attributes (filled by forwards inside the context):
        self_attention: per ViT block, ``[B, N, N]`` head-averaged weights (``N = 1 + h * w``), first forward only.
        cross_attention: per cross-attention module, ``[B, Lq, M]`` head-averaged weights, first forward only.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        backbones = _vit_backbones(model)
        self.backbone = backbones[0] if backbones else None
        self.blocks = list(self.backbone.visual.transformer.resblocks) if self.backbone is not None else []
        self.cross = _cross_modules(model)
        self.self_attention: List[Optional[torch.Tensor]] = [None] * len(self.blocks)
        self.cross_attention: List[Optional[torch.Tensor]] = [None] * len(self.cross)
        images = _image_backbones(model)
        self.image_backbone = images[0] if images else None
        self.token_count: Optional[int] = None  # image tokens of the backbone's output (ViT: 1 + h * w)
        self._handles = []

    def __enter__(self) -> "AttentionRecorder":
        if self.image_backbone is not None:
            self._handles.append(self.image_backbone.register_forward_hook(self._tokens_hook))
        for i, block in enumerate(self.blocks):
            self._handles.append(block.attn.register_forward_hook(self._self_hook(i), with_kwargs=True))
        for i, module in enumerate(self.cross):
            self._handles.append(module.register_forward_hook(self._cross_hook(i), with_kwargs=True))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _tokens_hook(self, module, args, output):
        if self.token_count is None and getattr(output, "tokens", None) is not None:
            self.token_count = int(output.tokens.shape[1])

    def _self_hook(self, index: int):
        def hook(module: nn.MultiheadAttention, args, kwargs, output):
            if self.self_attention[index] is not None:
                return
            names = ("query", "key", "value")
            q, k, v = (args[i] if len(args) > i else kwargs[names[i]] for i in range(3))
            with torch.no_grad():
                _, weights = module.forward(q, k, v, need_weights=True, average_attn_weights=True,
                                            attn_mask=kwargs.get("attn_mask"))
            self.self_attention[index] = weights.float().detach()

        return hook

    def _cross_hook(self, index: int):
        def hook(module, args, kwargs, output):
            if self.cross_attention[index] is not None:
                return
            stream = args[0] if args else kwargs["stream"]
            kv = args[1] if len(args) > 1 else kwargs["kv"]
            q = args[2] if len(args) > 2 else kwargs.get("q")
            mask = args[3] if len(args) > 3 else kwargs.get("kv_padding_mask")
            with torch.no_grad():
                q = module.project_query(stream) if q is None else q
                k = module.k_proj(module.ln_kv(kv))
                heads, dim = module.num_heads, q.shape[-1]
                qh = q.to(k.dtype).reshape(q.shape[0], q.shape[1], heads, dim // heads).transpose(1, 2)
                kh = k.reshape(k.shape[0], k.shape[1], heads, dim // heads).transpose(1, 2)
                logits = qh @ kh.transpose(-1, -2) / math.sqrt(dim // heads)  # [B or 1, h, Lq, M] -> broadcast
                logits = logits.expand(kv.shape[0], -1, -1, -1)
                if mask is not None:
                    logits = logits.masked_fill(mask.view(kv.shape[0], 1, 1, -1), float("-inf"))
                self.cross_attention[index] = logits.float().softmax(-1).mean(1).detach()

        return hook


def _patch_grid(count: int, size: Sequence[int]) -> Tuple[int, int]:
    """``(h, w)`` with ``h * w = count`` and ``h / w`` closest to the image's ``H / W``."""
    aspect = size[0] / size[1]
    best = None
    for h in range(1, count + 1):
        if count % h == 0:
            score = abs(math.log((h / (count // h)) / aspect))
            if best is None or score < best[0]:
                best = (score, h)
    return best[1], count // best[1]


def _renormalise(x: torch.Tensor) -> torch.Tensor:
    return x / x.sum(-1, keepdim=True).clamp_min(1e-12)


def rollout(layers: Sequence[torch.Tensor], residual: float = 0.5) -> torch.Tensor:
    """``[B, N, N]`` rollout of per-block ``[B, N, N]`` head-averaged attention: ``prod_l (r I + (1 - r) A_l)``,
    rows renormalised per block (Abnar & Zuidema 2020, Eq. 1)."""
    eye = torch.eye(layers[0].shape[-1], device=layers[0].device)
    result = None
    for a in layers:
        a = _renormalise(residual * eye + (1 - residual) * a)
        result = a if result is None else a @ result
    return result


@torch.no_grad()
def attention_maps(model: nn.Module, images: torch.Tensor, camids: Optional[torch.Tensor] = None
                   ) -> Dict[str, torch.Tensor]:
    """Attention maps of ``images`` (``[B, 3, H, W]`` preprocessed, 0-255): ``{name: [B, h, w]}``, each map summing
    to one; see the module docstring for the names. Empty when the model has neither a ViT image backbone nor a
    cross-attention module."""
    model.eval()
    batch = {"images": images.to(next(model.parameters()).device)}
    if camids is not None:
        batch["camids"] = torch.as_tensor(camids, dtype=torch.long).to(batch["images"].device)
    recorder = AttentionRecorder(model)
    with recorder:
        model(batch)
    size = images.shape[-2:]
    maps: Dict[str, torch.Tensor] = {}
    if recorder.blocks and all(a is not None for a in recorder.self_attention):
        grid = tuple(recorder.backbone.grid_size)
        layers = recorder.self_attention
        maps["rollout"] = _renormalise(rollout(layers)[:, 0, 1:]).reshape(-1, *grid).cpu()
        maps["last"] = _renormalise(layers[-1][:, 0, 1:]).reshape(-1, *grid).cpu()
    grid = _image_grid(recorder, size)
    recorded = []
    for weights in recorder.cross_attention:
        if weights is None or grid is None:
            continue
        patches = grid[0] * grid[1]
        count = weights.shape[-1]
        if count not in (patches, patches + 1) or patches < 2:
            continue  # keys that are not the image's patch tokens (e.g. text tokens, or the class token alone)
        mean = weights.mean(1)  # [B, M]: the mean over the query tokens
        recorded.append(mean[:, 1:] if count == patches + 1 else mean)
    for i, weights in enumerate(recorded):
        name = "cross" if len(recorded) == 1 else f"cross_{i + 1}"
        maps[name] = _renormalise(weights).reshape(-1, *grid).cpu()
    return maps


def _image_grid(recorder: AttentionRecorder, size: Sequence[int]) -> Optional[Tuple[int, int]]:
    """``(h, w)`` of the image backbone's patch / feature-map tokens: the ViT's grid, or the ModifiedResNet layer4
    map's (the tokens recorded in the forward, arranged with the image's aspect ratio)."""
    if recorder.backbone is not None:
        return tuple(recorder.backbone.grid_size)
    if recorder.token_count:
        return _patch_grid(recorder.token_count, size)
    return None


def _colour_map(x: np.ndarray) -> np.ndarray:
    """``[H, W]`` in [0, 1] -> ``[H, W, 3]`` uint8, blue (low) to red (high) through green and yellow."""
    stops = np.array([[0, 0, 128], [0, 90, 255], [0, 220, 120], [255, 230, 0], [230, 20, 0]], np.float32)
    pos = np.clip(x, 0, 1) * (len(stops) - 1)
    low = np.floor(pos).astype(int).clip(0, len(stops) - 2)
    frac = (pos - low)[..., None]
    return (stops[low] * (1 - frac) + stops[low + 1] * frac).astype(np.uint8)


def heatmap_overlay(image: torch.Tensor, attention: torch.Tensor, alpha: float = 0.5) -> Image.Image:
    """A ``[3, H, W]`` 0-255 image with ``[h, w]`` attention upsampled (bilinear), scaled to its maximum and
    blended over it."""
    height, width = image.shape[-2:]
    up = F.interpolate(attention[None, None].float(), size=(height, width), mode="bilinear", align_corners=False)[0, 0]
    up = (up / up.max().clamp_min(1e-12)).numpy()
    base = image.permute(1, 2, 0).clamp(0, 255).numpy().astype(np.float32)
    blended = (1 - alpha) * base + alpha * _colour_map(up).astype(np.float32)
    return Image.fromarray(blended.round().astype(np.uint8))
