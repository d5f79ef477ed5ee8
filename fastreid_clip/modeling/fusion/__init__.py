"""Text-image fusion: a query sequence attends to image tokens, then transformer blocks (PromptSG's MIM)."""

from .cross_attention import CrossAttention, QueryState, TextQueryFusion

__all__ = ["CrossAttention", "QueryState", "TextQueryFusion"]
