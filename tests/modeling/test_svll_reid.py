"""SVLLReID: with lambda_lss = lambda_vss = 0 it is ClipReID (losses, gradients, inference); its heads train only
where they should; bad config values name their key."""

import os

import pytest
import torch

from conftest import tiny_cfg
from fastreid_clip.config import ConfigValueError

CONFIG = "configs/Synthetic/svll_reid_vit_tiny.yml"
BASE = ["MODEL.HEADS.NUM_CLASSES", "6", "MODEL.BACKBONE.NUM_CAMERAS", "2", "MODEL.BACKBONE.PRETRAIN", "False",
        "MODEL.BACKBONE.SIE_CAMERA", "True"]
ZERO = ["MODEL.SVLL.LSS.SCALE", "0.0", "MODEL.SVLL.VSS.SCALE", "0.0"]


def _build(*opts, arch=None, seed=0):
    from fastreid.modeling.meta_arch import build_model

    extra = ["MODEL.META_ARCHITECTURE", arch] if arch else []
    cfg = tiny_cfg("unused", *BASE, *opts, *extra, config=CONFIG)
    torch.manual_seed(seed)
    return build_model(cfg).train()


def _batch():
    g = torch.Generator().manual_seed(5)
    return {"images": torch.rand(8, 3, 256, 128, generator=g) * 255,
            "views": torch.rand(8, 2, 3, 256, 128, generator=g) * 255,
            "targets": torch.tensor([0, 0, 1, 1, 4, 4, 5, 5]), "camids": torch.tensor([0, 1, 0, 1, 1, 0, 0, 1])}


def _losses_and_grads(model, batch):
    for p in model.parameters():
        p.grad = None
    losses = model(batch)
    sum(losses.values()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in losses.items()}, grads


@pytest.fixture(scope="module")
def pair():
    """ClipReID and SVLLReID (both lambdas 0) built with the same seed from the same config."""
    clip, svll = _build(*ZERO, arch="ClipReID"), _build(*ZERO)
    return clip, svll


def test_same_seed_gives_the_same_shared_weights(pair):
    clip, svll = pair
    ours = svll.state_dict()
    assert sorted(k for k in ours if k not in clip.state_dict()) == sorted(
        k for k in ours if k.startswith(("text_mlp.", "image_mlp.")))
    for key, value in clip.state_dict().items():
        assert torch.equal(value, ours[key]), key
    assert not any(p.requires_grad for p in svll.text_mlp.parameters())  # off losses: heads frozen and unused
    assert not any(p.requires_grad for p in svll.image_mlp.parameters())


@pytest.mark.parametrize("stage", ["prompt", "image"])
def test_zero_lambdas_give_clip_reid_losses_and_gradients(pair, stage):
    clip, svll = pair
    if stage == "prompt":
        g = torch.Generator().manual_seed(1)
        batch = {"features": torch.randn(12, 32, generator=g), "targets": torch.randint(0, 6, (12,), generator=g)}
    else:
        batch = _batch()
    results = []
    for model in (clip, svll):
        model.set_stage(stage)
        model.on_stage_start(stage)
        results.append(_losses_and_grads(model, batch))
    (clip_losses, clip_grads), (svll_losses, svll_grads) = results
    assert clip_losses.keys() == svll_losses.keys()
    for key in clip_losses:
        torch.testing.assert_close(svll_losses[key], clip_losses[key], msg=key)
    assert clip_grads.keys() == svll_grads.keys() and clip_grads
    for name in clip_grads:
        torch.testing.assert_close(svll_grads[name], clip_grads[name], msg=name)
    if stage == "prompt":
        assert list(clip_grads) == ["prompt_learner.ctx"]


def test_inference_is_clip_reid_inference(pair):
    clip, svll = pair
    batch = _batch()
    clip.eval(), svll.eval()
    with torch.no_grad():
        torch.testing.assert_close(svll(batch), clip(batch))
    clip.train(), svll.train()


def test_nonzero_lambdas_add_one_loss_per_stage_and_train_the_image_head_only():
    model = _build()
    assert not any(p.requires_grad for p in model.text_mlp.parameters())  # LSS.TRAIN_HEAD False (reference)
    assert all(p.requires_grad for p in model.image_mlp.parameters())  # VSS.TRAIN_HEAD True (reference)
    model.set_stage("prompt")
    g = torch.Generator().manual_seed(2)
    losses, grads = _losses_and_grads(model, {"features": torch.randn(10, 32, generator=g),
                                              "targets": torch.tensor([0, 0, 1, 2, 2, 3, 3, 3, 5, 5])})
    assert sorted(losses) == ["loss_i2t", "loss_lss", "loss_t2i"] and list(grads) == ["prompt_learner.ctx"]
    assert losses["loss_lss"] > 0
    model.set_stage("image")
    model.on_stage_start("image")
    losses, grads = _losses_and_grads(model, _batch())
    assert sorted(losses) == ["loss_i2tce", "loss_id", "loss_triplet", "loss_vss"]
    assert any(n.startswith("image_mlp.") for n in grads) and not any(n.startswith("text_mlp.") for n in grads)
    with pytest.raises(ValueError, match="INPUT.VIEWS.NUM 2"):
        model({k: v for k, v in _batch().items() if k != "views"})
    trained = _build("MODEL.SVLL.LSS.TRAIN_HEAD", "True")
    assert all(p.requires_grad for p in trained.text_mlp.parameters())


