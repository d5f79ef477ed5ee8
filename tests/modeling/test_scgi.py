"""CLIP-SCGI: caption-guided inversion, gradient flow through the frozen text encoder, L_con (Eq. 6-8), the fusion
roles, inference without captions or text encoder, ablations and config errors (tiny ViT, CPU)."""

import math

import pytest
import torch
from fastreid.modeling.meta_arch import build_model

from conftest import tiny_cfg
from fastreid_clip.config import ConfigValueError
from fastreid_clip.config.stages import solver_stage
from fastreid_clip.modeling.inversion import CaptionGuidedInversion
from fastreid_clip.modeling.meta_arch import ClipSCGI
from fastreid_clip.solver import build_stage_optimizer
from numeric import assert_close_ulps

CONFIG = "configs/Synthetic/clip_scgi_vit_tiny.yml"


def _cfg(*opts):
    return tiny_cfg("unused", "MODEL.HEADS.NUM_CLASSES", "4", *opts, config=CONFIG)


def _model(*opts, seed=0) -> ClipSCGI:
    torch.manual_seed(seed)
    return build_model(_cfg(*opts))


def _batch(n=8, seed=0, captions=True):
    g = torch.Generator().manual_seed(seed)
    batch = {"images": torch.rand(n, 3, 256, 128, generator=g) * 255, "targets": torch.arange(n) // 2 % 4,
             "camids": torch.zeros(n, dtype=torch.long)}
    if captions:
        batch["caption_embeds"] = torch.randn(n, 32, generator=g)
    return batch


@pytest.fixture(scope="module")
def model():
    return _model()


# ------------------------------------------------------------------------------------------------ CGI
def test_cgi_shapes_and_reweighting():
    torch.manual_seed(0)
    cgi = CaptionGuidedInversion(32, 64, num_queries=3, depth=2, num_heads=4, hidden_dim=48)
    cls, patches, text = torch.randn(5, 32), torch.randn(5, 11, 32), torch.randn(5, 32)
    assert cgi(cls, patches, text).shape == (5, 64)
    assert cgi.queries.shape == (3, 32) and len(cgi.layers) == 2
    assert cgi.local_tokens(patches).shape == (5, 3, 32)
    # Eq. 3: v~ = v (.) t, t broadcast over the tokens.
    torch.testing.assert_close(cgi.reweight(patches, text)[2, 7], patches[2, 7] * text[2])
    torch.testing.assert_close(cgi.reweight(cls, text), cls * text)
    # S* = S*_g + S*_l: the two branches, recomputed by hand.
    expected = cgi.global_net(cls * text) + cgi.local_net(cgi.local_tokens(patches * text[:, None]).mean(1))
    torch.testing.assert_close(cgi(cls, patches, text), expected)
    # The caption matters: another caption gives another pseudo-word.
    assert (cgi(cls, patches, text) - cgi(cls, patches, torch.randn(5, 32))).abs().max() > 1e-3
    # Patch tokens of another width (a ModifiedResNet's layer4 map) pass a learned map first.
    wide = CaptionGuidedInversion(32, 64, patch_dim=80, num_heads=4)
    assert wide(cls, torch.randn(5, 9, 80), text).shape == (5, 64)
    with pytest.raises(ValueError, match="caption embeddings"):
        cgi(cls, patches, torch.randn(5, 16))


@pytest.mark.parametrize("kwargs,key", [({"num_queries": 0}, "MODEL.SCGI.CGI.NUM_QUERIES"),
                                        ({"num_heads": 5}, "MODEL.SCGI.CGI.HEADS"),
                                        ({"depth": 0}, "MODEL.SCGI.CGI.DEPTH")])
def test_cgi_bad_sizes_name_the_key(kwargs, key):
    with pytest.raises(ConfigValueError, match=key):
        CaptionGuidedInversion(32, 64, **kwargs)


