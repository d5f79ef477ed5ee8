"""PromptSG's prompts: "A photo of a s* person" with one pseudo-word row spliced in, and "A photo of a person"."""

from __future__ import annotations

from typing import Callable, Sequence, Tuple

import torch
import torch.nn as nn

from ...config.validate import ConfigValueError

__all__ = ["ComposedPrompt"]


class ComposedPrompt(nn.Module):
    """Fixed token-embedding rows of PromptSG's two templates; the pseudo-word token s* is spliced into one row.

    * composed (paper §4.1): ``"A photo of a <placeholder> <class_word>"``, tokenized with a one-token placeholder
      word whose row is replaced by s* (the standard textual-inversion splice [unverified mechanism]). For "person"
      and no period the rows are ``0 SOS, 1-4 "a photo of a", 5 s*, 6 person, 7 EOT`` (8 rows, notes §1.5).
    * simplified (paper §4.3, Tab. 5): ``"A photo of a <class_word>"``: ``0 SOS, 1-4, 5 person, 6 EOT`` (7 rows).

    The papers' templates have no trailing period (``period=False``; ``True`` appends "." to both). The rows are
    read once from CLIP's token embedding and held as buffers (saved with the model, so ``--eval-only`` needs no
    CLIP weight file); the EOT positions are Python ints, so no host sync is needed to know them. Because the text
    encoder is causal and pools at EOT, only the rows up to EOT are returned unless ``full_context``.

    Args:
        token_embedding: CLIP's token embedding (read once; not kept).
        tokenize: ``list[str] -> [N, 77]`` CLIP token ids.
        class_word: "person" (or "vehicle").
        period: end both templates with ".".
        placeholder: a word that CLIP's tokenizer maps to one token, marking the s* row.
        class_word_key, placeholder_key: config keys named in errors.
    """

    def __init__(self, token_embedding: nn.Embedding, tokenize: Callable[[Sequence[str]], torch.Tensor],
                 class_word: str = "person", period: bool = False, placeholder: str = "X",
                 class_word_key: str = "MODEL.PROMPT.CLASS_WORD",
                 placeholder_key: str = "MODEL.PROMPTSG.PROMPT.PLACEHOLDER"):
        super().__init__()
        end = "." if period else ""
        self.composed_template = f"A photo of a {placeholder} {class_word}{end}"
        self.simplified_template = f"A photo of a {class_word}{end}"
        tokens = tokenize([self.composed_template, self.simplified_template, f"A photo of a {placeholder}"])
        eot = tokens.argmax(dim=-1).tolist()
        # "A photo of a X": SOS + 4 words + X + EOT, so X at 5 iff the placeholder is a single token.
        if eot[2] != 6:
            raise ConfigValueError(placeholder_key, placeholder, "a word that CLIP's tokenizer maps to exactly one "
                                                                 "token (e.g. 'X')")
        self.pseudo_index = 5
        if eot[0] - eot[1] != 1:
            raise ConfigValueError(class_word_key, class_word, "a class word after which the composed template is "
                                                               "one token longer than the simplified one")
        self.composed_eot, self.simplified_eot = int(eot[0]), int(eot[1])
        with torch.no_grad():
            rows = token_embedding(tokens[:2].to(token_embedding.weight.device)).float().cpu()
        self.register_buffer("composed_rows", rows[:1].clone())  # [1, 77, D], row 5 is the placeholder's
        self.register_buffer("simplified_rows", rows[1:2].clone())  # [1, 77, D]

    @property
    def width(self) -> int:
        return self.composed_rows.shape[-1]

    def composed(self, pseudo_tokens: torch.Tensor, full_context: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        """Embedded composed prompts, one per pseudo-word token.

        Args:
            pseudo_tokens: ``[B, D]`` s* rows (gradients flow into them).
            full_context: return all 77 rows instead of stopping at EOT.

        Returns:
            ``([B, L, D] embeddings, [B] EOT positions)``, ``L = composed_eot + 1`` (or 77).
        """
        if pseudo_tokens.dim() != 2 or pseudo_tokens.shape[1] != self.width:
            raise ValueError(f"pseudo tokens must be [B, {self.width}], got {list(pseudo_tokens.shape)}")
        batch, dtype = pseudo_tokens.shape[0], pseudo_tokens.dtype
        length = self.composed_rows.shape[1] if full_context else self.composed_eot + 1
        rows = self.composed_rows.to(dtype)
        prompts = torch.cat([rows[:, :self.pseudo_index].expand(batch, -1, -1), pseudo_tokens.unsqueeze(1),
                             rows[:, self.pseudo_index + 1:length].expand(batch, -1, -1)], dim=1)
        return prompts, torch.full((batch,), self.composed_eot, dtype=torch.long, device=pseudo_tokens.device)

    def simplified(self, batch: int = 1, full_context: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        """``([batch, L, D] embeddings, [batch] EOT positions)`` of the fixed simplified prompt."""
        length = self.simplified_rows.shape[1] if full_context else self.simplified_eot + 1
        rows = self.simplified_rows[:, :length].expand(batch, -1, -1)
        return rows, torch.full((batch,), self.simplified_eot, dtype=torch.long, device=rows.device)