@pytest.mark.parametrize("key,value,expected", [
    ("MODEL.SVLL.LSS.MASK", "row", "one of 'token', 'element'"),
    ("MODEL.SVLL.LSS.MASK_RATE", "1.0", "a masking proportion in [0, 1)"),
    ("MODEL.SVLL.LSS.SCALE", "-0.8", "a loss weight >= 0"),
    ("MODEL.SVLL.LSS.TEMPERATURE", "0.0", "a temperature > 0"),
    ("MODEL.SVLL.LSS.HEAD.HIDDEN_DIM", "0", "a positive layer width"),
    ("MODEL.SVLL.VSS.POSITIVES", "ids", "one of 'instance', 'identity'"),
    ("MODEL.SVLL.VSS.HEAD.INIT", "xavier", "one of 'default', 'kaiming'"),
    ("INPUT.VIEWS.NUM", "1", "2 when MODEL.SVLL.VSS.SCALE > 0"),
    ("INPUT.VIEWS.NUM", "-1", "an integer >= 0"),
    ("INPUT.VIEWS.REA.AREA", "(0.5, 0.2)", "(min, max) erased area fractions"),
    ("STAGES.IMAGE.TRAINABLE", '("backbone", "head", "head_proj")',
     "a list that includes 'image_mlp' when MODEL.SVLL.VSS.TRAIN_HEAD is True"),
])
def test_bad_values_name_the_key_before_any_data(tmp_path, monkeypatch, key, value, expected):
    from fastreid_clip.data.build import build_clip_train_set

    monkeypatch.setenv("FASTREID_DATASETS", str(tmp_path / "datasets"))
    cfg = tiny_cfg(str(tmp_path / "out"), key, value, config=CONFIG)
    with pytest.raises(ConfigValueError) as err:
        build_clip_train_set(cfg)  # ClipTrainer's first step: validate_train_config, then the data
    assert err.value.key == key and expected in str(err.value), str(err.value)
    assert not os.path.exists(tmp_path / "datasets")  # nothing generated


def test_text_head_switch_needs_the_prompt_stage_to_train_it(tmp_path, monkeypatch):
    from fastreid_clip.config.svll_reid import check_svll_config

    cfg = tiny_cfg(str(tmp_path), "MODEL.SVLL.LSS.TRAIN_HEAD", "True", "STAGES.PROMPT.TRAINABLE",
                   '("prompt_learner",)', config=CONFIG)
    with pytest.raises(ConfigValueError, match=r"STAGES.PROMPT.TRAINABLE = \('prompt_learner',\): expected a list "
                                               r"that includes 'text_mlp'"):
        check_svll_config(cfg)
    with pytest.raises(ConfigValueError, match="MODEL.SVLL.LSS.MASK = 'row'"):  # so does building the model
        _build("MODEL.SVLL.LSS.MASK", "row")


def _record_encoder_calls(model, monkeypatch):
    calls = []
    encode = model.text_encoder.encode_embeddings
    monkeypatch.setattr(model.text_encoder, "encode_embeddings",
                        lambda e, *a, **k: calls.append(len(e)) or encode(e, *a, **k))
    return calls