def test_model_layout(model):
    assert (model.prompt.composed_eot, model.prompt.simplified_eot) == (7, 6)
    assert model.inversion.queries.shape == (2, 32) and len(model.inversion.layers) == 1  # K = 2, depth 1
    assert len(model.mim.blocks) == 2 and model.mim.width == 64  # 1 cross-attention + 2 blocks
    assert model.text_encoder.token_embedding is None  # cached captions need no token table
    assert (model.supcon_sim, model.supcon_tau, model.supcon_weight) == ("dot", 1.0, 1.0)
    assert model.head_proj is None and model.head.classifier.weight.shape == (4, 64)


# ------------------------------------------------------------------------------------------------ gradients
def test_gradients_reach_cgi_and_visual_encoder_not_the_text_encoder():
    model = _model()
    model.train()
    batch = _batch()
    feats = model.extract(batch)
    pooled, tokens = model.encode_composed(feats, batch["caption_embeds"])
    assert pooled.shape == (8, 32) and tokens.shape == (8, 8, 64)  # t_sos..t_eos of "a photo of a S* person"
    (pooled * torch.linspace(-1, 1, pooled.numel()).view_as(pooled)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.inversion.parameters())
    assert model.backbone.visual.conv1.weight.grad.abs().sum() > 0
    for name, p in model.text_encoder.named_parameters():
        assert not p.requires_grad and p.grad is None, name

    model.zero_grad(set_to_none=True)
    losses = model(batch)
    assert set(losses) == {"loss_id", "loss_triplet", "loss_i2t", "loss_t2i"}
    sum(losses.values()).backward()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(model.get_parameter(n).grad is not None for n in trainable)  # DDP needs every trainable param used
    assert model.inversion.queries.grad.abs().sum() > 0
    groups = build_stage_optimizer(model, solver_stage(_cfg())).param_groups
    in_groups = {id(p) for g in groups for p in g["params"]}
    assert not in_groups & {id(p) for p in model.text_encoder.parameters()}
    assert in_groups == {id(model.get_parameter(n)) for n in trainable}
    lrs = {id(p): g["lr"] for g in groups for p in g["params"]}
    base = _cfg().SOLVER.BASE_LR
    assert lrs[id(model.backbone.visual.conv1.weight)] == pytest.approx(base)
    assert lrs[id(model.inversion.queries)] == pytest.approx(10 * base)  # new modules x10 (paper: 5e-5)
    assert lrs[id(model.mim.cross.q_proj.weight)] == pytest.approx(10 * base)


# ------------------------------------------------------------------------------------------------ L_con
def _con_reference(image, text, labels):
    """Eq. 6-8 in float64: s(T, I) = T . I, positives = same identity, mean over positives then anchors."""
    image, text = image.double(), text.double()
    n = len(labels)

    def direction(anchors, contrasts):
        total = 0.0
        for i in range(n):
            logits = [float(anchors[i] @ contrasts[j]) for j in range(n)]
            top = max(logits)
            log_z = top + math.log(sum(math.exp(s - top) for s in logits))
            pos = [j for j in range(n) if labels[j] == labels[i]]
            total += -sum(logits[j] - log_z for j in pos) / len(pos)
        return total / n

    return direction(image, text), direction(text, image)


def test_l_con_equals_an_independent_float64_computation(model):
    model.train()
    batch = _batch(seed=4)
    with torch.no_grad():
        feats = model.extract(batch)
        losses = model.losses(feats, batch["targets"], batch["caption_embeds"])
        pooled, _ = model.encode_composed(feats, batch["caption_embeds"])
    i2t, t2i = _con_reference(feats.proj, pooled, batch["targets"].tolist())
    scale = float((feats.proj.abs() @ pooled.abs().t()).max())  # float32 logits of this size
    assert abs(float(losses["loss_i2t"]) - i2t) < 1e-5 * max(1.0, scale)
    assert abs(float(losses["loss_t2i"]) - t2i) < 1e-5 * max(1.0, scale)
    assert abs(i2t - t2i) > 1e-4  # the two directions differ


