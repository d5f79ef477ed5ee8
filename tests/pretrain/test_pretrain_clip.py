"""Contrastive CLIP pretraining (fastreid_clip.pretrain, tools/pretrain_clip.py) on a small stand-in corpus."""

import os
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from fastreid_clip.config import get_cfg
from fastreid_clip.data.synthetic import caption, domain_style, render_image, sample_camera_style, sample_identities
from fastreid_clip.modeling.backbones import build_clip_towers
from fastreid_clip.pretrain import (ClipPair, PretrainConfig, ResumeMismatch, ZeroShotAttribute, attribute_accuracy,
                                    caption_recall, create_pretrain_model, encode_corpus, evaluate_zero_shot,
                                    load_pretrained, output_paths, pretrain, write_outputs)
from fastreid_clip.pretrain.optim import CosineWarmup, decay_split
from fastreid_clip.pretrain.sampler import DistinctIdentityBatches, RandomBatches

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class StandInCorpus(Dataset):
    """The corpus item format: {"image": PIL RGB, "caption", "identity", "attributes"}, small renders."""

    def __init__(self, num_identities=32, images_per_identity=2, seed=5, height=64, width=32):
        self.people = sample_identities(num_identities, seed)
        self.k, self.seed = images_per_identity, seed
        self.domain = domain_style(0, 1)
        self.cameras = [sample_camera_style(np.random.default_rng([seed, c]), self.domain, height, width)
                        for c in range(2)]

    def __len__(self):
        return len(self.people) * self.k

    def __getitem__(self, index):
        identity, shot = divmod(index, self.k)
        rng = np.random.default_rng([self.seed, 9, identity, shot])
        image = render_image(self.people[identity], self.domain, self.cameras[shot % 2], rng)
        return {"image": image, "caption": caption(self.people[identity]), "identity": identity,
                "attributes": self.people[identity]}


GENDER = ZeroShotAttribute("gender", ("man", "woman"), ("a photo of a man", "a photo of a woman"),
                           lambda a: ("man", "woman").index(a.gender))


@pytest.fixture(scope="module")
def corpus():
    return encode_corpus(StandInCorpus(), "ViT-Tiny-16", 64)


def _config(**kw):
    base = dict(arch="ViT-Tiny-16", image_size=64, steps=20, batch_size=16, lr=2e-3, warmup_steps=2,
                checkpoint_period=100, seed=3)
    base.update(kw)
    return PretrainConfig(**base)


def test_encoded_corpus(corpus):
    assert corpus.images.shape == (64, 3, 64, 64) and corpus.images.dtype == torch.uint8
    assert corpus.tokens.shape == (64, 77) and corpus.num_identities == 32
    assert corpus.identities.tolist() == [i // 2 for i in range(64)]


def test_twenty_steps_lower_the_contrastive_loss(corpus, tmp_path):
    # batches of all 32 identities; measured: first 4 steps 3.55, last 4 about 2.5, chance log(32) = 3.47 (a
    # collapsed model, all embeddings equal, sits at chance)
    result = pretrain(_config(batch_size=32, warmup_steps=5), corpus, str(tmp_path), progress=False)
    first, last = np.mean(result.losses[:4]), np.mean(result.losses[-4:])
    assert len(result.losses) == 20 and last < first - 0.5 and last < np.log(32) - 0.5, (first, last)
    assert os.path.isfile(tmp_path / "checkpoints" / "step_00000020.pth")  # the final checkpoint


class Killed(RuntimeError):
    pass


def test_killed_and_resumed_run_equals_uninterrupted(corpus, tmp_path):
    config = _config(steps=7, batch_size=8, checkpoint_period=2)
    full = pretrain(config, corpus, str(tmp_path / "full"), progress=False)

    def kill_after_step_4(step, loss):
        if step == 4:  # steps 0..4 done, last checkpoint at step 4 (= 4 steps), step 4 is lost
            raise Killed()

    with pytest.raises(Killed):
        pretrain(_config(steps=7, batch_size=8, checkpoint_period=2), corpus, str(tmp_path / "cut"),
                 on_step=kill_after_step_4, progress=False)
    resumed = pretrain(_config(steps=7, batch_size=8, checkpoint_period=2), corpus, str(tmp_path / "cut"),
                       resume=True, progress=False)
    assert resumed.resumed_from == 4
    assert resumed.losses == full.losses
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ResumeMismatch, match="lr"):  # other settings refuse to resume
        pretrain(_config(steps=7, batch_size=8, checkpoint_period=2, lr=1e-3), corpus, str(tmp_path / "cut"),
                 resume=True, progress=False)


