"""PromptSG: composed prompts, Eq. 4-6, gradient flow through the frozen text encoder, both inference modes,
ablation variants and config errors (tiny ViT, CPU)."""

import math

import pytest
import torch
from fastreid.modeling.meta_arch import build_model

from conftest import tiny_cfg
from fastreid_clip.config import ConfigValueError
from fastreid_clip.config.stages import solver_stage
from fastreid_clip.modeling.meta_arch import PromptSG
from fastreid_clip.modeling.prompts import ComposedPrompt
from fastreid_clip.solver import build_stage_optimizer
from numeric import assert_close_ulps

CONFIG = "configs/Synthetic/promptsg_vit_tiny.yml"


def _cfg(*opts):
    return tiny_cfg("unused", "MODEL.HEADS.NUM_CLASSES", "4", *opts, config=CONFIG)


def _model(*opts, seed=0) -> PromptSG:
    torch.manual_seed(seed)
    return build_model(_cfg(*opts))


def _batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"images": torch.rand(n, 3, 256, 128, generator=g) * 255, "targets": torch.arange(n) // 2 % 4,
            "camids": torch.zeros(n, dtype=torch.long)}


@pytest.fixture(scope="module")
def model():
    return _model()


# ------------------------------------------------------------------------------------------------ prompts
def test_composed_and_simplified_templates(model):
    prompt, text = model.prompt, model.text_encoder
    assert (prompt.composed_eot, prompt.simplified_eot, prompt.pseudo_index) == (7, 6, 5)
    assert prompt.composed_template == "A photo of a X person" and prompt.simplified_template == "A photo of a person"
    s = torch.randn(3, prompt.width, requires_grad=True)
    rows, eot = prompt.composed(s)
    assert rows.shape == (3, 8, 64) and eot.tolist() == [7, 7, 7]
    assert torch.equal(rows[:, 5], s) and torch.equal(rows[1, :5], prompt.composed_rows[0, :5])
    assert torch.equal(rows[2, 6:], prompt.composed_rows[0, 6:8])
    full, _ = prompt.composed(s, full_context=True)
    assert full.shape == (3, 77, 64)
    # Truncated at EOT vs 77 tokens through the causal encoder: the same features up to rounding (8 vs 77 rows).
    short = text.encode_embeddings(rows, eot)
    long = text.encode_embeddings(full, eot, truncate=False)
    assert_close_ulps(short, long, 64)
    simple, eot = prompt.simplified(2)
    assert simple.shape == (2, 7, 64) and eot.tolist() == [6, 6]
    assert model.text_encoder.token_embedding is None  # the rows are buffers; the 49408-row table is not kept
    assert {"prompt.composed_rows", "prompt.simplified_rows"} <= set(model.state_dict())


def test_template_switches_and_errors(tiny_weights):
    from fastreid_clip.modeling.backbones import ClipGeometry, CLIPTextEncoder, build_clip_model

    path, _ = tiny_weights["ViT-Tiny-16"]
    text = CLIPTextEncoder.from_open_clip(build_clip_model("ViT-Tiny-16", path, ClipGeometry()), "ViT-Tiny-16")
    period = ComposedPrompt(text.token_embedding, text.tokenize, period=True)
    assert (period.composed_eot, period.simplified_eot) == (8, 7)
    reference = text.embed_tokens(text.tokenize(["A photo of a X person."]))[0]
    assert torch.equal(period.composed_rows[0], reference)
    with pytest.raises(ConfigValueError, match=r"^MODEL.PROMPTSG.PROMPT.PLACEHOLDER = 'pseudoword': expected a word"):
        ComposedPrompt(text.token_embedding, text.tokenize, placeholder="pseudoword")


