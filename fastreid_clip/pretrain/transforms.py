"""Corpus image -> CLIP input tensor, caption -> CLIP token ids.

Images are brought to the square pretraining size once (:func:`to_square_uint8`) and kept as ``uint8``; the
float conversion and CLIP's normalisation (:func:`normalize`, open_clip's ``OPENAI_DATASET_MEAN/STD``) run per
batch. Two ways to make the 2:1 person crops square:

* ``"stretch"`` (default): resize to ``S x S``. Every pixel is the person or its scene (letterboxing would spend
  half of the tokens on padding), and the horizontal positions of the square grid map onto the ReID grid exactly
  as the loader's bilinear position-table resize (square grid -> 16x8) maps them.
* ``"letterbox"``: keep the aspect ratio, resize the longer side to ``S`` and pad with the CLIP mean colour.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

__all__ = ["CLIP_MEAN", "CLIP_STD", "RESIZE_MODES", "to_square_uint8", "normalize", "tokenize_captions"]

RESIZE_MODES = ("stretch", "letterbox")


def _clip_stats() -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    return tuple(OPENAI_DATASET_MEAN), tuple(OPENAI_DATASET_STD)


CLIP_MEAN, CLIP_STD = _clip_stats()


def to_square_uint8(image: Image.Image, size: int, mode: str = "stretch") -> torch.Tensor:
    """``[3, size, size]`` uint8 tensor of a PIL image (bicubic resize, as CLIP's preprocessing)."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got '{mode}'")
    image = image.convert("RGB")
    if mode == "stretch":
        image = image.resize((size, size), Image.BICUBIC)
    else:
        width, height = image.size
        scale = size / max(width, height)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        fill = tuple(int(round(255 * m)) for m in CLIP_MEAN)
        canvas = Image.new("RGB", (size, size), fill)
        canvas.paste(image.resize((new_w, new_h), Image.BICUBIC), ((size - new_w) // 2, (size - new_h) // 2))
        image = canvas
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def normalize(images_uint8: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(x / 255 - mean) / std`` of a ``[B, 3, H, W]`` uint8 batch (open_clip's CLIP normalisation)."""
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32, device=images_uint8.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float32, device=images_uint8.device).view(1, 3, 1, 1)
    return ((images_uint8.float() / 255.0 - mean) / std).to(dtype)


def tokenize_captions(captions: Sequence[str], arch: str, context_length: int = 77) -> torch.Tensor:
    """``[N, context_length]`` CLIP BPE token ids (``open_clip.get_tokenizer(arch)``, offline). Identical
    captions are tokenized once. Raises ValueError for a caption longer than the context (it would be cut)."""
    import open_clip

    from ..modeling.backbones import register_model_configs

    register_model_configs()
    tokenizer = open_clip.get_tokenizer(arch)
    unique: List[str] = sorted(set(captions))
    tokens = tokenizer(unique, context_length=context_length)
    # open_clip puts EOT last when it truncates: a caption is complete when its EOT is followed by padding
    eot = tokens.argmax(dim=-1)
    cut = [c for c, e in zip(unique, eot.tolist()) if e == context_length - 1 and len(tokenizer.encode(c)) + 2 > context_length]
    if cut:
        raise ValueError(f"{len(cut)} captions are longer than the {context_length}-token context (e.g. '{cut[0][:80]}...')")
    row = {c: i for i, c in enumerate(unique)}
    return tokens[torch.tensor([row[c] for c in captions], dtype=torch.long)] if captions else tokens[:0]
