"""Staged training (CLIP-ReID): what trains in which stage, and exact resume inside the right stage."""

import os

import pytest
import torch

from conftest import TWO_STAGE_CONFIG, TWO_STAGE_SHORT, killed_after_epoch, tiny_cfg, train_tiny
from fastreid_clip.checkpoint import read_checkpoint
from fastreid_clip.engine import ClipTrainer

CONFIG = TWO_STAGE_CONFIG
SHORT = TWO_STAGE_SHORT


def _train(out, *opts, resume=False):
    return train_tiny(out, *SHORT, *opts, config=CONFIG, resume=resume)


def _state(path):
    return read_checkpoint(str(path))["model"]


@pytest.fixture(scope="module")
def uninterrupted(datasets_root, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("uninterrupted"))
    _train(out)
    return out


def test_stage1_trains_only_prompt_tokens(datasets_root, tmp_path):
    trainer = ClipTrainer(_frozen_cfg(str(tmp_path), "STAGES.NAMES", '("prompt",)'))
    before = {k: v.clone() for k, v in trainer.raw_model.state_dict().items()}
    trainer.train()
    after = trainer.raw_model.state_dict()
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert changed == ["prompt_learner.ctx"]


def test_stage2_keeps_prompts_and_text_encoder(uninterrupted):
    prompt = _state(os.path.join(uninterrupted, "model_prompt_final.pth"))
    final = _state(os.path.join(uninterrupted, "model_final.pth"))
    for key, value in prompt.items():
        if key.startswith(("prompt_learner.", "text_encoder.")):
            assert torch.equal(value, final[key]), key
    assert not torch.equal(prompt["backbone.visual.conv1.weight"], final["backbone.visual.conv1.weight"])
    assert not torch.equal(prompt["head_proj.classifier.weight"], final["head_proj.classifier.weight"])
    assert "text_encoder.token_embedding.weight" not in final  # the reference layout: no token embedding


def _frozen_cfg(out, *opts):
    cfg = tiny_cfg(out, *SHORT, *opts, config=CONFIG)
    cfg.freeze()
    return cfg


@pytest.mark.parametrize("kill_stage,kill_epoch", [("prompt", 1), ("image", 1)])
def test_resume_gives_identical_weights(uninterrupted, tmp_path, monkeypatch, kill_stage, kill_epoch):
    with killed_after_epoch(monkeypatch, kill_stage, kill_epoch):
        _train(str(tmp_path))
    with open(tmp_path / "last_checkpoint") as f:
        assert f.read().strip() == (f"model_{kill_stage}_final.pth" if kill_stage == "prompt"
                                    else f"model_{kill_stage}_{kill_epoch + 1:04d}.pth")  # 1-based names
    resumed = _train(str(tmp_path), resume=True)
    assert resumed.stages[resumed.stage_index].name == "image"
    expected = _state(os.path.join(uninterrupted, "model_final.pth"))
    got = _state(os.path.join(tmp_path, "model_final.pth"))
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


def test_eval_only_loads_any_stage_checkpoint(uninterrupted):
    from fastreid_clip.checkpoint import load_model_weights

    cfg = _frozen_cfg(uninterrupted)
    cfg.defrost()
    cfg.MODEL.HEADS.NUM_CLASSES = 32
    cfg.MODEL.BACKBONE.NUM_CAMERAS = 4
    for name in ("model_prompt_final.pth", "model_image_0001.pth", "model_final.pth"):
        model = ClipTrainer.build_model(cfg)
        load_model_weights(model, os.path.join(uninterrupted, name))
        model.eval()
        with torch.no_grad():
            out = model({"images": torch.rand(2, 3, 256, 128) * 255, "camids": torch.tensor([0, 1])})
        assert out.shape == (2, 96)


def _to_reference_layout(key):
    """Our key -> the key Syliz517/CLIP-ReID's released checkpoints use (written independently of the converter)."""
    exact = {"head.classifier.weight": "classifier.weight", "head_proj.classifier.weight": "classifier_proj.weight",
             "prompt_learner.ctx": "prompt_learner.cls_ctx", "backbone.sie_embed": "cv_embed"}
    if key in exact:
        return exact[key]
    for ours, theirs in (("backbone.visual.", "image_encoder."), ("head_proj.bn.", "bottleneck_proj."),
                         ("head.bn.", "bottleneck.")):
        if key.startswith(ours):
            return theirs + key[len(ours):]
    return key  # text_encoder.*, prompt_learner.token_prefix/suffix


def _eval_only(weights, out, datasets_root):
    import subprocess
    import sys

    from conftest import TINY_SYNTHETIC

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cmd = [sys.executable, os.path.join(root, "tools/train_net.py"), "--config-file", os.path.join(root, CONFIG),
           "--eval-only", *TINY_SYNTHETIC, "MODEL.WEIGHTS", weights, "OUTPUT_DIR", out]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "FASTREID_DATASETS": datasets_root})
    assert run.returncode == 0, run.stderr[-3000:]
    table = [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("| SyntheticReID")]
    assert table, run.stdout[-2000:]
    return table[-1]


def test_converted_reference_checkpoint_evaluates_like_ours(uninterrupted, datasets_root, tmp_path):
    import subprocess
    import sys

    from conftest import TINY_SYNTHETIC

    ours = _state(os.path.join(uninterrupted, "model_final.pth"))
    released = {"module." + _to_reference_layout(k): v for k, v in ours.items()}
    torch.save(released, tmp_path / "clipreid_release.pth")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    convert = subprocess.run([sys.executable, os.path.join(root, "tools/convert_clipreid.py"),
                              str(tmp_path / "clipreid_release.pth"), str(tmp_path / "converted.pth"),
                              "--config-file", os.path.join(root, CONFIG), *TINY_SYNTHETIC],
                             capture_output=True, text=True, timeout=300)
    assert convert.returncode == 0, convert.stderr[-3000:]
    converted = _state(tmp_path / "converted.pth")
    assert converted.keys() == ours.keys()
    expected = _eval_only(os.path.join(uninterrupted, "model_final.pth"), str(tmp_path / "ours"), datasets_root)
    got = _eval_only(str(tmp_path / "converted.pth"), str(tmp_path / "converted"), datasets_root)
    assert got == expected  # identical Rank-1/5/10, mAP, mINP
