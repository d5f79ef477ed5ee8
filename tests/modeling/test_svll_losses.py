"""SVLL-ReID's NT-Xent (Eq. 7 / 10) against float64 loops, and L_lss / L_vss of the model against an independent
float64 recomputation from the model's own encoder outputs (anchor excluded from its own denominator)."""

import copy
import math

import pytest
import torch

from fastreid_clip.modeling.losses.contrastive import nt_xent_loss
from numeric import ulp


def _reference_nt_xent(view_a, view_b, labels=None, temperature=0.1, exclude_anchor=True):
    """-(1/2N) sum_i (1/|P(i)|) sum_{p in P(i)} log(exp(s_ip) / sum_{k != i} exp(s_ik)), plain Python in float64.

    Rows 0..N-1 are view a, N..2N-1 view b; P(i) = {i's other view} (labels None) or every other row with i's label.
    ``exclude_anchor=False`` keeps k = i in the denominator (the wrong form, to show the test can tell them apart).
    """
    rows = view_a.double().tolist() + view_b.double().tolist()
    rows = [[v / math.sqrt(sum(x * x for x in r)) for v in r] for r in rows]
    n2 = len(rows)
    n = n2 // 2
    y = None if labels is None else labels.tolist() * 2
    total = 0.0
    for i in range(n2):
        s = [sum(a * b for a, b in zip(rows[i], rows[k])) / temperature for k in range(n2)]
        log_den = math.log(sum(math.exp(s[k]) for k in range(n2) if k != i or not exclude_anchor))
        positives = [(i + n) % n2] if y is None else [k for k in range(n2) if k != i and y[k] == y[i]]
        total += -sum(s[p] - log_den for p in positives) / len(positives)
    return total / n2


def _close(value, expected, temperature):
    """float32 vs float64: within 16 float32 ulps of the largest logit 1/tau (log-softmax cancels); measured < 2."""
    return abs(float(value) - expected) <= 16 * float(ulp(max(abs(expected), 1.0 / temperature)))


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_instance_positives_equal_float64_loops(temperature):
    torch.manual_seed(0)
    a, b = torch.randn(6, 5), torch.randn(6, 5)
    expected = _reference_nt_xent(a, b, temperature=temperature)
    assert _close(nt_xent_loss(a, b, temperature=temperature), expected, temperature)
    # The anchor's own term in the denominator (exp(1 / tau) for unit vectors) would change the value by far more.
    wrong = _reference_nt_xent(a, b, temperature=temperature, exclude_anchor=False)
    assert abs(wrong - expected) > 1e-2 and not _close(nt_xent_loss(a, b, temperature=temperature), wrong, temperature)


def test_identity_positives_equal_float64_loops():
    torch.manual_seed(1)
    a, b = torch.randn(8, 4), torch.randn(8, 4)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3])
    expected = _reference_nt_xent(a, b, labels)
    assert _close(nt_xent_loss(a, b, labels), expected, 0.1)
    assert abs(expected - _reference_nt_xent(a, b)) > 1e-2  # more positives than the instance form
    # all labels distinct: the identity form is the instance form
    distinct = torch.arange(8)
    assert _close(nt_xent_loss(a, b, distinct), _reference_nt_xent(a, b), 0.1)


def test_scale_invariant_finite_gradients_and_half_inputs():
    torch.manual_seed(2)
    a = torch.randn(5, 3, requires_grad=True)
    b = torch.randn(5, 3, requires_grad=True)
    labels = torch.tensor([0, 1, 0, 2, 1])
    for lab in (None, labels):
        loss = nt_xent_loss(a, b, lab)
        a.grad = b.grad = None
        loss.backward()
        assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all() and a.grad.abs().sum() > 0
        # cosine: invariant to the scale of each embedding
        assert torch.allclose(nt_xent_loss(3 * a.detach(), 0.5 * b.detach(), lab), loss.detach(), atol=1e-5)
    half = nt_xent_loss(a.detach().bfloat16(), b.detach().bfloat16())
    assert half.dtype == torch.float32


def test_bad_inputs():
    with pytest.raises(ValueError, match="two"):
        nt_xent_loss(torch.randn(3, 2), torch.randn(4, 2))
    with pytest.raises(ValueError, match="temperature"):
        nt_xent_loss(torch.randn(3, 2), torch.randn(3, 2), temperature=0.0)


