"""Caption embeddings of the training set, computed once before training and delivered with each sample.

With a frozen text encoder and fixed captions the caption embedding ``t`` of an image is a constant (notes §8.3),
so CLIP-SCGI encodes every distinct caption once instead of running the text encoder on 64 captions per
iteration. :func:`caption_sample_fields` is what ``ClipSCGI.train_sample_fields`` returns to
:func:`~fastreid_clip.data.build.build_clip_train_set` (docs/architecture.md "Per-sample fields"):

* ``CAPTIONS.CACHE True``: ``{"caption_embeds": [N, E] float32}``. The distinct captions are sorted by length
  (each batch is padded only to its longest EOT + 1), split into contiguous shards, one per rank, encoded in
  batches of ``CAPTIONS.BATCH_SIZE`` with a progress bar on the main process, and all-gathered in rank order, as
  :mod:`.feature_cache` does for image features; row ``i`` belongs to training item ``i`` on every rank.
* ``CAPTIONS.CACHE False``: ``{"caption_tokens": [N, 77] int64}`` token ids; the model encodes them every
  iteration (the reference for the cache: the same losses, tested).

The cache's text encoder is built from ``MODEL.BACKBONE.*`` (the model's text tower is the same frozen CLIP
tower), so the weights must come from a file (``MODEL.BACKBONE.PRETRAIN True``): two randomly initialised towers
would differ.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Sequence

import torch
from fastreid.utils import comm
from tqdm import tqdm

from ..config.validate import ConfigValueError
from ..data.captions import load_train_captions

__all__ = ["encode_captions", "caption_sample_fields", "tokenize_captions"]

logger = logging.getLogger(__name__)


def _shard(n: int, rank: int, world: int) -> range:
    per = (n + world - 1) // world
    return range(min(n, rank * per), min(n, (rank + 1) * per))


@torch.no_grad()
def encode_captions(texts: Sequence[str], text_encoder: torch.nn.Module, device: torch.device,
                    batch_size: int = 256) -> torch.Tensor:
    """``[N, E]`` float32 pooled, projected EOT features of ``texts`` (one text-encoder pass per distinct text).

    Each rank encodes a contiguous shard of the distinct texts; the shards are gathered, so every rank returns the
    same tensor (on ``device``). The encoder runs in eval mode in float32 without autocast.
    """
    unique = sorted(set(texts), key=lambda t: (len(t), t))
    index = {t: i for i, t in enumerate(unique)}
    rank, world = comm.get_rank(), comm.get_world_size()
    mine = [unique[i] for i in _shard(len(unique), rank, world)]
    was_training = text_encoder.training
    text_encoder.eval()
    parts = []
    starts = range(0, len(mine), batch_size)
    for start in tqdm(starts, desc="Caching caption embeddings", disable=not comm.is_main_process(), leave=False):
        tokens = text_encoder.tokenize(mine[start:start + batch_size]).to(device)
        with torch.autocast(device.type, enabled=False):
            parts.append(text_encoder(tokens).float())
    text_encoder.train(was_training)
    out_dim = text_encoder.output_dim
    table = torch.cat(parts) if parts else torch.zeros(0, out_dim, device=device)
    if world > 1:
        table = torch.cat([t for t in comm.all_gather(table.cpu())]).to(device)
    logger.info("Cached %d caption embeddings (%d distinct captions) of dimension %d", len(texts), len(unique),
                table.shape[1])
    return table[torch.tensor([index[t] for t in texts], dtype=torch.long, device=table.device)]


def tokenize_captions(texts: Sequence[str], text_encoder) -> torch.Tensor:
    """``[N, context]`` token ids (the tokenizer truncates over-long captions to 76 tokens + EOT)."""
    unique = sorted(set(texts))
    table = text_encoder.tokenize(unique)
    index = {t: i for i, t in enumerate(unique)}
    return table[torch.tensor([index[t] for t in texts], dtype=torch.long)]


def caption_sample_fields(cfg, img_items: List[tuple]) -> Dict[str, torch.Tensor]:
    """Per-sample caption data of the training items (see the module docstring)."""
    from ..modeling.backbones import build_clip_towers

    if cfg.CAPTIONS.CACHE and not cfg.MODEL.BACKBONE.PRETRAIN:
        raise ConfigValueError("CAPTIONS.CACHE", True, "False when MODEL.BACKBONE.PRETRAIN is False",
                               "the cache is encoded by a text tower built from the CLIP weight file; two randomly "
                               "initialised towers would differ from each other")
    if isinstance(cfg.CAPTIONS.BATCH_SIZE, bool) or not isinstance(cfg.CAPTIONS.BATCH_SIZE, int) \
            or cfg.CAPTIONS.BATCH_SIZE < 1:
        raise ConfigValueError("CAPTIONS.BATCH_SIZE", cfg.CAPTIONS.BATCH_SIZE, "an integer >= 1")
    texts, _ = load_train_captions(cfg, img_items)
    text = build_clip_towers(cfg).text.freeze()
    if not cfg.CAPTIONS.CACHE:
        return {"caption_tokens": tokenize_captions(texts, text)}
    device = torch.device(cfg.MODEL.DEVICE)
    embeds = encode_captions(texts, text.to(device), device, cfg.CAPTIONS.BATCH_SIZE)
    return {"caption_embeds": embeds.cpu()}
