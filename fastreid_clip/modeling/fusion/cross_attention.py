"""Cross-attention of a (text) query over image tokens followed by N transformer blocks.

PromptSG's multimodal interaction module (paper §4.2, Eq. 7, Fig. 3, Tab. 5): the prompt's text feature is the
query, the visual encoder's patch embeddings are keys and values, ``A = softmax(QK^T / sqrt(d)) V``, then "two
transformer blocks following the cross-attention layer" (METER-style fusion). CLIP-SCGI's contextual feature fusion
is the same block with the prompt's token sequence as the query sequence (notes §6.4), so the module takes any
``[B, Lq, Dq]`` query and ``[B, M, Dkv]`` keys/values.

The attention is ``torch.nn.functional.scaled_dot_product_attention`` (fused kernels); the blocks are open_clip's
``ResidualAttentionBlock`` (``nn.MultiheadAttention``, also fused). The query side is split out
(:meth:`TextQueryFusion.encode_query`) so a fixed query, PromptSG's "A photo of a person", is projected once and
reused for every image (notes §8.4).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from open_clip.transformer import LayerNorm, ResidualAttentionBlock

from ...config.validate import ConfigValueError

__all__ = ["CrossAttention", "QueryState", "TextQueryFusion"]


class QueryState(NamedTuple):
    """The query side of the cross-attention, computed from the query alone.

    Attributes:
        stream: ``[Bq, Lq, D]`` residual stream entering the cross-attention (the query in the fusion width).
        q: ``[Bq, Lq, D]`` projected queries ``W_q LN(stream) + b_q``.
    """

    stream: torch.Tensor
    q: torch.Tensor


class CrossAttention(nn.Module):
    """Pre-LN multi-head cross-attention with a residual on the query stream: ``x + W_o A(W_q LN(x), W_k LN(kv),
    W_v LN(kv))`` (no FFN: PromptSG's "cross-layer" is followed by full transformer blocks).

    Args:
        dim: query / output width ``D``.
        kv_dim: width of the key/value tokens (projected to ``D`` by ``W_k``, ``W_v``).
        num_heads: attention heads (``D`` must be a multiple).
        residual: add the query stream to the output; False returns ``W_o A(...)`` alone (Eq. 7 as printed), so
            the query only steers the attention weights and the content comes from the image tokens.
    """

    def __init__(self, dim: int, kv_dim: int, num_heads: int, residual: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.residual = residual
        self.ln_q = LayerNorm(dim)
        self.ln_kv = LayerNorm(kv_dim)
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(kv_dim, dim)
        self.v_proj = nn.Linear(kv_dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def project_query(self, stream: torch.Tensor) -> torch.Tensor:
        """``[B, Lq, D]`` -> ``[B, Lq, D]`` projected queries (depends on the query only)."""
        return self.q_proj(self.ln_q(stream))

    def forward(self, stream: torch.Tensor, kv: torch.Tensor, q: Optional[torch.Tensor] = None,
                kv_padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Attend from the query stream over ``kv``.

        Args:
            stream: ``[B or 1, Lq, D]`` query stream (a batch of 1 is broadcast over the images).
            kv: ``[B, M, Dkv]`` key/value tokens.
            q: ``project_query(stream)`` when already computed (a cached fixed query).
            kv_padding_mask: ``[B, M]`` True where a key is padding (ignored).

        Returns:
            ``[B, Lq, D]`` = ``stream + W_o softmax(Q K^T / sqrt(d)) V`` (without ``stream`` if not ``residual``).
        """
        batch, length = kv.shape[0], kv.shape[1]
        q = self.project_query(stream) if q is None else q
        kv = self.ln_kv(kv)
        heads, dim = self.num_heads, q.shape[-1]

        def split(x: torch.Tensor) -> torch.Tensor:  # [b, L, D] -> [b, heads, L, D / heads]
            return x.reshape(x.shape[0], x.shape[1], heads, dim // heads).transpose(1, 2)

        k, v = split(self.k_proj(kv)), split(self.v_proj(kv))
        qh = split(q.to(k.dtype)).expand(batch, -1, -1, -1)
        mask = None
        if kv_padding_mask is not None:
            mask = ~kv_padding_mask.view(batch, 1, 1, length)
        out = F.scaled_dot_product_attention(qh, k, v, attn_mask=mask)
        out = self.out_proj(out.transpose(1, 2).reshape(batch, -1, dim))
        return stream.to(out.dtype) + out if self.residual else out.expand(batch, -1, -1)


class TextQueryFusion(nn.Module):
    """One cross-attention layer (query over image tokens) followed by ``depth`` transformer blocks on the query.

    ``query [B, Lq, Dq] -> (Linear to D if Dq != D) -> CrossAttention(., kv) -> depth x ResidualAttentionBlock
    (self-attention over the Lq query tokens + MLP) -> LayerNorm -> [B, Lq, D]``. PromptSG: ``Lq = 1`` (the pooled
    prompt feature), kv = the projected patch tokens, ``D = 512``, 8 heads, ``depth = 2`` (Tab. 5's "1 cross & 2
    self-layer"), MLP ratio 4, pre-LN [width/heads/LN/ratio unverified, notes §5.3]. With one query token the
    self-attention reduces to a linear map plus a residual. The final LayerNorm is [unverified].

    Args:
        query_dim: width of the query features ``Dq``.
        kv_dim: width of the key/value tokens.
        width: fusion width ``D`` (0 = ``query_dim``).
        num_heads: heads of every attention layer.
        depth: transformer blocks after the cross-attention (Tab. 5: 0, 1 or 2).
        mlp_ratio: MLP width / ``D`` in the blocks.
        query_residual: keep the query in the residual stream of the cross-attention (see :class:`CrossAttention`).
        key_prefix: config node named in errors.
    """

    def __init__(self, query_dim: int, kv_dim: int, width: int = 0, num_heads: int = 8, depth: int = 2,
                 mlp_ratio: float = 4.0, query_residual: bool = True, key_prefix: str = "MODEL.PROMPTSG.MIM"):
        super().__init__()
        width = width or query_dim
        for key, value, low in (("WIDTH", width, 1), ("HEADS", num_heads, 1), ("DEPTH", depth, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigValueError(f"{key_prefix}.{key}", value, f"an integer >= {low}")
        if width % num_heads:
            raise ConfigValueError(f"{key_prefix}.HEADS", num_heads, f"a divisor of the fusion width {width}")
        if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, (int, float)) or not mlp_ratio > 0:
            raise ConfigValueError(f"{key_prefix}.MLP_RATIO", mlp_ratio, "a positive MLP width ratio")
        self.width = width
        self.query_in = nn.Linear(query_dim, width) if query_dim != width else nn.Identity()
        self.cross = CrossAttention(width, kv_dim, num_heads, residual=query_residual)
        self.blocks = nn.ModuleList([ResidualAttentionBlock(width, num_heads, mlp_ratio, batch_first=True)
                                     for _ in range(depth)])
        self.ln_out = LayerNorm(width)

    def encode_query(self, query: torch.Tensor) -> QueryState:
        """The part that depends on the query only: ``[Bq, Lq, Dq]`` -> :class:`QueryState` (cacheable)."""
        stream = self.query_in(query)
        return QueryState(stream, self.cross.project_query(stream))

    def forward(self, query: Optional[torch.Tensor], kv: torch.Tensor, state: Optional[QueryState] = None,
                kv_padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Fuse.

        Args:
            query: ``[B, Lq, Dq]`` queries, or ``[1, Lq, Dq]`` shared by every image; None with ``state``.
            kv: ``[B, M, Dkv]`` image tokens.
            state: ``encode_query(query)`` computed before (e.g. once for a fixed prompt).
            kv_padding_mask: ``[B, M]`` True at padded keys.

        Returns:
            ``[B, Lq, D]`` refined query tokens.
        """
        if state is None:
            state = self.encode_query(query)
        x = self.cross(state.stream, kv, q=state.q, kv_padding_mask=kv_padding_mask)  # [B, Lq, D]
        for block in self.blocks:
            x = block(x)
        return self.ln_out(x)
