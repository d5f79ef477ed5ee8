"""Textual inversion: image features -> pseudo-word token embeddings (PromptSG; CLIP-SCGI's caption-guided
inversion)."""

from .batch_norm import GlobalBatchNorm1d
from .caption_guided import CaptionGuidedInversion
from .inversion_net import InversionNet

__all__ = ["InversionNet", "GlobalBatchNorm1d", "CaptionGuidedInversion"]
