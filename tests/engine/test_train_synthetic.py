"""End to end on the synthetic data: training measurably improves mAP; checkpoints round-trip; eval-only works."""

import os
import subprocess
import sys

import pytest
import torch

from conftest import tiny_cfg
from fastreid_clip.checkpoint import load_model_weights
from fastreid_clip.engine import ClipTrainer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def trained(datasets_root, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("train"))
    # From random initialisation: what training alone adds (the shipped weights start far higher, see below).
    cfg = tiny_cfg(out, "SOLVER.MAX_EPOCH", "8", "SOLVER.STEPS", "[6]", "SOLVER.WARMUP_EPOCHS", "2",
                   "TEST.EVAL_PERIOD", "8", "TEST.EVAL_INIT", "True", "SOLVER.CHECKPOINT_PERIOD", "8",
                   "MODEL.BACKBONE.PRETRAIN", "False")
    cfg.freeze()
    torch.manual_seed(0)
    trainer = ClipTrainer(cfg)
    trainer.resume_or_load(resume=False)
    final = trainer.train()
    return cfg, trainer, trainer.init_eval_results, final


def test_training_improves_map(trained):
    _, trainer, before, after = trained
    print(f"synthetic tiny ViT baseline: mAP {before['mAP']:.1f} -> {after['mAP']:.1f}, "
          f"R1 {before['Rank-1']:.1f} -> {after['Rank-1']:.1f}")
    assert after["mAP"] > before["mAP"] + 10.0
    assert after["Rank-1"] > before["Rank-1"]


def test_shipped_synthetic_clip_starts_far_above_random_init(trained, tmp_path):
    """The demo config's own initialisation (the shipped synthetic CLIP) already ranks the unseen test identities
    well before any ReID training: its features know colours and clothes (docs/pretraining.md)."""
    _, _, random_before, random_after = trained
    cfg = tiny_cfg(str(tmp_path))
    assert cfg.MODEL.BACKBONE.PRETRAIN and cfg.MODEL.BACKBONE.PRETRAIN_PATH.endswith("ViT-Tiny-16-synthetic.safetensors")
    cfg.MODEL.HEADS.NUM_CLASSES = 32
    cfg.freeze()
    shipped_before = ClipTrainer.test(cfg, ClipTrainer.build_model(cfg).eval())
    print(f"before training: mAP {random_before['mAP']:.1f} (random init) vs {shipped_before['mAP']:.1f} (shipped); "
          f"random init after 8 epochs: {random_after['mAP']:.1f}")
    assert shipped_before["mAP"] > random_before["mAP"] + 30.0
    assert shipped_before["mAP"] > random_after["mAP"]


def test_num_classes_and_cameras_come_from_training_set(trained):
    cfg, trainer, _, _ = trained
    assert trainer.cfg.MODEL.HEADS.NUM_CLASSES == 32
    assert trainer.cfg.MODEL.BACKBONE.NUM_CAMERAS == 4
    head = trainer.model.head
    assert head.classifier.weight.shape == (32, 64) and head.classifier.bias is None
    assert not head.bn.bias.requires_grad


def test_checkpoint_round_trip_gives_identical_features(trained):
    cfg, trainer, _, _ = trained
    path = os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
    fresh = ClipTrainer.build_model(trainer.cfg)
    load_model_weights(fresh, path)
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], value), name
    batch = {"images": torch.rand(3, 3, 256, 128) * 255, "camids": torch.tensor([0, 1, 2])}
    fresh.eval()
    trainer.model.eval()
    with torch.no_grad():
        assert torch.equal(fresh(batch), trainer.model(batch))
    assert fresh(batch).shape == (3, 64 + 32)
    torch.testing.assert_close(fresh(batch).norm(dim=1), torch.ones(3))


def test_eval_only_command_line(trained, datasets_root):
    cfg, _, _, after = trained
    weights = os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
    from conftest import TINY_SYNTHETIC

    cmd = [sys.executable, os.path.join(ROOT, "tools/train_net.py"), "--config-file",
           os.path.join(ROOT, "configs/Synthetic/clip_baseline_vit_tiny.yml"), "--eval-only",
           *TINY_SYNTHETIC, "MODEL.WEIGHTS", weights, "OUTPUT_DIR", os.path.join(cfg.OUTPUT_DIR, "eval")]
    run = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "FASTREID_DATASETS": datasets_root},
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"{after['mAP']:.2f}" in run.stdout + run.stderr  # the same mAP as the in-process evaluation


