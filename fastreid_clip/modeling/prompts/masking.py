"""Random masking of embedded prompts: SVLL-ReID's prompt augmentation for language self-supervision (Eq. 6)."""

from __future__ import annotations

import torch

__all__ = ["PROMPT_MASKS", "mask_prompts", "token_mask", "element_mask"]

PROMPT_MASKS = ("token", "element")


def token_mask(num_prompts: int, length: int, rows: slice, rate: float, device=None) -> torch.Tensor:
    """``[N, L, 1]`` keep mask (1 keep, 0 masked) that masks a proportion ``rate`` of the rows in ``rows``.

    Paper Eq. 6: ``y_hat = Mask(y, alpha)`` masks a proportion ``alpha`` of the learnable tokens. Each prompt masks
    ``floor(rate * M)`` of its ``M`` learnable rows, plus one more with probability ``frac(rate * M)``, at uniformly
    random positions, so exactly ``rate * M`` when that is an integer (2 of 4 for alpha = 0.5) and ``rate * M`` on
    average otherwise. Rows outside ``rows`` (SOS, the template words, EOT, padding) are always kept.

    Args:
        num_prompts: ``N``.
        length: ``L`` rows per prompt.
        rows: the learnable rows (``IDPromptLearner.ctx_rows``).
        rate: ``alpha`` in ``[0, 1]``.
        device: device of the mask.
    """
    m = rows.stop - rows.start
    whole = int(rate * m)
    count = whole + (torch.rand(num_prompts, device=device) < rate * m - whole).long()
    rank = torch.rand(num_prompts, m, device=device).argsort(dim=1).argsort(dim=1)  # a random permutation per row
    keep = torch.ones(num_prompts, length, 1, device=device)
    keep[:, rows, 0] = (rank >= count.unsqueeze(1)).float()
    return keep


def element_mask(shape, rate: float, device=None) -> torch.Tensor:
    """Keep mask of ``shape`` with every element masked (0) independently with probability ``rate``.

    Reference code (``utils/prompt_augmentations.py``): Bernoulli zeroing of every element of the embedded prompt,
    fixed rows included, no rescaling.
    """
    return (torch.rand(shape, device=device) >= rate).float()


def mask_prompts(prompts: torch.Tensor, mode: str, rate: float, rows: slice) -> torch.Tensor:
    """A randomly masked copy of ``[N, L, D]`` embedded prompts (masked values are zero).

    Args:
        prompts: embedded prompts (e.g. ``IDPromptLearner`` output, learnable rows spliced in).
        mode: ``"token"`` (whole learnable rows, the paper) or ``"element"`` (single elements anywhere, the
            reference code).
        rate: masking proportion ``alpha`` / Bernoulli probability.
        rows: the learnable rows (used by ``"token"``).

    Returns:
        ``prompts * keep``: gradients reach the kept entries only.
    """
    if mode == "token":
        keep = token_mask(prompts.shape[0], prompts.shape[1], rows, rate, prompts.device)
    elif mode == "element":
        keep = element_mask(prompts.shape, rate, prompts.device)
    else:
        raise ValueError(f"prompt mask mode must be one of {PROMPT_MASKS}, got {mode!r}")
    return prompts * keep.to(prompts.dtype)