# ------------------------------------------------------------------------------------------------ Eq. 4-6
def _supcon_reference(v, l, labels, tau, cosine):
    """Eq. 4-6 in float64 with explicit loops: -(1/N) sum_n (1/|P(n)|) sum_{p in P(n)} log softmax_i(sim / tau)."""
    v, l = v.double(), l.double()
    if cosine:
        v, l = v / v.norm(dim=1, keepdim=True), l / l.norm(dim=1, keepdim=True)

    def one_side(anchors, contrasts):
        total = 0.0
        for n in range(len(anchors)):
            sims = [float(anchors[n] @ contrasts[i]) / tau for i in range(len(contrasts))]
            m = max(sims)
            log_denominator = m + math.log(sum(math.exp(s - m) for s in sims))
            positives = [p for p in range(len(contrasts)) if labels[p] == labels[n]]
            total += sum(sims[p] - log_denominator for p in positives) / len(positives)
        return -total / len(anchors)

    return one_side(v, l), one_side(l, v)


@pytest.mark.parametrize("sim,tau", [("cosine", 0.01), ("cosine", 0.07), ("dot", 1.0)])
def test_supcon_equals_an_independent_float64_computation_of_eq_4_to_6(model, sim, tau):
    torch.manual_seed(3)
    v, l = torch.randn(12, 32), torch.randn(12, 32)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 4, 4])
    model.supcon_sim, model.supcon_tau = sim, tau
    try:
        losses = model.supcon_losses(v, l, labels)
    finally:
        model.supcon_sim, model.supcon_tau = "cosine", 0.01
    i2t, t2i = _supcon_reference(v, l, labels, tau, sim == "cosine")
    # lambda = 0.5 (Eq. 10). float32 logits of size up to 1/tau = 100: a few ulps of 100 per term.
    tolerance = 1e-5 * max(1.0, 1.0 / tau)
    assert abs(float(losses["loss_i2t"]) - 0.5 * i2t) < tolerance
    assert abs(float(losses["loss_t2i"]) - 0.5 * t2i) < tolerance
    assert abs(i2t - t2i) > 1e-3  # the two directions differ (different denominators)


# ------------------------------------------------------------------------------------------------ gradients
def test_gradients_reach_inversion_and_visual_encoder_through_the_frozen_text_encoder():
    model = _model()
    model.train()
    feats = model.extract(_batch())
    text = model.encode_composed(feats.proj)  # the only path: image -> v -> f_theta -> s* -> text encoder -> l_p
    (text * torch.linspace(-1, 1, text.numel()).view_as(text)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.inversion.parameters() if p.requires_grad)
    assert model.backbone.visual.conv1.weight.grad.abs().sum() > 0
    assert model.backbone.visual.proj.grad.abs().sum() > 0
    for name, p in model.text_encoder.named_parameters():
        assert not p.requires_grad and p.grad is None, name

    model.zero_grad(set_to_none=True)
    losses = model(_batch())
    assert set(losses) == {"loss_id", "loss_triplet", "loss_i2t", "loss_t2i"}
    sum(losses.values()).backward()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(model.get_parameter(n).grad is not None for n in trainable)  # DDP needs every trainable param used
    groups = build_stage_optimizer(model, solver_stage(_cfg())).param_groups
    in_groups = {id(p) for g in groups for p in g["params"]}
    assert not in_groups & {id(p) for p in model.text_encoder.parameters()}
    assert in_groups == {id(model.get_parameter(n)) for n in trainable}
    lrs = {id(p): g["lr"] for g in groups for p in g["params"]}
    base = _cfg().SOLVER.BASE_LR
    assert lrs[id(model.backbone.visual.conv1.weight)] == pytest.approx(base)
    assert lrs[id(model.inversion.mlp[0].weight)] == pytest.approx(10 * base)  # new modules x10 (paper: 5e-5)
    assert lrs[id(model.mim.cross.q_proj.weight)] == pytest.approx(10 * base)
    assert lrs[id(model.head.classifier.weight)] == pytest.approx(10 * base)


# ------------------------------------------------------------------------------------------------ inference
class _CountCalls:
    def __init__(self, encoder):
        self.calls, self.encoder = 0, encoder
        self.original = encoder.encode_embeddings

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.original(*args, **kwargs)