def test_eval_only_rejects_checkpoint_for_other_model(trained, tmp_path):
    cfg, trainer, _, _ = trained
    state = {k: v for k, v in trainer.model.state_dict().items() if not k.startswith("head_proj")}
    torch.save({"model": state}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"partial.pth.*missing keys.*head_proj"):
        load_model_weights(ClipTrainer.build_model(trainer.cfg), str(tmp_path / "partial.pth"))


def test_corrupt_image_is_named(datasets_root, tmp_path):
    from fastreid_clip.data.build import ReIDImageDataset
    from fastreid_clip.data.transforms import build_clip_transforms

    bad = tmp_path / "0001_c1s1_000001_00.jpg"
    bad.write_bytes(b"not a jpeg")
    dataset = ReIDImageDataset([(str(bad), "x_1", "x_0")], build_clip_transforms(tiny_cfg(str(tmp_path)), False))
    with pytest.raises(RuntimeError, match="0001_c1s1_000001_00.jpg"):
        dataset[0]


def test_amp_training_step_on_cpu(datasets_root, tmp_path):
    cfg = tiny_cfg(str(tmp_path), "SOLVER.MAX_EPOCH", "1", "TEST.EVAL_PERIOD", "0", "SOLVER.AMP.ENABLED", "True")
    cfg.freeze()
    trainer = ClipTrainer(cfg)
    before = trainer.raw_model.backbone.visual.conv1.weight.detach().clone()
    trainer.train()
    from fastreid_clip.engine import AutocastTrainLoop

    assert isinstance(trainer._trainer, AutocastTrainLoop) and trainer._trainer.dtype == torch.bfloat16
    assert trainer._trainer.grad_scaler is None
    after = trainer.raw_model.backbone.visual.conv1.weight
    assert after.dtype == torch.float32 and not torch.equal(before, after)
    assert torch.isfinite(after).all()


def test_weights_of_another_architecture_fail_unless_partial(trained, tmp_path):
    """Before: FastReID's checkpointer logged one "Skip loading" line per parameter and training went on from random
    weights. Now MODEL.WEIGHTS must fit exactly, or MODEL.WEIGHTS_PARTIAL loads what fits and says so."""
    cfg, trained_trainer, _, _ = trained
    state = trained_trainer.model.state_dict()
    other_dataset = {k: (v[:20] if k.endswith("classifier.weight") else v) for k, v in state.items()}  # 20 ids
    torch.save({"model": other_dataset}, tmp_path / "other_dataset.pth")
    torch.save({"model": torch.nn.Linear(5, 3).state_dict()}, tmp_path / "foreign.pth")

    def trainer_with(weights, partial):
        run_cfg = tiny_cfg(str(tmp_path / f"run_{os.path.basename(weights)}_{partial}"), "MODEL.WEIGHTS", weights,
                           "MODEL.WEIGHTS_PARTIAL", str(partial))
        run_cfg.freeze()
        return ClipTrainer(run_cfg)

    with pytest.raises(ValueError, match=r"other_dataset.pth' \(MODEL.WEIGHTS\) does not fit.*2 shape mismatches"
                                         r".*MODEL.WEIGHTS_PARTIAL True"):
        trainer_with(str(tmp_path / "other_dataset.pth"), False).resume_or_load(resume=False)
    for partial in (False, True):
        with pytest.raises(ValueError, match=r"foreign.pth' \(MODEL.WEIGHTS\).*(does not fit|has no tensor that fits)"):
            trainer_with(str(tmp_path / "foreign.pth"), partial).resume_or_load(resume=False)

    trainer = trainer_with(str(tmp_path / "other_dataset.pth"), True)
    init_classifier = trainer.raw_model.head.classifier.weight.detach().clone()
    trainer.resume_or_load(resume=False)
    loaded = trainer.raw_model.state_dict()
    for key, value in state.items():
        if key.endswith("classifier.weight"):
            continue
        assert torch.equal(loaded[key], value), key
    assert torch.equal(loaded["head.classifier.weight"], init_classifier)  # kept its initialisation
