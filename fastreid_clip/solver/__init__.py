from .build import build_clip_lr_scheduler
from .lr_scheduler import WarmupMultiStepEpochLR, warmup_multistep_factor
from .optimizer import build_clip_optimizer, clip_param_groups

__all__ = ["build_clip_lr_scheduler", "WarmupMultiStepEpochLR", "warmup_multistep_factor", "build_clip_optimizer",
           "clip_param_groups"]
