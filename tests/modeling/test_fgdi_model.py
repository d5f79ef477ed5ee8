"""ClipFGDI built alone (no data): stage losses, the prompt banks, identity domains and clear errors."""

import pytest
import torch
import torch.nn.functional as F
from fastreid.modeling.meta_arch import build_model

from conftest import tiny_cfg
from fastreid_clip.modeling.losses import apn_loss, cross_entropy_label_smooth

CONFIG = "configs/Synthetic/clip_fgdi_vit_tiny.yml"
NUM_IDS = 6


def _model(*opts):
    cfg = tiny_cfg("/tmp/unused", "MODEL.HEADS.NUM_CLASSES", str(NUM_IDS), "MODEL.BACKBONE.NUM_CAMERAS", "2", *opts,
                   config=CONFIG)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    model.set_identity_domains(torch.arange(NUM_IDS), torch.arange(NUM_IDS) % 3)
    return model


def _images(n=8):
    g = torch.Generator().manual_seed(5)
    targets = torch.tensor([0, 0, 1, 1, 4, 4, 5, 5])[:n]
    return {"images": torch.rand(n, 3, 256, 128, generator=g) * 255, "targets": targets,
            "camids": torch.zeros(n, dtype=torch.long), "domains": targets % 3}


def test_parts_and_stage_names():
    model = _model()
    assert model.domain_prompt.num_domains == 3 and model.domain_head.num_domains == 3
    assert model.domain_head.grl.strength == pytest.approx(0.1)
    assert type(model.monitor_head.grl).__name__ == "Identity"
    with pytest.raises(ValueError, match="STAGES.NAMES"):
        model.set_stage("prompt")


def test_prior_has_no_text_terms_and_image_stage_is_eq9():
    model = _model()
    model.set_stage("prior")
    assert sorted(model(_images())) == ["loss_id", "loss_triplet"]
    model.set_stage("image")
    model.on_stage_start("image")
    assert model.text_bank.shape == model.domain_bank.shape == (NUM_IDS, 32)
    batch = _images()
    torch.manual_seed(1)
    losses = model(batch)
    assert sorted(losses) == ["loss_apn", "loss_i2tce", "loss_id", "loss_triplet"]
    feats = model.extract(batch)  # eval-free recomputation of the same forward (same weights, same input)
    proj, y = feats.proj.float(), batch["targets"]
    i2tce = cross_entropy_label_smooth(proj @ model.text_bank.t(), y, 0.1)
    apn = apn_loss("code_cs_softplus", proj, y, model.text_bank[y], model.domain_bank[y])
    assert torch.allclose(losses["loss_i2tce"], 0.9 * i2tce, rtol=1e-5)
    assert torch.allclose(losses["loss_apn"], 0.1 * apn, rtol=1e-5)
    # the domain bank is each identity's own source token: recompute identity 4 (domain 1) alone
    alone = model.encode_domain_prompts(torch.tensor([4]), torch.tensor([1])).detach()
    assert torch.allclose(model.domain_bank[4:5], alone, atol=1e-5)


def test_apnce_replaces_both_text_terms_and_beta_zero_is_clip_reid():
    model = _model("MODEL.FGDI.APN.MODE", "apnce")
    model.set_stage("image")
    model.on_stage_start("image")
    assert sorted(model(_images())) == ["loss_apnce", "loss_id", "loss_triplet"]
    model = _model("MODEL.FGDI.BETA", "0.0")
    model.set_stage("image")
    model.on_stage_start("image")
    losses = model(_images())
    assert sorted(losses) == ["loss_i2tce", "loss_id", "loss_triplet"] and model.domain_bank.numel() == 0


def test_prompt_stage_losses():
    model = _model()
    g = torch.Generator().manual_seed(2)
    batch = {"features": torch.randn(8, 32, generator=g), "targets": torch.tensor([0, 0, 1, 2, 3, 3, 4, 5])}
    batch["domains"] = batch["targets"] % 3
    model.set_stage("id_prompt")
    losses = model(batch)
    assert sorted(losses) == ["loss_domain", "loss_i2t", "loss_t2i"]
    texts = model.encode_prompts(batch["targets"])  # per sample (the model encodes each identity once)
    expected = 0.01 * F.cross_entropy(model.domain_head(texts), batch["domains"])
    assert torch.allclose(losses["loss_domain"], expected, rtol=1e-4)
    model.set_stage("domain_prompt")
    losses = model(batch)
    assert sorted(losses) == ["loss_i2t_domain", "loss_monitor", "loss_t2i_domain"]
    sum(losses.values()).backward()
    assert model.prompt_learner.ctx.grad is None or model.prompt_learner.ctx.grad.abs().sum() == 0
    assert model.domain_prompt.ctx.grad.abs().sum() > 0


def test_errors_name_what_is_missing():
    model = _model()
    model.set_stage("id_prompt")
    with pytest.raises(ValueError, match="'domains'"):
        model({"features": torch.randn(4, 32), "targets": torch.tensor([0, 1, 2, 3])})
    with pytest.raises(ValueError, match="several source domains"):
        model.set_identity_domains(torch.tensor([0, 0]), torch.tensor([0, 1]))
    fresh = _model()
    fresh.identity_domains[2] = -1
    with pytest.raises(RuntimeError, match="no known source domain"):
        fresh.on_stage_start("image")
