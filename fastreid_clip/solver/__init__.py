from .build import build_stage_optimizer, build_stage_scheduler
from .lr_scheduler import CosineEpochLR, WarmupMultiStepEpochLR, cosine_epoch_lr, warmup_multistep_factor
from .optimizer import clip_param_groups

__all__ = ["build_stage_optimizer", "build_stage_scheduler", "CosineEpochLR", "WarmupMultiStepEpochLR",
           "cosine_epoch_lr", "warmup_multistep_factor", "clip_param_groups"]
