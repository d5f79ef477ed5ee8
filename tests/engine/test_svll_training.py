"""The tiny synthetic SVLL-ReID config trains both stages (shortened): stage 1 moves only the prompt tokens (the
text MLP stays random), stage 2 the image encoder, heads and image MLP; the model evaluates."""

import os

import torch

from conftest import tiny_cfg
from fastreid_clip.checkpoint import read_checkpoint
from fastreid_clip.engine import ClipTrainer

CONFIG = "configs/Synthetic/svll_reid_vit_tiny.yml"
SHORT = ["STAGES.PROMPT.EPOCHS", "1", "STAGES.PROMPT.WARMUP_EPOCHS", "0", "STAGES.IMAGE.EPOCHS", "1",
         "STAGES.IMAGE.WARMUP_EPOCHS", "0", "STAGES.IMAGE.STEPS", "[]", "STAGES.IMAGE.EVAL_PERIOD", "1"]


def test_tiny_config_trains_both_stages(datasets_root, tmp_path):
    cfg = tiny_cfg(str(tmp_path), *SHORT, config=CONFIG)
    cfg.freeze()
    trainer = ClipTrainer(cfg)
    assert [s.name for s in trainer.stages] == ["prompt", "image"]
    assert trainer.train_set.num_views == 2  # INPUT.VIEWS.NUM 2: the image stage's batches carry two views
    initial = {k: v.clone() for k, v in trainer.raw_model.state_dict().items()}
    trainer.resume_or_load(resume=False)
    results = trainer.train()
    prompt = read_checkpoint(os.path.join(tmp_path, "model_prompt_final.pth"))["model"]
    final = read_checkpoint(os.path.join(tmp_path, "model_final.pth"))["model"]

    def changed(state, reference):
        return {k for k in reference if reference[k].is_floating_point() and not torch.equal(reference[k], state[k])}

    stage1 = changed(prompt, initial)
    assert "prompt_learner.ctx" in stage1
    assert all(k == "prompt_learner.ctx" or k.endswith(("running_mean", "running_var")) for k in stage1), stage1
    assert not any(k.startswith("text_mlp.") and not k.endswith(("running_mean", "running_var")) for k in stage1)
    stage2 = changed(final, prompt)
    assert {"backbone.visual.conv1.weight", "head_proj.classifier.weight", "image_mlp.mlp.0.weight"} <= stage2
    assert not any(k.startswith(("prompt_learner.", "text_encoder.", "text_mlp.")) for k in stage2), stage2
    assert 0 < results["mAP"] <= 100 and 0 < results["Rank-1"] <= 100 and 0 < results["mINP"] <= 100
