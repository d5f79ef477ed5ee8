"""Config keys of CLIP-ReID (``ClipReID``): prompts, text losses and its two stages."""

from __future__ import annotations

from fastreid.config import CfgNode as CN

from .stages import add_stage_config

__all__ = ["add_clip_reid_config"]


def add_clip_reid_config(cfg: CN) -> None:
    """Add ``MODEL.PROMPT``, ``MODEL.LOSSES.{I2T,SUPCON}`` and ``STAGES.{PROMPT,IMAGE}`` (CLIP-ReID ViT-B/16 values)."""
    cfg.MODEL.PROMPT = CN()
    cfg.MODEL.PROMPT.N_CTX = 4  # learnable tokens per identity, M [both; paper: 1 too few, 8 redundant]
    cfg.MODEL.PROMPT.CLASS_WORD = "person"  # "vehicle" for VeRi-776 / VehicleID [ref-code]
    cfg.MODEL.PROMPT.INIT_STD = 0.02  # context init N(0, 0.02^2) [ref-code]
    # Run the causal text encoder only up to EOT (12 of 77 tokens for M = 4): the same features and gradients as the
    # full context (tested), several times cheaper. False = the reference's full 77-token context.
    cfg.MODEL.PROMPT.TRUNCATE_AT_EOT = True
    cfg.MODEL.LOSSES.I2T = CN()
    cfg.MODEL.LOSSES.I2T.SCALE = 1.0  # weight of the stage-2 image-to-text CE over all identities (Eq. 8) [both]
    cfg.MODEL.LOSSES.I2T.EPSILON = 0.1  # its label smoothing (CLIP-ReID form) [both]
    cfg.MODEL.LOSSES.SUPCON = CN()
    cfg.MODEL.LOSSES.SUPCON.TEMPERATURE = 1.0  # stage-1 SupCon on raw dot products, tau = 1 [ref-code]

    # Stage 1, prompt learning on cached image features [ref-code vit_clipreid.yml STAGE1; RN50: 60 epochs].
    add_stage_config(cfg, "prompt", EPOCHS=120, TRAINABLE=("prompt_learner",), DATA="features", IMS_PER_BATCH=64,
                     OPT="Adam", BASE_LR=3.5e-4, WEIGHT_DECAY=1e-4, WEIGHT_DECAY_BIAS=1e-4, BIAS_LR_FACTOR=1.0,
                     SCHED="CosineEpochLR", WARMUP_EPOCHS=5, WARMUP_LR_INIT=1e-5, ETA_MIN_LR=1e-6,
                     CHECKPOINT_PERIOD=120, EVAL_PERIOD=0)
    # Stage 2, image-encoder fine-tuning [ref-code vit_clipreid.yml STAGE2].
    add_stage_config(cfg, "image", EPOCHS=60, TRAINABLE=("backbone", "head", "head_proj"), DATA="images",
                     IMS_PER_BATCH=64, OPT="Adam", BASE_LR=5e-6, WEIGHT_DECAY=1e-4, WEIGHT_DECAY_BIAS=1e-4,
                     BIAS_LR_FACTOR=2.0, SCHED="WarmupMultiStepEpochLR", STEPS=(30, 50), GAMMA=0.1,
                     WARMUP_FACTOR=0.1, WARMUP_EPOCHS=10, CHECKPOINT_PERIOD=10, EVAL_PERIOD=60)
