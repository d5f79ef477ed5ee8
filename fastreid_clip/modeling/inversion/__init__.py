"""Textual inversion: image features -> pseudo-word token embeddings (PromptSG; CLIP-SCGI's global branch)."""

from .batch_norm import GlobalBatchNorm1d
from .inversion_net import InversionNet

__all__ = ["InversionNet", "GlobalBatchNorm1d"]