def test_damaged_newest_checkpoint_falls_back(corpus, tmp_path):
    config = _config(steps=4, batch_size=8, checkpoint_period=2)
    pretrain(config, corpus, str(tmp_path), progress=False)
    newest = tmp_path / "checkpoints" / "step_00000004.pth"
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated
    resumed = pretrain(config, corpus, str(tmp_path), resume=True, progress=False)
    assert resumed.resumed_from == 2


def reid_towers(arch, weights):
    """``build_clip_towers`` at the ReID size 256x128 from a weight file (keys and shapes checked)."""
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.CLIP_NAME = arch
    cfg.MODEL.BACKBONE.PRETRAIN = True
    cfg.MODEL.BACKBONE.PRETRAIN_PATH = weights
    cfg.INPUT.SIZE_TRAIN = [256, 128]
    cfg.INPUT.SIZE_TEST = [256, 128]
    return build_clip_towers(cfg)


@pytest.mark.parametrize("arch", ["ViT-Tiny-16", "RN-Tiny"])
def test_written_safetensors_load_through_build_clip_towers(arch, tmp_path):
    model = create_pretrain_model(arch, 64, seed=1)
    with torch.no_grad():
        model.logit_scale.fill_(2.5)
    paths = write_outputs(model, arch, 64, str(tmp_path), f"{arch}-synthetic", {"arch": arch})
    assert all(os.path.isfile(p) for p in paths.values()) and paths == output_paths(str(tmp_path), f"{arch}-synthetic")
    from safetensors.torch import load_file

    saved = load_file(paths["weights"])
    import open_clip

    assert set(saved) == set(open_clip.create_model(arch, pretrained=None).state_dict())  # open_clip's layout
    assert all(v.dtype == torch.float32 for v in saved.values() if v.is_floating_point())

    towers = reid_towers(arch, paths["weights"])  # checks every key and shape against the architecture
    assert torch.equal(towers.text.token_embedding.weight, model.token_embedding.weight)
    visual = towers.image.visual
    if arch.startswith("ViT"):
        assert torch.equal(visual.conv1.weight, model.visual.conv1.weight)
        assert visual.positional_embedding.shape[0] == 1 + 16 * 8  # 4x4 square grid -> 16x8
        assert torch.equal(visual.positional_embedding[0], model.visual.positional_embedding[0])
    else:
        assert torch.equal(visual.layer4[0].conv1.weight, model.visual.layer4[0].conv1.weight)
        assert visual.attnpool.positional_embedding.shape[0] == 1 + 16 * 8  # 2x2 grid -> 16x8 (last stride 1)
    with torch.no_grad():
        feats = towers.image.eval()(torch.randn(2, 3, 256, 128))
    assert feats.proj.shape == (2, 32) and torch.isfinite(feats.proj).all()

    loaded, loaded_arch, size = load_pretrained(paths["weights"])
    assert (loaded_arch, size) == (arch, 64)
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())


def test_attribute_accuracy_on_a_known_case():
    classes = torch.eye(3)
    labels = torch.tensor([0, 0, 0, 1, 2, 2])
    images = classes[labels].clone()
    images[5] = classes[0] * 2  # one wrong, and scale does not matter (cosine)
    r = attribute_accuracy(images, classes, labels)
    assert r["accuracy"] == pytest.approx(5 / 6)
    assert r["chance_uniform"] == pytest.approx(1 / 3) and r["chance_majority"] == pytest.approx(3 / 6)
    assert r["num_classes"] == 3 and r["num_images"] == 6


def test_caption_recall_counts_same_identity_hits():
    e = torch.eye(4)
    image_ids = torch.tensor([0, 0, 1, 2])
    caption_ids = torch.tensor([0, 0, 1, 2])
    # image 0 is closest to caption 1 (its identity's other caption): a hit for R@1, not for own_R@1
    images = torch.stack([e[1], e[1], e[2], e[0] * 0.9 + e[3] * 0.1])
    captions = torch.stack([e[0], e[1], e[2], e[3]])
    r = caption_recall(images, captions, image_ids, caption_ids, own_caption=torch.arange(4), ks=(1, 2))
    # image 3 (identity 2) scores caption 0 (identity 0) above its own caption 3: rank 2
    assert r["R@1"] == pytest.approx(3 / 4) and r["R@2"] == pytest.approx(1.0)
    assert r["own_R@1"] == pytest.approx(2 / 4)  # images 1 and 2 retrieve their own caption
    assert r["num_captions"] == 4 and r["chance_R@1"] == pytest.approx((2 / 4 * 2 + 1 / 4 * 2) / 4)


