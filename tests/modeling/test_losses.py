"""Losses equal independent, loop-based computations of their paper formulas."""

import math

import torch

from fastreid_clip.modeling.losses import batch_hard_triplet_loss, cross_entropy_label_smooth
from numeric import assert_close_ulps


def test_label_smoothing_is_clip_reid_form():
    torch.manual_seed(0)
    logits, targets, eps = torch.randn(5, 7), torch.tensor([0, 3, 6, 3, 2]), 0.1
    expected = 0.0
    for z, y in zip(logits.tolist(), targets.tolist()):
        log_norm = math.log(sum(math.exp(v) for v in z))
        for k, v in enumerate(z):
            q = (1 - eps) * (k == y) + eps / len(z)  # eps/K on every class, Eq. 6
            expected -= q * (v - log_norm)
    expected /= len(targets)
    # float32 log-softmax of 7 logits and a mean of 5 rows vs float64 loops: a few ulps of the larger of the
    # loss and the logits (z - logsumexp(z) cancels)
    magnitude = max(abs(expected), float(logits.abs().max()))
    assert_close_ulps(cross_entropy_label_smooth(logits, targets, eps), expected, 16, magnitude=magnitude)
    # eps = 0 is plain cross-entropy (another kernel: the same ulps)
    assert_close_ulps(cross_entropy_label_smooth(logits, targets, 0.0),
                      torch.nn.functional.cross_entropy(logits, targets), 16, magnitude=magnitude)


def _reference_triplet(x, y, margin):
    """The loss in float64, and the largest distance (the magnitude its float32 differences cancel from)."""
    total, largest = 0.0, 0.0
    for i in range(len(x)):
        d = [math.sqrt(max(sum((a - b) ** 2 for a, b in zip(x[i], x[j])), 1e-12)) for j in range(len(x))]
        d_ap = max(d[j] for j in range(len(x)) if y[j] == y[i])
        d_an = min(d[j] for j in range(len(x)) if y[j] != y[i])
        total += max(0.0, d_ap - d_an + margin) if margin > 0 else math.log1p(math.exp(d_ap - d_an))
        largest = max(largest, max(d))
    return total / len(x), largest


def test_batch_hard_triplet_matches_loops():
    torch.manual_seed(1)
    feats = torch.randn(8, 5)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    for margin in (0.3, 0.0, 5.0):
        expected, largest = _reference_triplet(feats.tolist(), labels.tolist(), margin)
        # float32 distances (5-term sums, a square root) and their differences: ulps of the largest distance
        assert_close_ulps(batch_hard_triplet_loss(feats, labels, margin), expected, 16,
                          magnitude=max(largest, margin, abs(expected)))


def test_triplet_gradient_flows():
    feats = torch.randn(8, 5, requires_grad=True)
    batch_hard_triplet_loss(feats * 0.01, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]), 0.3).backward()
    assert feats.grad.abs().sum() > 0
