"""CLIP text encoder that accepts token ids or token embeddings (for learnable prompts).

The encoder is CLIP's causal transformer: ``token embeddings + positional table -> transformer (causal
mask) -> ln_final -> row at the EOT position -> text projection``. Because the mask is causal, outputs at
or before the EOT token never depend on later positions, so :meth:`CLIPTextEncoder.encode_embeddings`
runs only the first ``max(eot) + 1`` positions: the same EOT feature as the full 77-token context, at a
fraction of the cost (12 of 77 tokens for "A photo of a X X X X person.").
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Union

import torch
import torch.nn as nn

__all__ = ["CLIPTextEncoder"]


class CLIPTextEncoder(nn.Module):
    """The text tower of an open_clip ``CLIP`` model.

    Args:
        token_embedding: ``nn.Embedding(vocab, D)``.
        positional_embedding: ``[context, D]`` table.
        transformer: open_clip ``Transformer`` (width ``D``).
        ln_final: final LayerNorm.
        text_projection: ``[D, E]`` parameter or ``nn.Linear(D, E)``.
        attn_mask: ``[context, context]`` additive causal mask (``-inf`` above the diagonal).
        arch: open_clip architecture name (selects the tokenizer).
    """

    def __init__(self, token_embedding: nn.Embedding, positional_embedding: nn.Parameter, transformer: nn.Module,
                 ln_final: nn.Module, text_projection, attn_mask: torch.Tensor, arch: str = "ViT-B-16"):
        super().__init__()
        self.token_embedding = token_embedding
        self.positional_embedding = positional_embedding
        self.transformer = transformer
        self.ln_final = ln_final
        self.text_projection = text_projection
        self.register_buffer("attn_mask", attn_mask.clone(), persistent=False)
        self.arch = arch
        self._tokenizer = None

    @classmethod
    def from_open_clip(cls, model: nn.Module, arch: str) -> "CLIPTextEncoder":
        """Share the text-tower modules of an open_clip ``CLIP`` model (no copy)."""
        if not hasattr(model, "token_embedding"):
            raise ValueError(f"'{arch}' has a custom (HF) text tower; only CLIP's own text transformer is supported")
        return cls(model.token_embedding, model.positional_embedding, model.transformer, model.ln_final,
                   model.text_projection, model.attn_mask, arch=arch)

    @property
    def width(self) -> int:
        return self.positional_embedding.shape[1]

    @property
    def context_length(self) -> int:
        return self.positional_embedding.shape[0]

    @property
    def output_dim(self) -> int:
        proj = self.text_projection
        return proj.out_features if isinstance(proj, nn.Linear) else proj.shape[1]

    def tokenize(self, texts: Union[str, Sequence[str]]) -> torch.Tensor:
        """CLIP BPE token ids ``[N, context]`` (SOS 49406, EOT 49407, zero padding), offline."""
        if self._tokenizer is None:
            import open_clip

            self._tokenizer = open_clip.get_tokenizer(self.arch)
        return self._tokenizer([texts] if isinstance(texts, str) else list(texts), context_length=self.context_length)

    def embed_tokens(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Token-embedding rows ``[N, L, D]`` for ``[N, L]`` token ids."""
        return self.token_embedding(token_ids.to(self.token_embedding.weight.device))

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        proj = self.text_projection
        return proj(x) if isinstance(proj, nn.Linear) else x @ proj.to(x.dtype)

    def encode_embeddings(self, embeddings: torch.Tensor, eot_index: torch.Tensor, return_tokens: bool = False,
                          truncate: bool = True, max_eot: Optional[int] = None):
        """Encode already-embedded token sequences.

        Args:
            embeddings: ``[N, L, D]`` token-embedding rows (learnable rows spliced in), ``L <= context``.
            eot_index: ``[N]`` position of the EOT token in each sequence.
            return_tokens: also return the ``ln_final`` rows (unprojected).
            truncate: run only positions ``0..max(eot)`` (exact: the mask is causal); False runs all ``L``.
            max_eot: ``max(eot_index)`` when the caller knows it (saves a device-to-host sync on CUDA).

        Returns:
            ``[N, E]`` projected EOT features; with ``return_tokens`` a tuple ``(features, [N, T, D])``
            where ``T = max(eot) + 1`` (``L`` without truncation).
        """
        eot_index = eot_index.to(embeddings.device).long()
        if not truncate:
            length = embeddings.shape[1]
        else:
            length = (int(eot_index.max()) if max_eot is None else max_eot) + 1
        if length > embeddings.shape[1]:
            raise ValueError(f"EOT index {length - 1} outside sequences of length {embeddings.shape[1]}")
        x = embeddings[:, :length] + self.positional_embedding[:length].to(embeddings.dtype)
        x = self.transformer(x, attn_mask=self.attn_mask[:length, :length])
        x = self.ln_final(x)
        pooled = self._project(x[torch.arange(x.shape[0], device=x.device), eot_index])
        return (pooled, x) if return_tokens else pooled

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        """``[N, E]`` projected features of ``[N, L]`` token ids; equals open_clip's ``encode_text``."""
        token_ids = token_ids.to(self.token_embedding.weight.device)
        return self.encode_embeddings(self.embed_tokens(token_ids), token_ids.argmax(dim=-1))

    def encode_text(self, texts: Union[str, List[str]]) -> torch.Tensor:
        """Tokenize and encode strings: ``[N, E]``."""
        return self(self.tokenize(texts))

    def freeze(self, frozen: Optional[bool] = True) -> "CLIPTextEncoder":
        """Exclude the encoder's weights from training (gradients still flow through it to its inputs)."""
        for p in self.parameters():
            p.requires_grad_(not frozen)
        return self
