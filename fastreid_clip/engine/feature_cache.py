"""Caching image features of the whole training set once (prompt-learning stages), sharded across ranks."""

from __future__ import annotations

import logging
from typing import Callable, Dict, Tuple

import torch
from fastreid.data.build import build_reid_test_loader
from fastreid.utils import comm
from tqdm import tqdm

from ..config.validate import check_test_batch_size
from ..data.build import ReIDImageDataset
from ..data.transforms import build_clip_transforms

__all__ = ["cache_train_features"]

logger = logging.getLogger(__name__)


@torch.no_grad()
def cache_train_features(cfg, train_set: ReIDImageDataset, encode: Callable[[Dict], torch.Tensor],
                         model: torch.nn.Module, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """Encode every training image once with the TEST transform and gather the result on every rank.

    The model runs in eval mode (a ResNet's BatchNorm uses its running statistics, as in the reference) and under
    autocast when ``SOLVER.AMP.ENABLED``. Each rank encodes a contiguous shard (FastReID's ``InferenceSampler``);
    the shards are all-gathered in rank order, so row ``i`` is training image ``i`` on every rank.

    Args:
        train_set: the training set; its labels (relabelled pids) are reused, its transform is not.
        encode: ``batch -> [b, D]`` features (e.g. the model's projected feature without SIE).

    Returns:
        ``([N, D] features, [N] labels)`` on ``device``; features in the autocast dtype (fp16 on CUDA).
    """
    dataset = ReIDImageDataset(train_set.img_items, build_clip_transforms(cfg, is_train=False), relabel=True)
    loader, _ = build_reid_test_loader(test_set=dataset, test_batch_size=check_test_batch_size(cfg), num_query=0,
                                       num_workers=cfg.DATALOADER.NUM_WORKERS)
    was_training = model.training
    model.eval()
    feats, labels = [], []
    amp = cfg.SOLVER.AMP.ENABLED
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    progress = tqdm(loader, desc="Caching train features", disable=not comm.is_main_process(), leave=False)
    for batch in progress:
        with torch.autocast(device.type, dtype=dtype, enabled=amp):
            feats.append(encode(batch))
        labels.append(batch["targets"].to(device))
    model.train(was_training)
    feats, labels = torch.cat(feats), torch.cat(labels)
    if comm.get_world_size() > 1:
        gathered = comm.all_gather((feats.cpu(), labels.cpu()))
        feats = torch.cat([f for f, _ in gathered]).to(device)
        labels = torch.cat([l for _, l in gathered]).to(device)
    logger.info("Cached %d training features of dimension %d", feats.shape[0], feats.shape[1])
    return feats, labels.long()
