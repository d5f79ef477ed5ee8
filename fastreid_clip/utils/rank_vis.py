"""A picture of ranked retrievals: each row is a query followed by its top-k gallery matches."""

from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image, ImageDraw

__all__ = ["save_ranked_retrievals", "rank_for_queries", "draw_ranked_rows", "match_colour"]

_GREEN, _RED, _GREY = (40, 170, 60), (210, 40, 40), (128, 128, 128)


def rank_for_queries(q_feat: torch.Tensor, g_feat: torch.Tensor, q_pid: int, q_cam: int, g_pids: np.ndarray,
                     g_cams: np.ndarray, top_k: int) -> List[int]:
    """Indices of the ``top_k`` closest gallery items (cosine) after removing same-id same-camera junk."""
    dist = 1.0 - g_feat @ q_feat
    order = torch.argsort(dist, stable=True).numpy()
    keep = ~((g_pids[order] == q_pid) & (g_cams[order] == q_cam))
    return order[keep][:top_k].tolist()


@torch.no_grad()
def save_ranked_retrievals(model: torch.nn.Module, cfg, dataset_name: str, path: str, num_queries: int = 6,
                           top_k: int = 8, thumb=(128, 64)) -> str:
    """Run ``model`` over ``dataset_name``'s query+gallery and draw ``num_queries`` evenly spread queries.

    Correct matches get a green frame, wrong ones red; the query has a grey frame.
    """
    from ..data.build import build_clip_test_loader

    loader, num_query = build_clip_test_loader(cfg, dataset_name)
    was_training = model.training
    model.eval()
    feats, pids, cams = [], [], []
    for batch in loader:
        feats.append(torch.nn.functional.normalize(model(batch).float(), dim=1).cpu())
        pids.append(batch["targets"].cpu())
        cams.append(batch["camids"].cpu())
    model.train(was_training)
    feats = torch.cat(feats)
    pids, cams = torch.cat(pids).numpy(), torch.cat(cams).numpy()
    paths = [item[0] for item in loader.dataset.img_items]
    g_feat, g_pids, g_cams = feats[num_query:], pids[num_query:], cams[num_query:]

    queries = np.linspace(0, num_query - 1, num=min(num_queries, num_query)).astype(int)
    rows = []
    for q in queries:
        ranked = rank_for_queries(feats[q], g_feat, pids[q], cams[q], g_pids, g_cams, top_k)
        rows.append([(paths[q], _GREY)] + [(paths[num_query + g], _GREEN if g_pids[g] == pids[q] else _RED)
                                           for g in ranked])
    return draw_ranked_rows(rows, path, columns=top_k + 1, thumb=thumb)


def match_colour(correct: Optional[bool]) -> Tuple[int, int, int]:
    """Frame colour of a match: green (same identity), red (another), grey (unknown: no identity labels)."""
    return _GREY if correct is None else (_GREEN if correct else _RED)


def draw_ranked_rows(rows: Sequence[Sequence[Tuple[Union[str, Image.Image], Tuple[int, int, int]]]], path: str,
                     columns: Optional[int] = None, thumb=(128, 64)) -> str:
    """Draw rows of framed thumbnails and save the picture to ``path``.

    Args:
        rows: per row, ``(image, frame colour)`` cells; an image is a file path or a PIL image. The first cell of
            a row (the query) is set apart from the rest by a wider gap.
        path: output file (its folder is created).
        columns: cells per row the canvas has room for (default: the longest row).
        thumb: ``(height, width)`` of every thumbnail.
    """
    height, width = thumb
    pad = 6
    columns = columns or max((len(r) for r in rows), default=1)
    canvas = Image.new("RGB", (columns * (width + pad) + pad * 3, len(rows) * (height + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for row, cells in enumerate(rows):
        top = pad + row * (height + pad)
        for col, (image, colour) in enumerate(cells):
            left = pad + col * (width + pad) + (pad * 2 if col else 0)
            if isinstance(image, Image.Image):
                canvas.paste(image.convert("RGB").resize((width, height)), (left, top))
            else:
                with Image.open(image) as img:
                    canvas.paste(img.convert("RGB").resize((width, height)), (left, top))
            draw.rectangle([left - 2, top - 2, left + width + 1, top + height + 1], outline=colour, width=3)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    canvas.save(path, quality=92)
    return path