# ------------------------------------------------------------------------------------------------ inference
def test_inference_never_touches_captions_or_the_text_encoder_once_cached(model, monkeypatch):
    model.eval()
    batch = _batch(seed=2, captions=False)
    with torch.no_grad():
        first = model(batch)

    def fail(*args, **kwargs):
        raise AssertionError("text encoder called at inference")

    class NoCaptions(dict):
        def __getitem__(self, key):
            if key.startswith("caption"):
                raise AssertionError(f"inference read '{key}'")
            return super().__getitem__(key)

        def __contains__(self, key):
            if str(key).startswith("caption"):
                raise AssertionError(f"inference looked for '{key}'")
            return super().__contains__(key)

    monkeypatch.setattr(model.text_encoder, "encode_embeddings", fail)
    monkeypatch.setattr(model.text_encoder, "forward", fail)
    monkeypatch.setattr(model.inversion, "forward", fail)
    with torch.no_grad():
        again = model(NoCaptions(batch))
    assert torch.equal(first, again) and first.shape == (8, 64)
    torch.testing.assert_close(first.norm(dim=1), torch.ones(8))


def test_cached_fixed_prompt_equals_recomputing_it(model):
    model.eval()
    batch = _batch(seed=3, captions=False)
    with torch.no_grad():
        cached = model(batch)
        model.clear_prompt_cache()
        embeddings, eot = model.prompt.simplified(8)
        _, tokens = model.text_encoder.encode_embeddings(embeddings, eot, return_tokens=True)  # per image
        feats = model.extract(batch)
        h = model.mim(tokens, model.key_values(feats))[:, 6]  # EOT of "a photo of a person"
    assert tokens.shape == (8, 7, 64)
    assert_close_ulps(cached, torch.nn.functional.normalize(h, dim=1), 256)


def test_kv_cls_makes_every_attention_weight_one(model):
    """CFF.KV cls (the paper's literal key/value): one key, so the cross-attention output is the same for every
    query token (notes §6.4)."""
    model.eval()
    with torch.no_grad():
        feats = model.extract(_batch(n=2, captions=False))
        kv = model.key_values(feats)
        assert kv.shape == (2, 1, 32)
        torch.testing.assert_close(kv[:, 0], feats.proj)  # v_cls in the joint space
        stream = model.mim.query_in(model.fixed_query().expand(2, -1, -1))
        out = model.mim.cross(stream, kv)
        assert not model.mim.cross.residual  # the default: Eq. 9 as printed, no query residual
        # every query token gets the same W_o W_v LN(v_cls): the fused feature does not depend on the query
        torch.testing.assert_close(out[:, 0:1].expand_as(out), out)
        model.mim.cross.residual = True
        try:
            with_residual = model.mim.cross(stream, kv)
        finally:
            model.mim.cross.residual = False
        torch.testing.assert_close(with_residual - stream, out)


# ------------------------------------------------------------------------------------------------ ablations
@pytest.mark.parametrize("opts,keys,dim", [
    (["MODEL.SCGI.CGI.ENABLED", "False", "SOLVER.LR_FACTORS", "[['mim', 10.0], ['head', 10.0]]"],
     {"loss_id", "loss_triplet"}, 64),
    (["MODEL.SCGI.CFF.ENABLED", "False", "MODEL.LOSSES.TRI.FEATURES", "('inter', 'final', 'proj')"],
     {"loss_id", "loss_triplet", "loss_i2t", "loss_t2i"}, 64 + 32),
    (["MODEL.SCGI.CFF.QUERY", "image", "MODEL.SCGI.CFF.KV", "all"],
     {"loss_id", "loss_triplet", "loss_i2t", "loss_t2i"}, 64),
    (["MODEL.SCGI.CFF.KV", "patches", "MODEL.SCGI.CFF.POOL", "mean"],
     {"loss_id", "loss_triplet", "loss_i2t", "loss_t2i"}, 64),
])
def test_ablation_variants_train_and_infer(opts, keys, dim):
    model = _model(*opts)
    model.train()
    losses = model(_batch(captions=model.inversion is not None))
    assert set(losses) == keys and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        assert model(_batch(captions=False)).shape == (8, dim)


def test_no_cgi_needs_no_captions():
    cfg = _cfg("MODEL.SCGI.CGI.ENABLED", "False")
    assert ClipSCGI.train_sample_fields(cfg, []) == {}


def test_training_batch_without_captions_is_a_clear_error(model):
    model.train()
    with pytest.raises(KeyError, match="caption_embeds"):
        model(_batch(captions=False))


