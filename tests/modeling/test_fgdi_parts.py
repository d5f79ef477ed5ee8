"""CLIP-FGDI's reusable parts: gradient reversal, the domain classifier, the domain prompt and the apn losses."""

import math

import numpy as np
import pytest
import torch

from fastreid_clip.modeling.backbones import ClipGeometry, CLIPTextEncoder, build_clip_model
from fastreid_clip.modeling.heads import DomainClassifier, GradientReversalLayer, grad_reverse
from fastreid_clip.modeling.losses import APN_MODES, apn_loss, apn_triplet_loss, apnce_loss
from fastreid_clip.modeling.prompts import DomainPromptLearner, IDPromptLearner


# ---------------------------------------------------------------------------------------------- gradient reversal
@pytest.mark.parametrize("strength", [0.1, 1.0, 2.5])
def test_grl_is_identity_forward_and_scales_gradient_by_minus_lambda(strength):
    torch.manual_seed(0)
    x = torch.randn(4, 6, requires_grad=True)
    w = torch.randn(4, 6)
    y = grad_reverse(x, strength)
    assert torch.equal(y, x)  # the same values, not a computation
    (y * w).sum().backward()
    assert torch.allclose(x.grad, -strength * w, rtol=0, atol=1e-7)
    x.grad = None
    (GradientReversalLayer(strength)(x) * w).sum().backward()
    assert torch.allclose(x.grad, -strength * w, rtol=0, atol=1e-7)


def test_grl_zero_strength_blocks_gradient_and_bad_strength_fails():
    x = torch.randn(3, requires_grad=True)
    grad_reverse(x, 0.0).sum().backward()
    assert torch.count_nonzero(x.grad) == 0
    with pytest.raises(ValueError, match="GRL_STRENGTH"):
        GradientReversalLayer(-1.0)
    with pytest.raises(ValueError, match="GRL_STRENGTH"):
        grad_reverse(x, "0.1")


def test_domain_classifier_shapes_and_reversed_gradient_reaches_features():
    torch.manual_seed(1)
    plain = DomainClassifier(16, 3, hidden_dim=8)
    reversed_ = DomainClassifier(16, 3, hidden_dim=8, grl_strength=0.5)
    reversed_.load_state_dict(plain.state_dict())
    assert [type(m).__name__ for m in plain.children()] == ["Identity", "Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert plain.fc1.out_features == 8 and plain.num_domains == 3
    feats = torch.randn(5, 16)
    labels = torch.tensor([0, 1, 2, 0, 1])
    grads = []
    for head in (plain, reversed_):
        x = feats.clone().requires_grad_(True)
        logits = head(x)
        assert logits.shape == (5, 3)
        torch.nn.functional.cross_entropy(logits, labels).backward()
        grads.append((x.grad, head.fc1.weight.grad))
    (gx, gw), (rx, rw) = grads
    assert torch.allclose(rx, -0.5 * gx, atol=1e-7)
    assert torch.allclose(rw, gw, atol=1e-7)  # the head itself still learns to classify
    with pytest.raises(ValueError, match="num_domains"):
        DomainClassifier(16, 0)


# ---------------------------------------------------------------------------------------------- domain prompt
def _text(tiny_weights):
    path, _ = tiny_weights["ViT-Tiny-16"]
    return CLIPTextEncoder.from_open_clip(build_clip_model("ViT-Tiny-16", path, ClipGeometry()), "ViT-Tiny-16")


def test_domain_prompt_layout(tiny_weights):
    text = _text(tiny_weights)
    ids = IDPromptLearner(5, text.token_embedding, text.tokenize)
    dom = DomainPromptLearner(3, text.token_embedding, text.tokenize)
    dom.check_compatible(ids)
    assert dom.eot_index == 15 and dom.ctx_rows == slice(11, 12) and dom.id_rows == slice(5, 9)
    tokens = text.tokenize(["A photo of a X X X X person from X dataset."])
    reference = text.embed_tokens(tokens)[0]
    labels, domains = torch.tensor([2, 0]), torch.tensor([1, 2])
    full, eot = dom(ids.ctx[labels], domains, full_context=True)
    assert full.shape == (2, 77, 64) and eot.tolist() == [15, 15]
    fixed = [i for i in range(77) if i not in range(5, 9) and i != 11]
    assert torch.equal(full[0, fixed], reference[fixed])
    assert torch.equal(full[0, 5:9], ids.ctx[2]) and torch.equal(full[1, 11], dom.ctx[2, 0])
    short, _ = dom(ids.ctx[labels], domains)
    assert short.shape == (2, 16, 64) and torch.equal(short, full[:, :16])
    with pytest.raises(ValueError, match="N_CTX"):
        DomainPromptLearner(3, text.token_embedding, text.tokenize, n_domain_ctx=0)


def test_domain_prompt_gradient_reaches_only_domain_tokens(tiny_weights):
    text = _text(tiny_weights).freeze()
    ids = IDPromptLearner(4, text.token_embedding, text.tokenize)
    dom = DomainPromptLearner(2, text.token_embedding, text.tokenize)
    embeddings, eot = dom(ids.ctx[torch.tensor([0, 1, 3])], torch.tensor([1, 1, 0]))
    text.encode_embeddings(embeddings, eot).pow(2).sum().backward()
    assert ids.ctx.grad is None  # detached identity rows
    assert dom.ctx.grad.abs().sum(dim=(1, 2)).gt(0).all()


# ---------------------------------------------------------------------------------------------- apn losses
def _cos(x, y):
    return float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y)))