def test_simplified_inference_never_calls_the_text_encoder_once_cached(model, monkeypatch):
    model.eval()
    counter = _CountCalls(model.text_encoder)
    monkeypatch.setattr(model.text_encoder, "encode_embeddings", counter)
    monkeypatch.setattr(model, "inference_mode", "simplified")
    with torch.no_grad():
        first = model(_batch(8, seed=1))
        assert counter.calls == 1  # the cache is built
        for seed in (2, 3, 4):
            model(_batch(4, seed=seed))
        assert counter.calls == 1
        model.train()
        model.eval()  # a train/eval switch drops the MIM query cache (weights may have changed), not the text feature
        again = model(_batch(8, seed=1))
        assert counter.calls == 1 and torch.equal(again, first)
        model.load_state_dict(model.state_dict())  # new weights: everything is rebuilt
        model(_batch(2))
        assert counter.calls == 2
        monkeypatch.setattr(model, "inference_mode", "composed")
        model(_batch(4))
        model(_batch(4))
        assert counter.calls == 4  # composed: one text pass per batch
    assert first.shape == (8, 64)
    torch.testing.assert_close(first.norm(dim=1), torch.ones(8))


def test_simplified_features_equal_recomputing_the_fixed_prompt_for_every_batch(model):
    model.eval()
    batch = _batch(6, seed=5)
    with torch.no_grad():
        model.inference_mode = "simplified"
        try:
            cached = model(batch)
            feats = model.extract(batch)
            # Per batch: the prompt encoded once per image, then the MIM with the per-image query (no cache at all).
            text = model.encode_simplified(len(batch["images"]))
            z = model.interact(feats, text=text)
        finally:
            model.inference_mode = "composed"
    recomputed = torch.nn.functional.normalize(z, dim=1)
    # Other GEMM shapes (6 vs 1 query rows) through the MIM: a few ulps of unit-norm features.
    assert_close_ulps(cached, recomputed, 64, magnitude=1.0)


def test_composed_inference_of_an_image_does_not_depend_on_its_batch(model):
    model.eval()
    batch = _batch(6, seed=6)
    small = {k: v[:2] for k, v in batch.items()}
    with torch.no_grad():
        assert_close_ulps(model(small), model(batch)[:2], 64, magnitude=1.0)


# ------------------------------------------------------------------------------------------------ variants
@pytest.mark.parametrize("opts,keys,dim", [
    (["MODEL.PROMPTSG.SUPCON.I2T", "False"], {"loss_id", "loss_triplet", "loss_t2i"}, 64),
    (["MODEL.PROMPTSG.SUPCON.T2I", "False"], {"loss_id", "loss_triplet", "loss_i2t"}, 64),
    (["MODEL.PROMPTSG.MIM.ENABLED", "False", "MODEL.LOSSES.TRI.FEATURES", '("inter", "final", "proj")',
      "SOLVER.LR_FACTORS", '[["inversion", 10.0], ["head", 10.0]]'],
     {"loss_id", "loss_triplet", "loss_i2t", "loss_t2i"}, 64 + 32),  # the baseline's concat(f, f_proj)
    (["MODEL.PROMPTSG.TRAIN_PROMPT", "simplified", "MODEL.PROMPTSG.INFERENCE", "simplified",
      "MODEL.PROMPTSG.SUPCON.SCALE", "0.0"], {"loss_id", "loss_triplet"}, 64),
    (["MODEL.PROMPTSG.MIM.DEPTH", "0", "MODEL.PROMPTSG.MIM.KV", "all", "MODEL.PROMPTSG.MIM.TOKENS", "final",
      "MODEL.PROMPTSG.MIM.WIDTH", "16", "MODEL.PROMPTSG.TEST_FEAT", "cat", "MODEL.HEADS.NECK_FEAT", "after",
      "MODEL.PROMPTSG.MIM.QUERY_RESIDUAL", "False", "MODEL.PROMPTSG.INFERENCE", "simplified"],
     {"loss_id", "loss_triplet", "loss_i2t", "loss_t2i"}, 64 + 16),
])
def test_ablation_variants_train_and_infer(opts, keys, dim):
    model = _model(*opts)
    model.train()
    losses = model(_batch())
    assert set(losses) == keys
    sum(losses.values()).backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not unused
    model.eval()
    with torch.no_grad():
        assert model(_batch(3)).shape == (3, dim)