# ---------------------------------------------------------------------------------------------- the model's losses
def _model(**svll):
    from fastreid.modeling.meta_arch import build_model

    from conftest import tiny_cfg

    opts = ["MODEL.HEADS.NUM_CLASSES", "6", "MODEL.BACKBONE.NUM_CAMERAS", "2", "MODEL.BACKBONE.PRETRAIN", "False",
            "MODEL.BACKBONE.SIE_CAMERA", "True"]
    for key, value in svll.items():
        opts += [f"MODEL.SVLL.{key}", str(value)]
    cfg = tiny_cfg("unused", *opts, config="configs/Synthetic/svll_reid_vit_tiny.yml")
    torch.manual_seed(0)
    return build_model(cfg).train()


def _reference_with_head(head, feats_a, feats_b, labels, temperature):
    """The projection head in float64 (train mode: batch statistics over both views), then the float64 loops."""
    head64 = copy.deepcopy(head).double().train()
    z = head64(torch.cat([feats_a, feats_b]).double()).detach()
    n = feats_a.shape[0]
    return _reference_nt_xent(z[:n], z[n:], labels, temperature)


def test_model_lss_equals_float64_recomputation(monkeypatch):
    model = _model(**{"LSS.MASK": "element"})
    recorded = {}
    learner, encode = model.prompt_learner, model.text_encoder.encode_embeddings

    def record_learner(labels, **kwargs):
        recorded["labels"] = labels.clone()
        return type(learner).forward(learner, labels, **kwargs)

    def record_encode(embeddings, eot, **kwargs):
        recorded["feats"] = encode(embeddings, eot, **kwargs).detach()
        return encode(embeddings, eot, **kwargs)

    monkeypatch.setattr(learner, "forward", record_learner)
    monkeypatch.setattr(model.text_encoder, "encode_embeddings", record_encode)
    labels = torch.tensor([4, 1, 1, 0, 4, 2])
    loss = model.language_ss_loss(labels)
    ids = recorded["labels"]
    v = ids.numel() // 2
    assert sorted(ids[:v].tolist()) == [0, 1, 2, 4] and torch.equal(ids[:v], ids[v:])  # two copies per identity
    feats = recorded["feats"]
    # positives = the two masked copies of one identity, found from the recorded labels (not from the layout)
    expected = _reference_with_head(model.text_mlp, feats[:v], feats[v:], None, 0.1)
    by_label = _reference_with_head(model.text_mlp, feats[:v], feats[v:], ids[:v], 0.1)
    assert abs(expected - by_label) < 1e-12  # distinct identities: instance pairs are the same-label pairs
    # float32 model (head and loss) vs float64 head + loops on the same encoder outputs: measured 1e-7 apart (L_vss
    # below, from separately computed backbone features: up to 2.4e-6); a wrong pairing or an anchor left in its own
    # denominator is off by > 1e-2 (tests above).
    assert abs(float(loss.detach()) - expected) < 1e-4


@pytest.mark.parametrize("positives", ["instance", "identity"])
def test_model_vss_equals_float64_recomputation(positives):
    model = _model(**{"VSS.POSITIVES": positives})
    torch.manual_seed(3)
    batch = {"images": torch.rand(4, 3, 256, 128) * 255, "views": torch.rand(4, 2, 3, 256, 128) * 255,
             "targets": torch.tensor([0, 0, 3, 3]), "camids": torch.tensor([0, 1, 0, 1])}
    loss = model.vision_ss_loss(batch)
    with torch.no_grad():  # every view separately, without SIE: other GEMM shapes than the model's 2B-image pass
        feats = [[model.backbone(model.preprocess_image(batch["views"][n, k:k + 1]), use_sie=False).final[0]
                  for n in range(4)] for k in range(2)]
    labels = batch["targets"] if positives == "identity" else None
    expected = _reference_with_head(model.image_mlp, torch.stack(feats[0]), torch.stack(feats[1]), labels, 0.1)
    assert abs(float(loss.detach()) - expected) < 1e-4
    with torch.no_grad():  # SIE would change the features: the views must go through without it
        with_sie = model.backbone(model.preprocess_image(batch["views"][:, 0]), camids=batch["camids"]).final
    assert (with_sie - torch.stack(feats[0])).abs().max() > 1e-3
