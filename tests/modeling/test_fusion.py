"""Text-query fusion (PromptSG's multimodal interaction module): cross-attention values, query caching, masks."""

import math

import pytest
import torch
import torch.nn.functional as F

from fastreid_clip.config import ConfigValueError
from fastreid_clip.modeling.fusion import CrossAttention, TextQueryFusion
from fastreid_clip.modeling.fusion import cross_attention as module
from numeric import assert_close_ulps


def _reference_cross_attention(attn: CrossAttention, stream, kv):
    """Eq. 7 in float64, written out: stream + W_o softmax(Q K^T / sqrt(d)) V per head."""
    p = {k: v.double() for k, v in attn.state_dict().items()}

    def ln(x, prefix):
        return F.layer_norm(x, x.shape[-1:], p[prefix + ".weight"], p[prefix + ".bias"], eps=1e-5)

    s, kv = stream.double(), kv.double()
    q = ln(s, "ln_q") @ p["q_proj.weight"].t() + p["q_proj.bias"]
    k = ln(kv, "ln_kv") @ p["k_proj.weight"].t() + p["k_proj.bias"]
    v = ln(kv, "ln_kv") @ p["v_proj.weight"].t() + p["v_proj.bias"]
    heads, dim = attn.num_heads, q.shape[-1]
    d = dim // heads
    out = torch.zeros(kv.shape[0], s.shape[1], dim, dtype=torch.float64)
    for b in range(kv.shape[0]):
        for h in range(heads):
            qh = q[min(b, q.shape[0] - 1), :, h * d:(h + 1) * d]
            kh, vh = k[b, :, h * d:(h + 1) * d], v[b, :, h * d:(h + 1) * d]
            scores = qh @ kh.t() / math.sqrt(d)
            weights = torch.exp(scores - scores.max(dim=1, keepdim=True).values)
            out[b, :, h * d:(h + 1) * d] = (weights / weights.sum(dim=1, keepdim=True)) @ vh
    return s + out @ p["out_proj.weight"].t() + p["out_proj.bias"]


def test_cross_attention_equals_eq7_in_float64_and_uses_the_fused_kernel(monkeypatch):
    torch.manual_seed(0)
    attn = CrossAttention(dim=16, kv_dim=24, num_heads=4)
    stream, kv = torch.randn(3, 2, 16), torch.randn(3, 7, 24)
    calls = []
    fused = F.scaled_dot_product_attention
    monkeypatch.setattr(module.F, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or fused(*a, **k))
    out = attn(stream, kv)
    assert calls == [1]
    # Sums over 24-wide projections and 7 keys; magnitudes are O(10).
    assert_close_ulps(out, _reference_cross_attention(attn, stream, kv), 256)
    shared = attn(stream[:1], kv)  # one query row broadcast over the images
    assert shared.shape == (3, 2, 16)
    assert_close_ulps(shared, _reference_cross_attention(attn, stream[:1], kv), 256)
    attn.residual = False  # Eq. 7 alone: the query only steers the attention weights
    assert_close_ulps(attn(stream[:1], kv), _reference_cross_attention(attn, stream[:1], kv) - stream[:1].double(),
                      256, magnitude=16.0)


def test_padding_mask_hides_keys():
    torch.manual_seed(0)
    attn = CrossAttention(dim=8, kv_dim=8, num_heads=2)
    stream, kv = torch.randn(2, 1, 8), torch.randn(2, 5, 8)
    mask = torch.tensor([[False, False, False, True, True], [False] * 5])
    changed = kv.clone()
    changed[0, 3:] = 100.0
    a, b = attn(stream, kv, kv_padding_mask=mask), attn(stream, changed, kv_padding_mask=mask)
    assert_close_ulps(a, b, 16)
    assert_close_ulps(a[0], attn(stream[:1], kv[:1, :3])[0], 64)


def test_fusion_shapes_cached_query_and_gradients():
    torch.manual_seed(0)
    fusion = TextQueryFusion(query_dim=12, kv_dim=20, width=16, num_heads=4, depth=2)
    assert isinstance(fusion.query_in, torch.nn.Linear) and len(fusion.blocks) == 2
    query, kv = torch.randn(1, 1, 12), torch.randn(4, 9, 20, requires_grad=True)
    direct = fusion(query, kv)
    assert direct.shape == (4, 1, 16)
    state = fusion.encode_query(query)
    assert torch.equal(fusion(None, kv, state=state), direct)  # the same computation, query side done first
    repeated = fusion(query.expand(4, -1, -1), kv)  # the query per image instead of broadcast
    assert_close_ulps(repeated, direct, 64)
    direct.sum().backward()
    assert kv.grad.abs().sum() > 0
    assert all(p.grad is not None for p in fusion.parameters())
    tokens = TextQueryFusion(query_dim=16, kv_dim=16, num_heads=2, depth=0)(torch.randn(2, 5, 16), kv[:2, :, :16])
    assert tokens.shape == (2, 5, 16)  # a query sequence (CLIP-SCGI's use), no blocks


def test_promptsg_width_matches_the_parameter_budget_of_tab6():
    """1 cross-attention + 2 blocks at width 512 on 512-d tokens: ~7.4 M parameters (notes §5.3)."""
    fusion = TextQueryFusion(query_dim=512, kv_dim=512, width=0, num_heads=8, depth=2)
    count = sum(p.numel() for p in fusion.parameters())
    assert fusion.width == 512 and 7.3e6 < count < 7.5e6


@pytest.mark.parametrize("kwargs,key", [
    ({"num_heads": 3}, "MODEL.PROMPTSG.MIM.HEADS = 3: expected a divisor of the fusion width 16"),
    ({"depth": -1}, "MODEL.PROMPTSG.MIM.DEPTH = -1: expected an integer >= 0"),
    ({"width": -4}, "MODEL.PROMPTSG.MIM.WIDTH = -4"),
    ({"mlp_ratio": 0.0}, "MODEL.PROMPTSG.MIM.MLP_RATIO = 0.0: expected a positive"),
])
def test_bad_values_name_the_key(kwargs, key):
    with pytest.raises(ConfigValueError) as info:
        TextQueryFusion(**{"query_dim": 16, "kv_dim": 8, "num_heads": 4, **kwargs})
    assert str(info.value).startswith(key)