def _reference(mode, a, p, n, targets, bank_p, bank_n, margin=0.3, eps=0.1):
    """The equations written out in float64 loops (independent of the implementation)."""
    a, p, n, bank_p, bank_n = (np.asarray(v, dtype=np.float64) for v in (a, p, n, bank_p, bank_n))
    out = []
    for i in range(a.shape[0]):
        cp, cn = _cos(a[i], p[i]), _cos(a[i], n[i])
        dp, dn = np.sqrt(((a[i] - p[i]) ** 2).sum()), np.sqrt(((a[i] - n[i]) ** 2).sum())
        if mode == "code_cs_softplus":
            out.append(math.log1p(math.exp(cp - cn)))
        elif mode == "paper_eq8_cs_hinge":
            out.append(max(0.0, cp - cn + margin))
        elif mode == "intent_cs":
            out.append(max(0.0, cn - cp + margin))
        elif mode == "ed_hinge":
            out.append(max(0.0, dp - dn + margin))
        elif mode == "contrastive":  # Eq. 12
            pn = np.concatenate([p, bank_n])
            s = pn @ a[i]
            out.append(-(s[i] - math.log(np.exp(s).sum())))
        elif mode == "apnce":  # Eq. 13
            pn = np.concatenate([bank_p, bank_n])
            s = pn @ a[i]
            logp = s - math.log(np.exp(s).sum())
            m = bank_p.shape[0]
            q = np.full(m, eps / m)
            q[targets[i]] += 1 - eps
            out.append(-(q * logp[:m]).sum())
    return float(np.mean(out))


@pytest.mark.parametrize("mode", list(APN_MODES))
def test_apn_variants_equal_float64_equations(mode):
    g = torch.Generator().manual_seed(3)
    num_ids, dim = 6, 8
    bank_p = torch.randn(num_ids, dim, generator=g)
    bank_n = torch.randn(num_ids, dim, generator=g)
    targets = torch.tensor([0, 0, 2, 5, 5, 3])
    a = torch.randn(6, dim, generator=g)
    got = apn_loss(mode, a, targets, bank_p[targets], bank_n[targets], bank_p, bank_n, margin=0.3, epsilon=0.1)
    expected = _reference(mode, a.numpy(), bank_p[targets].numpy(), bank_n[targets].numpy(), targets.numpy(),
                          bank_p.numpy(), bank_n.numpy())
    assert got.dtype == torch.float32 and got.dim() == 0
    assert abs(float(got) - expected) <= 1e-5 * max(1.0, abs(expected)), (float(got), expected)
    assert expected > 0  # the hinge terms are active here: the comparison tests the formula, not a zero


def _step(mode, anchor, p, n, lr=0.05):
    """One SGD step on the anchor; returns (before, after) of cos(a,p) - cos(a,n), |a-p| - |a-n|, a.p - a.n."""
    a = anchor.clone().requires_grad_(True)
    targets = torch.tensor([0])
    loss = apn_loss(mode, a, targets, p, n, p, n, margin=0.3)
    loss.backward()
    moved = (a - lr * a.grad).detach()

    def measures(x):
        return (float(torch.cosine_similarity(x, p) - torch.cosine_similarity(x, n)),
                float((x - p).norm() - (x - n).norm()), float((x * p).sum() - (x * n).sum()))
    return measures(anchor), measures(moved)


# mode -> (index of the measure, +1 if the step increases it / -1 if it decreases it), as the docstrings state.
DIRECTIONS = {
    "code_cs_softplus": (0, -1),    # cos(a,p) - cos(a,n) decreases: towards the domain prompt (against intent)
    "paper_eq8_cs_hinge": (0, -1),  # the same as printed
    "intent_cs": (0, +1),           # towards p, away from n
    "ed_hinge": (1, -1),            # |a-p| - |a-n| decreases: towards p, away from n
    "contrastive": (2, +1),         # a.p - a.n increases
    "apnce": (2, +1),
}


@pytest.mark.parametrize("mode", list(APN_MODES))
def test_one_step_moves_anchor_in_the_documented_direction(mode):
    p = torch.tensor([[1.0, 0.0, 0.0]])
    n = torch.tensor([[0.0, 1.0, 0.0]])
    anchor = torch.tensor([[0.7, 0.7, 0.1]])  # equidistant: every hinge is active
    index, sign = DIRECTIONS[mode]
    before, after = _step(mode, anchor, p, n)
    change = after[index] - before[index]
    assert sign * change > 1e-4, (mode, before, after)


def test_cosine_as_printed_moves_away_from_positive_towards_negative():
    p = torch.tensor([[1.0, 0.0]])
    n = torch.tensor([[0.0, 1.0]])
    a = torch.tensor([[1.0, 1.0]], requires_grad=True)
    apn_triplet_loss(a, p, n, "cosine", "softplus", "as_printed").backward()
    moved = (a - 0.1 * a.grad).detach()
    assert torch.cosine_similarity(moved, p) < torch.cosine_similarity(a.detach(), p)
    assert torch.cosine_similarity(moved, n) > torch.cosine_similarity(a.detach(), n)


def test_apn_bad_inputs_fail_clearly():
    a = torch.randn(2, 4)
    with pytest.raises(ValueError, match="MODEL.FGDI.APN.MODE"):
        apn_loss("cs", a, torch.tensor([0, 1]), a, a)
    with pytest.raises(ValueError, match=r"\[B, D\]"):
        apn_triplet_loss(a, a[:1], a)
    with pytest.raises(ValueError, match="bank"):
        apn_loss("contrastive", a, torch.tensor([0, 1]), a, a)
    with pytest.raises(ValueError, match="epsilon"):
        apnce_loss(a, torch.tensor([0, 1]), a, a, epsilon=1.0)
