"""Position-table geometry: token grids of strided patch embeddings and bilinear table resizing."""

from __future__ import annotations

import math
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F

from ...config.validate import ConfigValueError

__all__ = ["check_patch_stride", "patch_grid", "square_grid", "resize_pos_embed"]


def check_patch_stride(stride: Sequence[int], patch_size: int,
                       key: str = "MODEL.BACKBONE.STRIDE_SIZE") -> Tuple[int, int]:
    """``(s_h, s_w)`` if ``stride`` is 2 integers in ``[1, patch_size]``, else :class:`ConfigValueError` naming
    ``key`` (a stride above the patch size would skip pixels between patches)."""
    values = tuple(stride) if isinstance(stride, (tuple, list)) else (stride,)
    if len(values) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= patch_size
                                   for v in values):
        raise ConfigValueError(key, stride, f"2 integers from 1 to the patch size {patch_size} (({patch_size}, "
                                            f"{patch_size}) = CLIP's patches, (12, 12) = overlapping patches)")
    return values


def patch_grid(image_size: Sequence[int], patch_size: int, stride: Sequence[int]) -> Tuple[int, int]:
    """Token grid of a ``patch_size`` convolution with ``stride`` over an ``image_size`` input.

    ``h = (H - P) // s_h + 1`` and ``w = (W - P) // s_w + 1``: 16x8 for 256x128 at stride 16, 21x10 at
    stride 12 (CLIP-ReID's overlapping patches).
    """
    height, width = image_size
    sh, sw = check_patch_stride(stride, patch_size)
    if height < patch_size or width < patch_size:
        raise ValueError(f"input {height}x{width} is smaller than the {patch_size}x{patch_size} patch")
    return (height - patch_size) // sh + 1, (width - patch_size) // sw + 1


def square_grid(num_tokens: int, what: str) -> Tuple[int, int]:
    """The square grid of a checkpoint's table with ``num_tokens`` grid rows (CLIP checkpoints are square)."""
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise ValueError(f"{what}: {num_tokens} grid rows are not a square grid; pass the source grid explicitly")
    return side, side


def resize_pos_embed(pos_embed: torch.Tensor, src_grid: Sequence[int], dst_grid: Sequence[int]) -> torch.Tensor:
    """Resize a ``[1 + h*w, D]`` position table (class row first) to another grid.

    CLIP-ReID's behaviour: the class row is kept; the grid rows are reshaped row-major to ``h x w x D``,
    resized with bilinear interpolation (``align_corners=False``, no antialias) and flattened row-major.
    open_clip's own resize (bicubic + antialias) differs by up to ~0.05, so it is not used.

    Args:
        pos_embed: ``[1 + src_h * src_w, D]`` table.
        src_grid: ``(src_h, src_w)``.
        dst_grid: ``(dst_h, dst_w)``.

    Returns:
        ``[1 + dst_h * dst_w, D]`` table, in the input's dtype. The input itself when the grids are equal.
    """
    src_h, src_w = src_grid
    dst_h, dst_w = dst_grid
    if pos_embed.shape[0] != 1 + src_h * src_w:
        raise ValueError(f"position table has {pos_embed.shape[0]} rows, expected 1 + {src_h}*{src_w}")
    if (src_h, src_w) == (dst_h, dst_w):
        return pos_embed
    cls_row, grid = pos_embed[:1], pos_embed[1:]
    dim = grid.shape[-1]
    grid = grid.float().reshape(1, src_h, src_w, dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(dst_h, dst_w), mode="bilinear", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(dst_h * dst_w, dim).to(pos_embed.dtype)
    return torch.cat([cls_row, grid], dim=0)
