"""Contrastive losses equal loop-based computations of CLIP-ReID's Eq. 1-5 and Eq. 8."""

import math

import pytest
import torch

from fastreid_clip.modeling.losses.classification import cross_entropy_label_smooth
from fastreid_clip.modeling.losses.contrastive import i2t_loss, supcon_loss, t2i_loss
from numeric import assert_close_ulps, ulp


class Expected(float):
    """A float64 reference loss that remembers the largest |logit| it was computed from."""

    def __new__(cls, value, logits):
        expected = super().__new__(cls, value)
        expected.logits = logits
        return expected


def _reference_supcon(anchors, contrasts, anchor_labels, contrast_labels, temperature=1.0, normalize=False):
    """-(1/B') sum_i (1/|P(i)|) sum_{j in P(i)} log(exp(s_ij) / sum_k exp(s_ik)), plain Python in float64."""
    a = anchors.double().tolist()
    c = contrasts.double().tolist()
    if normalize:
        a = [[v / math.sqrt(sum(x * x for x in row)) for v in row] for row in a]
        c = [[v / math.sqrt(sum(x * x for x in row)) for v in row] for row in c]
    ya, yc = anchor_labels.tolist(), contrast_labels.tolist()
    total, counted, largest = 0.0, 0, 0.0
    for i in range(len(a)):
        s = [sum(x * y for x, y in zip(a[i], c[j])) / temperature for j in range(len(c))]
        m = max(s)
        largest = max(largest, max(abs(v) for v in s))
        log_norm = m + math.log(sum(math.exp(v - m) for v in s))
        positives = [j for j in range(len(c)) if yc[j] == ya[i]]
        if not positives:
            continue
        total += -sum(s[j] - log_norm for j in positives) / len(positives)
        counted += 1
    return Expected(total / counted, largest)


def _close(value, expected, ulps=16):
    """Our float32 loss vs the float64 loops, to ``ulps`` float32 ulps of the larger of the loss and the logits
    (log-softmax ``s - logsumexp(s)`` cancels); measured at most 1.1 ulps of the loss apart (ATen's default
    and AVX-512 paths). Used with ``not`` too: different losses are far more than that apart."""
    value = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
    magnitude = max(abs(float(expected)), getattr(expected, "logits", 0.0))
    return abs(value - expected) <= ulps * float(ulp(magnitude))


def test_several_positives_per_anchor():
    torch.manual_seed(0)
    x, t = torch.randn(8, 6), torch.randn(8, 6)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3])
    assert _close(supcon_loss(x, t, labels, labels), _reference_supcon(x, t, labels, labels))
    assert _close(i2t_loss(x, t, labels), _reference_supcon(x, t, labels, labels))
    assert _close(t2i_loss(t, x, labels), _reference_supcon(t, x, labels, labels))
    # i2t and t2i differ (different denominators)
    assert not _close(i2t_loss(x, t, labels), float(t2i_loss(t, x, labels)))


def test_all_distinct_labels_is_clip_infonce():
    torch.manual_seed(1)
    x, t = torch.randn(5, 4), torch.randn(5, 4)
    labels = torch.arange(5)
    expected = _reference_supcon(x, t, labels, labels)
    assert _close(i2t_loss(x, t, labels), expected)
    # with one positive each it is CLIP's Eq. 2: cross-entropy over the similarity rows
    logits = x @ t.t()
    assert _close(i2t_loss(x, t, labels),
                  Expected(float(torch.nn.functional.cross_entropy(logits, labels)), float(logits.abs().max())))


def test_different_anchor_and_contrast_sets_and_temperature():
    torch.manual_seed(2)
    a, c = torch.randn(4, 5), torch.randn(7, 5)
    ya, yc = torch.tensor([3, 1, 1, 0]), torch.tensor([0, 1, 2, 3, 1, 3, 3])
    for tau in (0.07, 0.5, 2.0):
        assert _close(supcon_loss(a, c, ya, yc, temperature=tau), _reference_supcon(a, c, ya, yc, temperature=tau))


def test_normalize_uses_cosine():
    torch.manual_seed(3)
    a, c = torch.randn(6, 5) * 7, torch.randn(6, 5) * 0.3
    y = torch.tensor([0, 1, 0, 2, 1, 2])
    expected = _reference_supcon(a, c, y, y, temperature=0.07, normalize=True)
    assert _close(supcon_loss(a, c, y, y, temperature=0.07, normalize=True), expected)
    assert _close(i2t_loss(a, c, y, temperature=0.07, normalize=True), expected)
    # invariant to the feature scale
    assert _close(supcon_loss(a * 100, c, y, y, temperature=0.07, normalize=True), expected)


