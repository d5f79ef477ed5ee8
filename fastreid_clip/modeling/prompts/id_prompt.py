"""CLIP-ReID's identity prompt learner: "A photo of a X X X X person." with M learnable tokens per identity."""

from __future__ import annotations

from typing import Callable, Sequence, Tuple

import torch
import torch.nn as nn

__all__ = ["IDPromptLearner"]

_PREFIX_LEN = 5  # SOS + "a photo of a"


class IDPromptLearner(nn.Module):
    """Learnable identity-specific context tokens spliced into a fixed template.

    Template "A photo of a X_1 .. X_M <class_word>." (CLIP-ReID, paper §3.2): rows 0-4 (SOS + "a photo of a")
    and the rows after the M context tokens ("person", ".", EOT, padding) are fixed token-embedding rows held as
    buffers; the context ``ctx [num_ids, M, D]`` is drawn from N(0, init_std²).

    Because the text encoder is causal and pools at EOT, :meth:`forward` returns only the rows up to EOT
    (12 of 77 for M = 4); the full 77-row sequence gives the same feature (see ``CLIPTextEncoder``).

    Args:
        num_ids: training identities.
        token_embedding: CLIP's token embedding (read once to build the fixed rows; not kept).
        tokenize: ``list[str] -> [N, 77]`` CLIP token ids.
        n_ctx: ``M`` learnable tokens per identity (paper: 4; 1 too few, 8 redundant).
        class_word: "person", or "vehicle" for vehicle datasets.
        init_std: standard deviation of the context initialisation.
    """

    def __init__(self, num_ids: int, token_embedding: nn.Embedding, tokenize: Callable[[Sequence[str]], torch.Tensor],
                 n_ctx: int = 4, class_word: str = "person", init_std: float = 0.02):
        super().__init__()
        if n_ctx < 1:
            raise ValueError(f"MODEL.PROMPT.N_CTX must be >= 1, got {n_ctx}")
        template = "A photo of a " + " ".join(["X"] * n_ctx) + f" {class_word}."
        tokens = tokenize([template])
        with torch.no_grad():
            rows = token_embedding(tokens.to(token_embedding.weight.device)).float().cpu()
        self.n_ctx = n_ctx
        self.template = template
        self.eot_index = int(tokens.argmax(dim=-1))
        if self.eot_index != _PREFIX_LEN + n_ctx + 2:
            raise ValueError(f"class word '{class_word}' is not a single CLIP token: template '{template}' puts EOT "
                             f"at {self.eot_index}, expected {_PREFIX_LEN + n_ctx + 2}")
        self.register_buffer("token_prefix", rows[:, :_PREFIX_LEN].clone())
        self.register_buffer("token_suffix", rows[:, _PREFIX_LEN + n_ctx:].clone())
        self.ctx = nn.Parameter(torch.empty(num_ids, n_ctx, rows.shape[-1]).normal_(std=init_std))

    @property
    def num_ids(self) -> int:
        return self.ctx.shape[0]

    @property
    def ctx_rows(self) -> slice:
        """Positions of the learnable rows in the embedded prompt (5 to 5 + M - 1); every other row is fixed."""
        return slice(_PREFIX_LEN, _PREFIX_LEN + self.n_ctx)

    @property
    def context_length(self) -> int:
        return _PREFIX_LEN + self.n_ctx + self.token_suffix.shape[1]

    def forward(self, labels: torch.Tensor, full_context: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        """Embedded prompts of ``labels``.

        Args:
            labels: ``[B]`` identity indices.
            full_context: return all 77 rows instead of stopping at EOT.

        Returns:
            ``([B, L, D] embeddings, [B] EOT positions)`` with ``L = eot + 1`` (or the full context).
        """
        ctx = self.ctx[labels]
        batch = ctx.shape[0]
        suffix_len = self.token_suffix.shape[1] if full_context else self.eot_index + 1 - _PREFIX_LEN - self.n_ctx
        prompts = torch.cat([self.token_prefix.expand(batch, -1, -1).to(ctx.dtype), ctx,
                             self.token_suffix[:, :suffix_len].expand(batch, -1, -1).to(ctx.dtype)], dim=1)
        return prompts, torch.full((batch,), self.eot_index, dtype=torch.long, device=ctx.device)
