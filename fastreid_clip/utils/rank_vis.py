"""A picture of ranked retrievals: each row is a query followed by its top-k gallery matches."""

from __future__ import annotations

import os
from typing import List

import numpy as np
import torch
from PIL import Image, ImageDraw

__all__ = ["save_ranked_retrievals", "rank_for_queries"]

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

    height, width = thumb
    pad = 6
    queries = np.linspace(0, num_query - 1, num=min(num_queries, num_query)).astype(int)
    canvas = Image.new("RGB", ((top_k + 1) * (width + pad) + pad * 3, len(queries) * (height + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for row, q in enumerate(queries):
        ranked = rank_for_queries(feats[q], g_feat, pids[q], cams[q], g_pids, g_cams, top_k)
        top = pad + row * (height + pad)
        cells = [(paths[q], _GREY)] + [(paths[num_query + g], _GREEN if g_pids[g] == pids[q] else _RED) for g in ranked]
        for col, (img_path, colour) in enumerate(cells):
            left = pad + col * (width + pad) + (pad * 2 if col else 0)
            with Image.open(img_path) as image:
                canvas.paste(image.convert("RGB").resize((width, height)), (left, top))
            draw.rectangle([left - 2, top - 2, left + width + 1, top + height + 1], outline=colour, width=3)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    canvas.save(path, quality=92)
    return path
