"""CLIP-SCGI's caption-guided inversion (CGI, paper Eq. 2-5): image tokens re-weighted by the caption embedding ->
one pseudo-word token S* = S*_g + S*_l."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
from open_clip.transformer import LayerNorm

from ...config.validate import ConfigValueError
from ..fusion import CrossAttention
from .inversion_net import InversionNet

__all__ = ["CaptionGuidedInversion", "LocalQueryLayer"]


class LocalQueryLayer(nn.Module):
    """One layer of the local branch (Eq. 4-5): ``Q_C = Q + CrossAttn(LN(Q), LN(v~), LN(v~))``, then
    ``P = Q_C + FFN(LN(Q_C))``. The LayerNorms on the keys/values and before the FFN and the GELU FFN are
    [unverified] (the paper names LN on the queries and "a feed-forward network")."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.cross = CrossAttention(dim, dim, num_heads, residual=True)
        self.ln_ffn = LayerNorm(dim)
        hidden = int(round(dim * mlp_ratio))
        self.ffn = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, queries: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """``[1 or B, K, d]`` queries over ``[B, M, d]`` tokens -> ``[B, K, d]``."""
        x = self.cross(queries, tokens)
        return x + self.ffn(self.ln_ffn(x))


class CaptionGuidedInversion(nn.Module):
    """``S* = f_Mg(v~_cls) + f_Ml(mean_k P_k)`` with ``v~ = v (.) t`` (paper §III-C).

    For a batch with projected class token ``v_cls [B, d]``, patch tokens ``v_1..v_M [B, M, C]`` and caption
    embeddings ``t [B, d]`` (the frozen text encoder's pooled, projected EOT feature [unverified which output]):

    1. re-weighting (Eq. 3): ``v~ = v (.) t``, element-wise, ``t`` broadcast over the tokens. ``d`` is the joint
       image-text width, so the tokens must be the *projected* ones (ViT ``tokens_proj``). Patch tokens of another
       width ``C`` (a ModifiedResNet's 2048-d layer4 map) first pass a learned ``Linear(C, d)`` [ours];
    2. global pseudo-word: ``S*_g = f_Mg(v~_cls)`` (three-layer MLP, :class:`InversionNet`);
    3. local pseudo-word (Eq. 4-5): ``K`` learnable queries (random init) pass ``depth`` :class:`LocalQueryLayer`
       over ``v~_1..v~_M``; ``S*_l = f_Ml(mean_k P_k)`` (a second three-layer MLP);
    4. ``S* = S*_g + S*_l``, one row in the text tower's token-embedding space.

    Args:
        embed_dim: joint width ``d`` (class token and caption embedding).
        token_dim: text token-embedding width (``S*``).
        patch_dim: width of the patch tokens (``d`` when projected).
        num_queries: ``K`` (paper: 2).
        depth: local query layers (paper: 1).
        num_heads: attention heads of the local branch.
        mlp_ratio: FFN width / ``d``.
        hidden_dim, num_layers, final_bn: :class:`InversionNet` of ``f_Mg`` and ``f_Ml``.
        key_prefix: config node named in errors.
    """

    def __init__(self, embed_dim: int, token_dim: int, patch_dim: Optional[int] = None, num_queries: int = 2,
                 depth: int = 1, num_heads: int = 8, mlp_ratio: float = 4.0, hidden_dim: int = 512,
                 num_layers: int = 3, final_bn: bool = False, key_prefix: str = "MODEL.SCGI.CGI"):
        super().__init__()
        for key, value, low in (("NUM_QUERIES", num_queries, 1), ("DEPTH", depth, 1), ("HEADS", num_heads, 1),
                                ("HIDDEN_DIM", hidden_dim, 1), ("NUM_LAYERS", num_layers, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigValueError(f"{key_prefix}.{key}", value, f"an integer >= {low}")
        if embed_dim % num_heads:
            raise ConfigValueError(f"{key_prefix}.HEADS", num_heads, f"a divisor of the joint width {embed_dim}")
        if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, (int, float)) or not mlp_ratio > 0:
            raise ConfigValueError(f"{key_prefix}.MLP_RATIO", mlp_ratio, "a positive FFN width ratio")
        patch_dim = patch_dim or embed_dim
        self.embed_dim, self.token_dim = embed_dim, token_dim
        self.patch_proj = nn.Linear(patch_dim, embed_dim) if patch_dim != embed_dim else nn.Identity()
        self.queries = nn.Parameter(torch.randn(num_queries, embed_dim) * embed_dim ** -0.5)
        self.layers = nn.ModuleList([LocalQueryLayer(embed_dim, num_heads, mlp_ratio) for _ in range(depth)])
        mlp = {"hidden_dim": hidden_dim, "num_layers": num_layers, "final_bn": final_bn}
        self.global_net = InversionNet(in_dim=embed_dim, out_dim=token_dim, **mlp)
        self.local_net = InversionNet(in_dim=embed_dim, out_dim=token_dim, **mlp)

    @staticmethod
    def reweight(tokens: torch.Tensor, captions: torch.Tensor) -> torch.Tensor:
        """Eq. 3: ``[B, (M,) d] (.) [B, d]`` (the caption broadcast over the tokens)."""
        return tokens * (captions if tokens.dim() == 2 else captions.unsqueeze(1)).to(tokens.dtype)

    def local_tokens(self, patches: torch.Tensor) -> torch.Tensor:
        """``[B, M, d]`` re-weighted patch tokens -> ``[B, K, d]`` refined queries ``P``."""
        x = self.queries.unsqueeze(0).to(patches.dtype)
        for layer in self.layers:
            x = layer(x, patches)
        return x

    def forward(self, cls_token: torch.Tensor, patches: torch.Tensor, captions: torch.Tensor) -> torch.Tensor:
        """Pseudo-word tokens.

        Args:
            cls_token: ``[B, d]`` projected class token ``v_cls``.
            patches: ``[B, M, C]`` patch tokens.
            captions: ``[B, d]`` caption embeddings ``t``.

        Returns:
            ``[B, token_dim]`` ``S* = S*_g + S*_l``.
        """
        if captions.shape != cls_token.shape:
            raise ValueError(f"caption embeddings {list(captions.shape)} must match the class tokens "
                             f"{list(cls_token.shape)} (the joint image-text width)")
        patches = self.patch_proj(patches)
        global_word = self.global_net(self.reweight(cls_token, captions))
        local = self.local_tokens(self.reweight(patches, captions)).mean(dim=1)
        return global_word + self.local_net(local).to(global_word.dtype)