def test_fp16_inputs_computed_in_float32():
    torch.manual_seed(4)
    a, c = torch.randn(6, 8).half(), torch.randn(6, 8).half()
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    loss = supcon_loss(a, c, y, y)
    assert loss.dtype == torch.float32
    # the fp16 values are exact in float64, so the only error is float32 arithmetic
    assert _close(loss, _reference_supcon(a, c, y, y))


def test_gradients_reach_both_sides():
    torch.manual_seed(5)
    a = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    c = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    loss = supcon_loss(a, c, y, y) + t2i_loss(c, a, y)
    loss.backward()
    assert a.grad is not None and c.grad is not None
    assert a.grad.abs().sum() > 0 and c.grad.abs().sum() > 0
    # the detached max shift does not change the gradient: compare with an unshifted float32 formulation
    a32, c32 = a.detach().float().requires_grad_(), c.detach().float().requires_grad_()
    s = a32 @ c32.t()
    pos = (y[:, None] == y[None, :]).float()
    plain = -((pos * torch.log_softmax(s, dim=1)).sum(1) / pos.sum(1)).mean()
    plain.backward()
    a_ours, c_ours = a.detach().float().requires_grad_(), c.detach().float().requires_grad_()
    supcon_loss(a_ours, c_ours, y, y).backward()
    # two float32 formulations of one gradient: a few ulps of its largest entry apart
    assert_close_ulps(a_ours.grad, a32.grad, 16)
    assert_close_ulps(c_ours.grad, c32.grad, 16)


def test_large_logits_are_stable():
    torch.manual_seed(6)
    a, c = torch.randn(8, 16) * 1e3, torch.randn(8, 16) * 1e3  # logits ~1e7: exp overflows without the shift
    y = torch.tensor([0, 1, 0, 1, 2, 2, 3, 3])
    loss = supcon_loss(a, c, y, y)
    assert torch.isfinite(loss)
    s = a.double() @ c.double().t()
    log_prob = s - torch.logsumexp(s, dim=1, keepdim=True)
    pos = (y[:, None] == y[None, :]).double()
    expected = -((pos * log_prob).sum(1) / pos.sum(1)).mean()
    assert _close(loss, Expected(float(expected), float(s.abs().max())))
    # fp16 features whose dot products (~1e5) overflow fp16 are fine: the loss runs in float32
    ah, ch = (torch.randn(8, 16) * 100).half(), (torch.randn(8, 16) * 100).half()
    assert torch.isfinite(supcon_loss(ah, ch, y, y))
    assert _close(supcon_loss(ah, ch, y, y), _reference_supcon(ah, ch, y, y))


def test_anchors_without_positives_are_excluded():
    torch.manual_seed(7)
    a, c = torch.randn(5, 4, requires_grad=True), torch.randn(6, 4, requires_grad=True)
    ya, yc = torch.tensor([0, 9, 1, 8, 1]), torch.tensor([0, 1, 1, 2, 0, 3])
    loss = supcon_loss(a, c, ya, yc)
    keep = torch.tensor([0, 2, 4])
    assert _close(loss, _reference_supcon(a[keep], c, ya[keep], yc))
    assert _close(loss, _reference_supcon(a, c, ya, yc))
    # no anchor has a positive: zero, but a valid graph
    none = supcon_loss(a, c, torch.tensor([5, 6, 7, 8, 9]), yc)
    assert float(none.detach()) == 0.0 and none.requires_grad
    none.backward()
    assert a.grad is not None and torch.all(a.grad == 0)


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        supcon_loss(torch.randn(3, 4), torch.randn(3, 5), torch.arange(3), torch.arange(3))
    with pytest.raises(ValueError):
        supcon_loss(torch.randn(3, 4), torch.randn(3, 4), torch.arange(2), torch.arange(3))
    with pytest.raises(ValueError):
        supcon_loss(torch.randn(3, 4), torch.randn(3, 4), torch.arange(3), torch.arange(3), temperature=0.0)


def test_i2tce_is_label_smoothed_ce_over_the_text_bank():
    """CLIP-ReID Eq. 8: z_ik = f_proj,i . T_k over all C identity texts, q_k = (1-eps) [k == y] + eps / C."""
    torch.manual_seed(8)
    image_proj, text_bank = torch.randn(6, 5), torch.randn(9, 5)
    labels, eps = torch.tensor([0, 4, 4, 8, 2, 0]), 0.1
    expected, largest = 0.0, 0.0
    for i in range(len(labels)):
        z = [sum(x * t for x, t in zip(image_proj[i].tolist(), text_bank[k].tolist())) for k in range(len(text_bank))]
        largest = max(largest, max(abs(v) for v in z))
        log_norm = math.log(sum(math.exp(v) for v in z))
        for k, v in enumerate(z):
            q = (1 - eps) * (k == int(labels[i])) + eps / len(z)
            expected -= q * (v - log_norm)
    expected /= len(labels)
    assert _close(cross_entropy_label_smooth(image_proj @ text_bank.t(), labels, eps), Expected(expected, largest))