@pytest.mark.parametrize("opts,message", [
    (["MODEL.SCGI.CFF.KV", "tokens"], "MODEL.SCGI.CFF.KV = 'tokens'"),
    (["MODEL.SCGI.CFF.QUERY", "both"], "MODEL.SCGI.CFF.QUERY"),
    (["MODEL.SCGI.CFF.POOL", "max"], "MODEL.SCGI.CFF.POOL"),
    (["MODEL.SCGI.CON.SCALE", "-1.0"], "MODEL.SCGI.CON.SCALE"),
    (["MODEL.SCGI.CFF.ENABLED", "False", "MODEL.SCGI.CGI.ENABLED", "False"], "MODEL.SCGI.CFF.ENABLED"),
    (["MODEL.SCGI.CFF.ENABLED", "False"], "MODEL.LOSSES.TRI.FEATURES"),
    (["MODEL.LOSSES.TRI.FEATURES", "('mim',)"], "MODEL.LOSSES.TRI.FEATURES"),
    (["CAPTIONS.MISSING", "skip"], "CAPTIONS.MISSING"),
    (["MODEL.BACKBONE.CLIP_NAME", "RN-Tiny"], "MODEL.SCGI.CFF.TOKENS"),
])
def test_bad_config_values_name_the_key(opts, message):
    with pytest.raises(ConfigValueError, match=message):
        ClipSCGI.check_config(_cfg(*opts))


def test_shipped_scgi_configs_pass_the_early_check():
    import glob

    from fastreid_clip.config import get_cfg, merge_config_file

    paths = sorted(glob.glob("configs/CLIP-SCGI/**/*.yml", recursive=True)) + [CONFIG]
    assert len(paths) >= 13
    for path in paths:
        cfg = merge_config_file(get_cfg(), path)
        assert cfg.MODEL.META_ARCHITECTURE == "ClipSCGI"
        ClipSCGI.check_config(cfg)
    vit = merge_config_file(get_cfg(), "configs/CLIP-SCGI/market_vit.yml")
    assert (vit.SOLVER.BASE_LR, vit.SOLVER.MAX_EPOCH, vit.SOLVER.STEPS) == (5e-6, 60, [20, 40])
    assert (vit.SOLVER.WARMUP_EPOCHS, vit.SOLVER.WARMUP_FACTOR * vit.SOLVER.BASE_LR) == (10, pytest.approx(5e-7))
    assert vit.SOLVER.IMS_PER_BATCH == 64 and vit.DATALOADER.NUM_INSTANCE == 4
    assert dict(vit.SOLVER.LR_FACTORS)["inversion"] * vit.SOLVER.BASE_LR == pytest.approx(5e-5)
    rn = merge_config_file(get_cfg(), "configs/CLIP-SCGI/msmt17_rn50.yml")
    assert (rn.MODEL.BACKBONE.CLIP_NAME, rn.SOLVER.MAX_EPOCH, rn.SOLVER.STEPS) == ("RN50", 120, [40, 70])


def test_resnet_backbone_uses_the_layer4_map(tiny_weights):
    path, _ = tiny_weights["RN-Tiny"]
    model = _model("MODEL.BACKBONE.CLIP_NAME", "RN-Tiny", "MODEL.BACKBONE.PRETRAIN_PATH", path,
                   "MODEL.SCGI.CFF.TOKENS", "final", "MODEL.SCGI.CFF.KV", "all", "MODEL.PIXEL_MEAN", "[0., 0., 0.]",
                   "MODEL.PIXEL_STD", "[255., 255., 255.]", "INPUT.SIZE_TRAIN", "[128, 64]",
                   "INPUT.SIZE_TEST", "[128, 64]")
    batch = _batch(captions=False)
    batch["images"] = batch["images"][:, :, :128, :64]
    feats = model.extract(batch)
    batch["caption_embeds"] = torch.randn(8, feats.proj.shape[1])
    assert model.inversion.patch_proj.in_features == feats.tokens.shape[-1]  # learned layer4 -> joint map
    model.train()
    losses = model(batch)
    sum(losses.values()).backward()
    assert model.inversion.patch_proj.weight.grad.abs().sum() > 0
