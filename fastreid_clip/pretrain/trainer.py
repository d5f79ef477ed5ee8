"""The contrastive pretraining loop: open_clip's ``ClipLoss`` on in-batch negatives, AdamW, cosine schedule.

One step: the batch of the step (:mod:`.sampler`), horizontal flips drawn from ``(seed, step)`` (the captions
never say left or right), CLIP normalisation, image and text embeddings under autocast (bfloat16 on the CPU,
float16 with a GradScaler or bfloat16 on CUDA, or float32), ``open_clip.loss.ClipLoss`` in float32, backward,
optional gradient-norm clipping, AdamW step at the step's learning rate, ``logit_scale`` clamped to
``[0, log 100]``. Checkpoints every ``checkpoint_period`` steps and after the last one; ``resume=True`` continues
from the newest valid checkpoint and ends with the same weights (``torch.equal``) as an uninterrupted run on the
same machine, thread count and precision.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

from .checkpoints import load_latest_checkpoint, save_checkpoint
from .data import EncodedCorpus
from .model import ClipPair, create_pretrain_model
from .optim import CosineWarmup, build_optimizer
from .sampler import build_batch_plan
from .transforms import RESIZE_MODES, normalize

__all__ = ["PRECISIONS", "PretrainConfig", "PretrainResult", "corpus_digest", "pretrain", "ResumeMismatch"]

logger = logging.getLogger(__name__)
PRECISIONS = ("bf16", "fp16", "fp32")


class ResumeMismatch(ValueError):
    """The checkpoint in the output folder was written by a run with other settings or another corpus."""


@dataclass
class PretrainConfig:
    arch: str = "ViT-Tiny-16"
    image_size: int = 128
    resize_mode: str = "stretch"
    steps: int = 1000
    batch_size: int = 64
    lr: float = 5e-4
    min_lr: float = 0.0
    warmup_steps: int = 50
    weight_decay: float = 0.2
    grad_clip: float = 0.0  # max gradient L2 norm; 0 = no clipping
    seed: int = 0
    precision: str = "bf16"
    sampler: str = "distinct"
    flip: bool = True
    checkpoint_period: int = 200
    keep_checkpoints: int = 2
    device: str = "cpu"

    def check(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"--precision must be one of {PRECISIONS}, got '{self.precision}'")
        if self.precision == "fp16" and not self.device.startswith("cuda"):
            raise ValueError("--precision fp16 needs CUDA (use bf16 on the CPU)")
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"--resize must be one of {RESIZE_MODES}, got '{self.resize_mode}'")
        for name in ("steps", "batch_size", "image_size", "checkpoint_period", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.warmup_steps < 0 or self.lr <= 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("--warmup-steps, --weight-decay and --grad-clip must be >= 0 and --lr > 0")

    # settings that change the trajectory: a resumed run must have the same
    def trajectory(self) -> dict:
        d = asdict(self)
        for key in ("checkpoint_period", "keep_checkpoints"):
            d.pop(key)
        return d


@dataclass
class PretrainResult:
    model: torch.nn.Module
    losses: List[float]
    logit_scales: List[float]
    images_per_second: float
    wall_seconds: float
    resumed_from: Optional[int] = None
    extra: Dict[str, float] = field(default_factory=dict)


def corpus_digest(corpus: EncodedCorpus) -> str:
    """BLAKE2b of the encoded images, tokens and identities (a resumed run must train on the same corpus)."""
    h = hashlib.blake2b(digest_size=16)
    for t in (corpus.images, corpus.tokens, corpus.identities):
        h.update(str((t.dtype, tuple(t.shape))).encode())
        h.update(memoryview(t.contiguous().view(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


def _autocast(config: PretrainConfig, device: torch.device):
    if config.precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if config.precision == "bf16" else torch.float16)


def _batch(corpus: EncodedCorpus, plan, config: PretrainConfig, step: int, device: torch.device):
    index = plan.batch(step)
    images = corpus.images[index]
    if config.flip:
        flips = torch.from_numpy(np.random.default_rng([config.seed, 14, step]).random(len(index)) < 0.5)
        images[flips] = images[flips].flip(-1)
    tokens = corpus.tokens[index]
    max_eot = int(tokens.argmax(dim=-1).max())
    return normalize(images.to(device, non_blocking=True)), tokens.to(device, non_blocking=True), max_eot


def pretrain(config: PretrainConfig, corpus: EncodedCorpus, out_dir: str, resume: bool = False,
             on_step: Optional[Callable[[int, float], None]] = None, progress: bool = True) -> PretrainResult:
    """Train ``config.steps`` steps on ``corpus``, checkpointing into ``out_dir/checkpoints``.

    Args:
        on_step: called as ``on_step(step, loss)`` after every step (after its checkpoint); an exception raised
            there stops the run like a kill would (tests).
    """
    config.check()
    from open_clip.loss import ClipLoss
    from tqdm import tqdm

    device = torch.device(config.device)
    model = create_pretrain_model(config.arch, config.image_size, config.seed).to(device).train()
    pair = ClipPair(model, config.arch)
    optimizer = build_optimizer(model, config.lr, config.weight_decay, device=device)
    schedule = CosineWarmup(config.lr, config.steps, config.warmup_steps, config.min_lr)
    scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "fp16")
    plan = build_batch_plan(config.sampler, corpus.identities, config.batch_size, config.seed)
    loss_fn = ClipLoss()
    digest = corpus_digest(corpus)
    losses: List[float] = []
    scales: List[float] = []
    start, resumed_from = 0, None

    if resume:
        found = load_latest_checkpoint(out_dir)
        if found is None:
            logger.info("--resume: no valid checkpoint in %s, starting from step 0", out_dir)
        else:
            path, ckpt = found
            if ckpt.get("config") != config.trajectory():
                diff = sorted(k for k in set(ckpt.get("config", {})) | set(config.trajectory())
                              if ckpt.get("config", {}).get(k) != config.trajectory().get(k))
                raise ResumeMismatch(f"'{path}' was written with other settings ({', '.join(diff)} differ): resume "
                                     f"with the same arguments, or choose another --out")
            if ckpt.get("corpus_digest") != digest:
                raise ResumeMismatch(f"'{path}' was trained on another corpus (different images, captions or "
                                     f"order): resume with the same corpus arguments, or choose another --out")
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scaler.load_state_dict(ckpt["scaler"]) if ckpt.get("scaler") else None
            start = resumed_from = int(ckpt["step"])
            losses, scales = list(ckpt["losses"]), list(ckpt["logit_scales"])
            logger.info("resuming from %s (step %d of %d)", path, start, config.steps)

    def checkpoint(step: int) -> None:
        save_checkpoint(out_dir, step, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else {}, "config": config.trajectory(),
            "schedule": schedule.state_dict(), "corpus_digest": digest, "losses": losses, "logit_scales": scales,
        }, keep=config.keep_checkpoints)

    timed_images, timed_seconds = 0, 0.0
    wall = time.perf_counter()
    bar = tqdm(total=config.steps, initial=start, desc=f"pretrain {config.arch}", unit="step",
               disable=not progress, dynamic_ncols=True)
    try:
        for step in range(start, config.steps):
            tic = time.perf_counter()
            images, tokens, max_eot = _batch(corpus, plan, config, step, device)
            schedule.apply(optimizer, step)
            with _autocast(config, device):
                image_features, text_features, logit_scale = pair(images, tokens, max_eot)
            loss = loss_fn(image_features.float(), text_features.float(), logit_scale.float())
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if config.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            pair.clamp_logit_scale()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"pretraining loss is {value} at step {step}: lower --lr or use fp32")
            losses.append(value)
            scales.append(float(model.logit_scale.detach().exp()))
            seconds = time.perf_counter() - tic
            if step > start:  # the first step of a process pays one-off costs
                timed_images += len(tokens)
                timed_seconds += seconds
            done = step + 1
            if done % config.checkpoint_period == 0 or done == config.steps:
                checkpoint(done)
            bar.update(1)
            bar.set_postfix(loss=f"{value:.3f}", scale=f"{scales[-1]:.1f}",
                            img_s=f"{timed_images / timed_seconds:.0f}" if timed_seconds else "-", refresh=False)
            if on_step is not None:
                on_step(step, value)
    finally:
        bar.close()
    rate = timed_images / timed_seconds if timed_seconds else float("nan")
    return PretrainResult(model.eval(), losses, scales, rate, time.perf_counter() - wall, resumed_from)
