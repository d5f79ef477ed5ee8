"""CLIP-FGDI's domain prompt: "A photo of a X X X X person from D dataset." with one learnable token per source
domain, the identity rows taken (detached) from an :class:`~fastreid_clip.modeling.prompts.IDPromptLearner`."""

from __future__ import annotations

from typing import Callable, Sequence, Tuple

import torch
import torch.nn as nn

from .id_prompt import _PREFIX_LEN, IDPromptLearner

__all__ = ["DomainPromptLearner"]


class DomainPromptLearner(nn.Module):
    """Learnable domain tokens spliced into CLIP-FGDI's domain-relevant template (paper §III-B, Fig. 2).

    Token layout for ``M`` identity and ``N`` domain tokens (M = 4, N = 1: EOT at 15, notes §1.5)::

        0 SOS | 1-4 "a photo of a" | 5..5+M-1 identity rows | "person" "from" | N domain rows |
        "data" "set" "." | EOT | padding

    The identity rows are the ID prompt learner's context of each sample's identity, **detached** (CLIP-FGDI
    [ref-code]; the paper: "ID-specific tokens remain fixed"), so only :attr:`ctx` (``[num_domains, N, D]``, drawn
    from N(0, init_std²)) learns through this prompt. All other rows are fixed token-embedding rows (buffers).
    As for the ID prompt, :meth:`forward` returns the rows up to EOT by default (exact for the causal encoder).

    Args:
        num_domains: source domains (one token set each).
        token_embedding: CLIP's token embedding (read once for the fixed rows; not kept).
        tokenize: ``list[str] -> [N, 77]`` CLIP token ids.
        n_ctx: ``M``, identity tokens (must equal the ID prompt learner's).
        class_word: "person" (must equal the ID prompt's).
        n_domain_ctx: ``N``, domain tokens per domain (paper: 1).
        init_std: standard deviation of the domain-token initialisation.
    """

    def __init__(self, num_domains: int, token_embedding: nn.Embedding,
                 tokenize: Callable[[Sequence[str]], torch.Tensor], n_ctx: int = 4, class_word: str = "person",
                 n_domain_ctx: int = 1, init_std: float = 0.02):
        super().__init__()
        if isinstance(num_domains, bool) or not isinstance(num_domains, int) or num_domains < 1:
            raise ValueError(f"the domain prompt needs >= 1 source domain, got {num_domains!r}")
        if n_ctx < 1 or n_domain_ctx < 1:
            raise ValueError(f"MODEL.PROMPT.N_CTX and MODEL.FGDI.DOMAIN_PROMPT.N_CTX must be >= 1, got {n_ctx} and "
                             f"{n_domain_ctx}")
        template = ("A photo of a " + " ".join(["X"] * n_ctx) + f" {class_word} from "
                    + " ".join(["X"] * n_domain_ctx) + " dataset.")
        tokens = tokenize([template])
        with torch.no_grad():
            rows = token_embedding(tokens.to(token_embedding.weight.device)).float().cpu()
        self.n_ctx = n_ctx
        self.n_domain_ctx = n_domain_ctx
        self.template = template
        self.domain_start = _PREFIX_LEN + n_ctx + 2  # after "person from"
        self.eot_index = int(tokens.argmax(dim=-1))
        expected = self.domain_start + n_domain_ctx + 3  # "data" "set" "."
        if self.eot_index != expected:
            raise ValueError(f"class word '{class_word}' is not a single CLIP token: template '{template}' puts EOT at "
                             f"{self.eot_index}, expected {expected}")
        self.register_buffer("token_prefix", rows[:, :_PREFIX_LEN].clone())
        self.register_buffer("token_middle", rows[:, _PREFIX_LEN + n_ctx:self.domain_start].clone())
        self.register_buffer("token_suffix", rows[:, self.domain_start + n_domain_ctx:].clone())
        self.ctx = nn.Parameter(torch.empty(num_domains, n_domain_ctx, rows.shape[-1]).normal_(std=init_std))

    @property
    def num_domains(self) -> int:
        return self.ctx.shape[0]

    @property
    def id_rows(self) -> slice:
        """Positions of the (detached) identity rows."""
        return slice(_PREFIX_LEN, _PREFIX_LEN + self.n_ctx)

    @property
    def ctx_rows(self) -> slice:
        """Positions of the learnable domain rows."""
        return slice(self.domain_start, self.domain_start + self.n_domain_ctx)

    def check_compatible(self, id_prompt: IDPromptLearner) -> None:
        """The ID prompt must have the same ``M`` and embedding width (its rows are spliced in)."""
        if id_prompt.n_ctx != self.n_ctx or id_prompt.ctx.shape[-1] != self.ctx.shape[-1]:
            raise ValueError(f"the domain prompt has {self.n_ctx} identity rows of width {self.ctx.shape[-1]}, the ID "
                             f"prompt {id_prompt.n_ctx} of width {id_prompt.ctx.shape[-1]}")

    def forward(self, id_ctx: torch.Tensor, domains: torch.Tensor,
                full_context: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        """Embedded domain prompts.

        Args:
            id_ctx: ``[B, M, D]`` identity rows (``IDPromptLearner.ctx[labels]``); detached here.
            domains: ``[B]`` domain indices in ``[0, num_domains)``.
            full_context: return all 77 rows instead of stopping at EOT.

        Returns:
            ``([B, L, D] embeddings, [B] EOT positions)`` with ``L = eot + 1`` (or the full context).
        """
        if id_ctx.dim() != 3 or id_ctx.shape[1] != self.n_ctx or id_ctx.shape[0] != domains.shape[0]:
            raise ValueError(f"expected [B, {self.n_ctx}, D] identity rows for {domains.shape[0]} domains, got "
                             f"{list(id_ctx.shape)}")
        ctx = self.ctx[domains]
        batch, dtype = ctx.shape[0], ctx.dtype
        suffix_len = self.token_suffix.shape[1] if full_context else self.eot_index + 1 - self.ctx_rows.stop
        prompts = torch.cat([self.token_prefix.expand(batch, -1, -1).to(dtype), id_ctx.detach().to(dtype),
                             self.token_middle.expand(batch, -1, -1).to(dtype), ctx,
                             self.token_suffix[:, :suffix_len].expand(batch, -1, -1).to(dtype)], dim=1)
        return prompts, torch.full((batch,), self.eot_index, dtype=torch.long, device=ctx.device)