def test_prompt_stage_encodes_everything_in_one_call_without_changing_the_clip_reid_terms(pair, monkeypatch):
    clip, _ = pair
    g = torch.Generator().manual_seed(3)
    features, targets = torch.randn(12, 32, generator=g), torch.tensor([0, 0, 1, 1, 1, 2, 4, 4, 5, 5, 5, 5])
    clip.set_stage("prompt")
    reference = clip.prompt_losses(features, targets)
    results = {}
    for mask in ("element", "token"):  # rate 0: unmasked copies, so L_lss is deterministic
        svll = _build("MODEL.SVLL.LSS.MASK_RATE", "0.0", "MODEL.SVLL.LSS.MASK", mask)
        svll.set_stage("prompt")
        calls = _record_encoder_calls(svll, monkeypatch)
        results[mask] = svll.prompt_losses(features, targets)
        # 5 identities: their prompts and two copies of each in one call; token masking encodes each distinct
        # sequence once (here the copies equal the prompts)
        assert calls == ([3 * 5] if mask == "element" else [5])
        for key in ("loss_i2t", "loss_t2i"):  # other GEMM shapes than ClipReID's: compared with tolerances
            torch.testing.assert_close(results[mask][key], reference[key], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(results[mask]["loss_lss"], 0.8 * svll.language_ss_loss(targets), rtol=1e-5,
                                   atol=1e-5)
    torch.testing.assert_close(results["token"]["loss_lss"], results["element"]["loss_lss"], rtol=1e-5, atol=1e-5)


def test_token_masking_encodes_each_distinct_masked_prompt_once(monkeypatch):
    svll = _build()  # token masking, alpha 0.5: 6 patterns of 2 masked rows out of 4
    svll.set_stage("prompt")
    calls = _record_encoder_calls(svll, monkeypatch)
    torch.manual_seed(4)
    features, targets = torch.randn(60, 32), torch.arange(6).repeat(10)
    losses, grads = _losses_and_grads(svll, {"features": features, "targets": targets})
    assert len(calls) == 1 and 6 + 6 <= calls[0] <= 6 + 12  # prompts + distinct masked copies
    # the same draw without deduplication: rows of the encoded batch repeated as often as they are used
    from fastreid_clip.modeling.prompts.masking import token_mask

    torch.manual_seed(4)
    torch.randn(60, 32)
    keep = torch.ones(18, 12, 1)
    keep[6:] = token_mask(12, 12, svll.prompt_learner.ctx_rows, 0.5)
    labels = torch.cat([torch.arange(6)] * 3)
    assert calls[0] == 6 + len({(int(y), tuple(k[5:9, 0].tolist())) for y, k in zip(labels[6:], keep[6:])})
    svll.prompt_learner.ctx.grad = None
    prompts, eot = svll.prompt_learner(labels)
    feats = svll.text_encoder.encode_embeddings(prompts * keep, eot)
    expected = svll.supcon_prompt_losses(features, feats[:6][targets], targets)
    expected["loss_lss"] = 0.8 * svll._lss_from_features(feats[6:], 6)
    for key in losses:
        torch.testing.assert_close(losses[key], expected[key].detach(), rtol=1e-5, atol=1e-5)
    sum(expected.values()).backward()
    torch.testing.assert_close(grads["prompt_learner.ctx"], svll.prompt_learner.ctx.grad, rtol=1e-4, atol=1e-6)


def test_shipped_configs_have_the_paper_values():
    from fastreid_clip.config import get_cfg, merge_config_file

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for name in ("occduke", "duke", "msmt17", "market", "veri"):
        cfg = merge_config_file(get_cfg(), os.path.join(root, f"configs/SVLL-ReID/{name}_vit_sie_olp.yml"))
        svll = cfg.MODEL.SVLL
        assert cfg.MODEL.META_ARCHITECTURE == "SVLLReID" and svll.LSS.SCALE == svll.VSS.SCALE == 0.8
        assert (svll.LSS.MASK, svll.LSS.MASK_RATE, svll.LSS.TEMPERATURE, svll.LSS.TRAIN_HEAD) == ("token", 0.5, 0.1,
                                                                                                   False)
        assert (svll.VSS.POSITIVES, svll.VSS.TEMPERATURE, svll.VSS.TRAIN_HEAD) == ("instance", 0.1, True)
        assert (svll.VSS.HEAD.HIDDEN_DIM, svll.VSS.HEAD.OUT_DIM, svll.LSS.HEAD.HIDDEN_DIM) == (4096, 256, 4096)
        assert cfg.INPUT.VIEWS.NUM == 2 and tuple(cfg.INPUT.VIEWS.REA.AREA) == pytest.approx((0.33, 1 / 3))
        assert cfg.MODEL.BACKBONE.STRIDE_SIZE == (12, 12) and cfg.MODEL.BACKBONE.SIE_CAMERA
        assert cfg.STAGES.PROMPT.IMS_PER_BATCH == 64 and cfg.STAGES.IMAGE.IMS_PER_BATCH == 64
        assert (cfg.STAGES.PROMPT.EPOCHS, cfg.STAGES.IMAGE.EPOCHS, cfg.STAGES.IMAGE.BASE_LR) == (120, 60, 5e-6)
        assert cfg.MODEL.LOSSES.CE.SCALE == 0.25 and "image_mlp" in cfg.STAGES.IMAGE.TRAINABLE
    vehicle = merge_config_file(get_cfg(), os.path.join(root, "configs/SVLL-ReID/vehicleid_vit_olp.yml"))
    assert vehicle.MODEL.PROMPT.CLASS_WORD == "vehicle" and vehicle.INPUT.SIZE_TRAIN == [256, 256]
    assert not vehicle.MODEL.BACKBONE.SIE_CAMERA and vehicle.DATASETS.TESTS == ("SmallVehicleID",)
    tiny = merge_config_file(get_cfg(), os.path.join(root, CONFIG))
    clip = merge_config_file(get_cfg(), os.path.join(root, "configs/Synthetic/clip_reid_vit_tiny.yml"))
    assert (tiny.STAGES.IMAGE.EPOCHS, tiny.STAGES.IMAGE.IMS_PER_BATCH) == (clip.STAGES.IMAGE.EPOCHS,
                                                                           clip.STAGES.IMAGE.IMS_PER_BATCH) == (24, 32)
    assert tiny.MODEL.BACKBONE.PRETRAIN
    assert tiny.MODEL.BACKBONE.PRETRAIN_PATH.endswith("ViT-Tiny-16-synthetic.safetensors")