def test_evaluate_zero_shot_runs_on_the_stand_in(corpus):
    pair = ClipPair(create_pretrain_model("ViT-Tiny-16", 64, seed=0), "ViT-Tiny-16")
    report = evaluate_zero_shot(pair, corpus, {"gender": GENDER}, "ViT-Tiny-16")
    g = report["attributes"]["gender"]
    assert 0 <= g["accuracy"] <= 1 and g["chance_uniform"] == 0.5 and g["num_images"] == 64
    assert report["retrieval"]["num_captions"] == 64 and 0 <= report["retrieval"]["R@5"] <= 1


def test_distinct_identity_batches():
    identities = torch.arange(10).repeat_interleave(3)[:-1]  # 10 identities, the last with 2 images
    plan = DistinctIdentityBatches(identities, batch_size=4, seed=1)
    assert plan.batches_per_epoch == 3 * 3
    seen = []
    for step in range(plan.batches_per_epoch):
        batch = plan.batch(step)
        assert len(set(identities[batch].tolist())) == 4  # one image per identity
        seen += batch.tolist()
    assert set(seen) == set(range(len(identities)))  # every image in an epoch
    again = DistinctIdentityBatches(identities, batch_size=4, seed=1)
    assert all(torch.equal(again.batch(s), plan.batch(s)) for s in (13, 2, 40))  # a function of (seed, step)
    assert not torch.equal(DistinctIdentityBatches(identities, 4, seed=2).batch(0), plan.batch(0))
    with pytest.raises(ValueError, match="identities"):
        DistinctIdentityBatches(identities, batch_size=11, seed=0)
    assert RandomBatches(29, 4, 0).batches_per_epoch == 7


def test_weight_decay_rule_and_schedule():
    model = create_pretrain_model("ViT-Tiny-16", 64, seed=0)
    split = decay_split(model)
    no_decay = set(split["no_decay"])
    for name in ("logit_scale", "token_embedding.weight", "positional_embedding", "visual.class_embedding",
                 "visual.positional_embedding", "visual.ln_pre.weight", "ln_final.weight",
                 "visual.transformer.resblocks.0.attn.in_proj_bias"):
        assert name in no_decay, name
    for name in ("visual.conv1.weight", "visual.proj", "text_projection",
                 "transformer.resblocks.0.mlp.c_fc.weight", "visual.transformer.resblocks.0.attn.in_proj_weight"):
        assert name in split["decay"], name
    rn = decay_split(create_pretrain_model("RN-Tiny", 64, seed=0))
    assert "visual.bn1.weight" in rn["no_decay"] and "visual.conv1.weight" in rn["decay"]
    s = CosineWarmup(1.0, total=10, warmup=2, min_lr=0.1)
    assert [round(s.lr(t), 6) for t in (0, 1, 2)] == [0.5, 1.0, 1.0] and s.lr(10) == pytest.approx(0.1)


def test_cli_errors_name_the_problem(tmp_path, capsys):
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import pretrain_clip

    with pytest.raises(SystemExit) as exit_info:
        pretrain_clip.main(["--arch", "ViT-Nope", "--out", str(tmp_path)])
    assert exit_info.value.code == 2 and "unknown open_clip architecture 'ViT-Nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        pretrain_clip.main(["--arch", "RN-Tiny", "--image-size", "100", "--out", str(tmp_path)])
    assert "multiple of 32" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit):
        pretrain_clip.main(["--out", str(tmp_path / "file")])
    assert "is not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        pretrain_clip.main(["--eval-only", str(tmp_path / "missing.safetensors")])
    assert "no such file" in capsys.readouterr().err


@pytest.mark.parametrize("arch", ["ViT-Tiny-16", "RN-Tiny"])
def test_float16_file_loads_into_a_float32_model(arch, tmp_path):
    """--save-dtype float16 halves the file; the ReID loader reads it into float32 parameters (the position
    table too), equal to the float32 values rounded to float16."""
    model = create_pretrain_model(arch, 64, seed=2)
    paths = write_outputs(model, arch, 64, str(tmp_path), f"{arch}-synthetic", {"arch": arch}, torch.float16)
    from safetensors.torch import load_file

    assert all(v.dtype == torch.float16 for v in load_file(paths["weights"]).values() if v.is_floating_point())
    towers = reid_towers(arch, paths["weights"])
    assert all(p.dtype == torch.float32 for p in towers.image.parameters())
    assert all(p.dtype == torch.float32 for p in towers.text.parameters())
    assert torch.equal(towers.text.token_embedding.weight, model.token_embedding.weight.half().float())
    table = towers.image.visual.positional_embedding if arch.startswith("ViT") else \
        towers.image.visual.attnpool.positional_embedding
    assert table.dtype == torch.float32
    reloaded, _, _ = load_pretrained(paths["weights"])
    assert all(p.dtype == torch.float32 for p in reloaded.parameters())