def test_resnet_backbone_uses_the_layer4_map():
    model = _model("MODEL.BACKBONE.CLIP_NAME", "RN-Tiny", "MODEL.BACKBONE.PRETRAIN", "False",
                   "MODEL.PROMPTSG.MIM.TOKENS", "final", "MODEL.PROMPTSG.MIM.KV", "all")
    model.train()
    feats = model.extract(_batch(4))
    assert model.key_values(feats).shape == (4, 1 + feats.tokens.shape[1], feats.final.shape[1])
    sum(model(_batch(4)).values()).backward()
    model.eval()
    with torch.no_grad():
        assert model(_batch(2)).shape == (2, 64)


@pytest.mark.parametrize("opts,message", [
    (["MODEL.PROMPTSG.INFERENCE", "fast"], "MODEL.PROMPTSG.INFERENCE = 'fast': expected one of composed, simplified"),
    (["MODEL.PROMPTSG.SUPCON.SIM", "l2"], "MODEL.PROMPTSG.SUPCON.SIM = 'l2': expected one of cosine, dot"),
    (["MODEL.PROMPTSG.SUPCON.TAU", "0.0"], "MODEL.PROMPTSG.SUPCON.TAU = 0.0: expected a temperature > 0"),
    (["MODEL.PROMPTSG.MIM.KV", "cls"], "MODEL.PROMPTSG.MIM.KV = 'cls': expected one of patches, all"),
    (["MODEL.PROMPTSG.TRAIN_PROMPT", "simplified"], "MODEL.PROMPTSG.SUPCON.SCALE = 0.5: expected 0 with TRAIN_PROMPT"),
    (["MODEL.PROMPTSG.TRAIN_PROMPT", "simplified", "MODEL.PROMPTSG.SUPCON.SCALE", "0.0"],
     "MODEL.PROMPTSG.INFERENCE = 'composed': expected 'simplified' with TRAIN_PROMPT simplified"),
    (["MODEL.PROMPTSG.MIM.ENABLED", "False"], "MODEL.LOSSES.TRI.FEATURES = 'mim': expected levels among"),
    (["MODEL.PROMPTSG.MIM.ENABLED", "False", "MODEL.PROMPTSG.SUPCON.SCALE", "0.0"],
     "MODEL.PROMPTSG.MIM.ENABLED = False: expected True, or a SupCon loss"),
    (["MODEL.LOSSES.TRI.FEATURES", '("z",)'], "MODEL.LOSSES.TRI.FEATURES = ('z',): expected levels among mim"),
    (["MODEL.BACKBONE.CLIP_NAME", "RN-Tiny", "MODEL.BACKBONE.PRETRAIN", "False"],
     "MODEL.PROMPTSG.MIM.TOKENS = 'proj': expected 'final' for a ModifiedResNet"),
    (["MODEL.PROMPTSG.MIM.HEADS", "6"], "MODEL.PROMPTSG.MIM.HEADS = 6: expected a divisor of the fusion width 64"),
])
def test_bad_config_values_name_the_key(opts, message):
    with pytest.raises(ConfigValueError) as info:
        _model(*opts)
    assert str(info.value).startswith(message), str(info.value)
    if "HEADS" not in message:  # the fusion width is only known once the text tower is built
        with pytest.raises(ConfigValueError) as info:
            PromptSG.check_config(_cfg(*opts))  # before any data or model (validate_train_config)
        assert str(info.value).startswith(message), str(info.value)


def test_shipped_promptsg_configs_pass_the_early_check():
    import glob
    import os

    from fastreid_clip.config import get_cfg, merge_config_file

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    paths = glob.glob(os.path.join(root, "configs/PromptSG/**/*.yml"), recursive=True) + [os.path.join(root, CONFIG)]
    assert len(paths) >= 15
    for path in paths:
        cfg = merge_config_file(get_cfg(), path)
        assert cfg.MODEL.META_ARCHITECTURE == "PromptSG"
        PromptSG.check_config(cfg)
        solver_stage(cfg)  # SOLVER.* incl. LR_FACTORS valid
