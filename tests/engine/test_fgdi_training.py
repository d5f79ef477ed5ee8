"""CLIP-FGDI's four stages on the tiny synthetic config: what trains in each, the image stage continuing prior's
optimizer and schedule (STAGES.IMAGE.SHARE_OPTIMIZER_WITH), and exact resume inside every stage."""

import os

import pytest
import torch

from conftest import killed_after_epoch, train_tiny
from fastreid_clip.checkpoint import read_checkpoint

CONFIG = "configs/Synthetic/clip_fgdi_vit_tiny.yml"
STAGES = ("prior", "id_prompt", "domain_prompt", "image")
SHORT = ["DATASETS.SYNTHETIC.IMAGES_PER_ID_CAMERA", "2", "STAGES.PRIOR.STEPS", "[3]", "STAGES.PRIOR.WARMUP_EPOCHS", "1",
         "STAGES.ID_PROMPT.WARMUP_EPOCHS", "1", "STAGES.DOMAIN_PROMPT.WARMUP_EPOCHS", "1",
         "STAGES.IMAGE.EVAL_PERIOD", "0"]
for _stage in STAGES:
    SHORT += [f"STAGES.{_stage.upper()}.EPOCHS", "2", f"STAGES.{_stage.upper()}.CHECKPOINT_PERIOD", "1"]


def _train(out, *opts, resume=False):
    return train_tiny(out, *SHORT, *opts, config=CONFIG, resume=resume)


def _ckpt(out, name):
    return read_checkpoint(os.path.join(out, name))


def _changed(before, after):
    return sorted(k for k in before if not torch.equal(before[k], after[k]))


@pytest.fixture(scope="module")
def uninterrupted(datasets_root, tmp_path_factory):
    import fastreid_clip.engine.trainer as trainer_module

    out = str(tmp_path_factory.mktemp("fgdi_uninterrupted"))
    cache_calls = []
    real_cache = trainer_module.cache_train_features

    def counting_cache(*args, **kwargs):
        cache_calls.append(1)
        return real_cache(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer_module, "cache_train_features", counting_cache)
        trainer = _train(out)
    trainer.cache_calls = len(cache_calls)
    return out, trainer


def test_prompt_stages_share_one_feature_cache(uninterrupted):
    """id_prompt and domain_prompt are consecutive features stages: the training set is encoded once."""
    _, trainer = uninterrupted
    assert trainer.cache_calls == 1


def test_training_set_has_three_sources_with_domain_labels(uninterrupted):
    _, trainer = uninterrupted
    train_set = trainer.train_set
    domains = train_set.sample_fields["domains"]
    assert sorted(set(domains.tolist())) == [0, 1, 2]
    # every identity comes from one source, and the model recorded it
    model_domains = trainer.raw_model.identity_domains
    labels = torch.tensor([train_set.pid_dict[item[1]] for item in train_set.img_items])
    assert torch.equal(model_domains[labels], domains)
    assert all(item[1].startswith(f"synthetic_d{d}_") for item, d in zip(train_set.img_items, domains.tolist()))


def test_each_stage_trains_only_its_parts(uninterrupted):
    out, _ = uninterrupted
    states = [_ckpt(out, f"model_{s}_final.pth")["model"] for s in STAGES]
    prior, id_prompt, domain_prompt, image = states
    changed = _changed(prior, id_prompt)
    assert "prompt_learner.ctx" in changed and "domain_head.fc1.weight" in changed
    assert all(k == "prompt_learner.ctx" or k.startswith("domain_head.") for k in changed), changed
    changed = _changed(id_prompt, domain_prompt)
    assert "domain_prompt.ctx" in changed and "monitor_head.fc2.weight" in changed
    assert all(k == "domain_prompt.ctx" or k.startswith("monitor_head.") for k in changed), changed
    changed = _changed(domain_prompt, image)
    assert "backbone.visual.conv1.weight" in changed and "head_proj.classifier.weight" in changed
    assert all(k.startswith(("backbone.", "head.", "head_proj.")) for k in changed), changed


def test_image_stage_continues_prior_optimizer_and_schedule(uninterrupted):
    out, _ = uninterrupted
    prior = _ckpt(out, "model_prior_final.pth")
    first = _ckpt(out, "model_image_0001.pth")
    assert prior["lr_sched"]["last_epoch"] == 2 and first["lr_sched"]["last_epoch"] == 3
    prior_steps = {int(v["step"]) for v in prior["optimizer"]["state"].values()}
    image_steps = {int(v["step"]) for v in first["optimizer"]["state"].values()}
    assert len(prior_steps) == 1 and len(image_steps) == 1
    per_epoch = prior_steps.pop() // 2
    assert image_steps.pop() == 3 * per_epoch  # Adam's step count runs on: 2 prior epochs + 1 image epoch
    # the lr of the image stage's first epoch is the shared schedule's epoch 2 (prior trained epochs 0 and 1)
    base = prior["optimizer"]["param_groups"][0]["initial_lr"]
    assert first["optimizer"]["param_groups"][0]["lr"] == pytest.approx(base * 0.1 ** 1)  # past STEPS [3]


@pytest.mark.parametrize("kill_stage", STAGES)
def test_resume_inside_every_stage_gives_identical_weights(uninterrupted, tmp_path, monkeypatch, kill_stage):
    out, _ = uninterrupted
    with killed_after_epoch(monkeypatch, kill_stage, 0):
        _train(str(tmp_path))
    with open(tmp_path / "last_checkpoint") as f:
        assert f.read().strip() == f"model_{kill_stage}_0001.pth"
    _train(str(tmp_path), resume=True)
    expected = _ckpt(out, "model_final.pth")["model"]
    got = _ckpt(str(tmp_path), "model_final.pth")["model"]
    assert expected.keys() == got.keys()
    assert _changed(expected, got) == []
