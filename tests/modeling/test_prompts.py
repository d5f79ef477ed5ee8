"""ID prompt learner: template layout and EOT truncation (same features and gradients as 77 tokens)."""

import torch

from fastreid_clip.modeling.backbones import ClipGeometry, CLIPTextEncoder, build_clip_model
from fastreid_clip.modeling.prompts import IDPromptLearner
from numeric import assert_close_ulps


def _learner(tiny_weights, num_ids=5, n_ctx=4, class_word="person"):
    path, _ = tiny_weights["ViT-Tiny-16"]
    text = CLIPTextEncoder.from_open_clip(build_clip_model("ViT-Tiny-16", path, ClipGeometry()), "ViT-Tiny-16")
    return text, IDPromptLearner(num_ids, text.token_embedding, text.tokenize, n_ctx, class_word)


def test_template_layout(tiny_weights):
    text, learner = _learner(tiny_weights)
    tokens = text.tokenize(["A photo of a X X X X person."])
    assert learner.eot_index == 11 and learner.token_prefix.shape == (1, 5, 64)
    assert learner.token_suffix.shape == (1, 77 - 5 - 4, 64) and learner.ctx.shape == (5, 4, 64)
    full, eot = learner(torch.tensor([2, 0]), full_context=True)
    reference = text.embed_tokens(tokens)[0]
    assert torch.equal(full[0, :5], reference[:5]) and torch.equal(full[0, 9:], reference[9:])
    assert torch.equal(full[0, 5:9], learner.ctx[2]) and eot.tolist() == [11, 11]
    assert learner(torch.tensor([1]))[0].shape == (1, 12, 64)
    _, vehicle = _learner(tiny_weights, n_ctx=2, class_word="vehicle")
    assert vehicle.eot_index == 9


def test_truncated_context_equals_full_context_features_and_gradients(tiny_weights):
    text, learner = _learner(tiny_weights)
    labels = torch.tensor([0, 3, 3, 1])
    results = []
    for full in (False, True):
        learner.zero_grad()
        embeddings, eot = learner(labels, full_context=full)
        feats = text.encode_embeddings(embeddings, eot, truncate=not full)
        assert embeddings.shape[1] == (77 if full else 12)
        (feats * torch.linspace(-1, 1, feats.numel()).view_as(feats)).sum().backward()
        results.append((feats.detach(), learner.ctx.grad.clone()))
    (short, grad_short), (long, grad_long) = results
    # 12 vs 77 tokens: other attention and GEMM shapes. Measured at most 5 ulps of the largest feature and
    # gradient value apart (MKL / ATen paths and thread counts as for the towers, test_clip_backbones).
    assert_close_ulps(short, long, 64)
    assert_close_ulps(grad_short, grad_long, 64)
    assert grad_short[2].abs().sum() == 0 and grad_short[3].abs().sum() > 0
