"""SVLL-ReID's prompt masking (Eq. 6): token masking keeps the template rows and masks alpha of the learnable rows;
element masking zeroes elements at its rate."""

import pytest
import torch

from fastreid_clip.modeling.prompts.masking import element_mask, mask_prompts, token_mask

CTX = slice(5, 9)  # "A photo of a X X X X person.": rows 5-8 learnable (IDPromptLearner.ctx_rows for M = 4)


def _prompts(n, length=12, dim=16):
    return torch.randn(n, length, dim) + 3.0  # no exact zeros


@pytest.mark.parametrize("rate,per_prompt", [(0.5, 2.0), (0.25, 1.0), (0.3, 1.2), (0.0, 0.0)])
def test_token_mask_keeps_fixed_rows_and_masks_rate_of_learnable_rows(rate, per_prompt):
    torch.manual_seed(0)
    prompts = _prompts(4000)
    masked = mask_prompts(prompts, "token", rate, CTX)
    fixed = torch.ones(12, dtype=torch.bool)
    fixed[CTX] = False
    assert torch.equal(masked[:, fixed], prompts[:, fixed])  # SOS, "a photo of a", "person", ".", EOT untouched
    learnable, original = masked[:, CTX], prompts[:, CTX]
    zero_rows = (learnable == 0).all(dim=-1)
    assert torch.equal(learnable[~zero_rows], original[~zero_rows])  # a learnable row is kept whole or zeroed whole
    counts = zero_rows.sum(dim=1).float()
    if rate * 4 == int(rate * 4):
        assert (counts == per_prompt).all()  # alpha * M exactly, when it is an integer
    else:
        assert set(counts.unique().tolist()) <= {1.0, 2.0}
        assert abs(counts.mean().item() - per_prompt) < 0.03  # 5 sigma of the mean of 4000 draws (sigma 0.0063)
    # positions are uniform over the learnable rows: each masked with probability rate (5 sigma of 4000 draws)
    assert (zero_rows.float().mean(dim=0) - rate).abs().max() < 5 * (rate * (1 - rate) / 4000) ** 0.5 + 1e-9


def test_token_mask_draws_independent_copies_and_gradients_reach_kept_rows_only():
    torch.manual_seed(1)
    keep = token_mask(1000, 12, CTX, 0.5)
    assert keep.shape == (1000, 12, 1)
    assert len({tuple(row) for row in keep[:, CTX, 0].tolist()}) == 6  # all C(4, 2) patterns occur
    prompts = _prompts(3).requires_grad_()
    masked = mask_prompts(prompts, "token", 0.5, CTX)
    masked.sum().backward()
    assert torch.equal(prompts.grad, (masked != 0).float())


@pytest.mark.parametrize("rate", [0.5, 0.2])
def test_element_mask_matches_its_rate(rate):
    torch.manual_seed(2)
    prompts = _prompts(500)
    masked = mask_prompts(prompts, "element", rate, CTX)
    zeros = masked == 0
    count = zeros.numel()
    sigma = (rate * (1 - rate) / count) ** 0.5
    assert abs(zeros.float().mean().item() - rate) < 5 * sigma
    for rows in (slice(0, 5), CTX, slice(9, 12)):  # fixed rows are masked too (the reference)
        part = zeros[:, rows]
        assert abs(part.float().mean().item() - rate) < 5 * (rate * (1 - rate) / part.numel()) ** 0.5
    assert torch.equal(masked[~zeros], prompts[~zeros])  # kept elements unchanged, no rescaling
    assert element_mask((2, 3), 0.0).eq(1).all()


def test_unknown_mode():
    with pytest.raises(ValueError, match="token"):
        mask_prompts(_prompts(1), "row", 0.5, CTX)
