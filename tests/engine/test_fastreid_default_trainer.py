"""FastReID's own, unmodified ``DefaultTrainer`` trains our single-stage configs after ``import fastreid_clip``.

The trainer here is ``fastreid.engine.DefaultTrainer`` itself (FastReID's loaders, transforms, sampler, optimizer,
hooks and ``ReidEvaluator``), not ``ClipTrainer``; see docs/architecture.md "Using FastReID's DefaultTrainer".
"""

import math
import os

import pytest
import torch
import torch.nn as nn

from conftest import tiny_cfg
from fastreid.engine import DefaultTrainer
from fastreid.engine.hooks import HookBase

from fastreid_clip.data.build import build_dataset
from fastreid_clip.engine.fastreid_trainer import build_clip_optimizer
from fastreid_clip.solver import CosineEpochLR, WarmupMultiStepEpochLR, cosine_epoch_lr, warmup_multistep_factor

# A smaller synthetic set than conftest's: 8 train ids x 2 cameras x 2 images = 32 images (2 iterations of 16 per
# epoch), 6 test ids (a gallery of 12: FastReID's evaluator reports Rank-10), at 128x64. Two epochs plus an
# evaluation take a few seconds on a CPU.
SMALL = [
    "DATASETS.SYNTHETIC.NUM_TRAIN_IDS", "8", "DATASETS.SYNTHETIC.NUM_TEST_IDS", "6",
    "DATASETS.SYNTHETIC.CAMERAS_PER_ID", "2", "DATASETS.SYNTHETIC.IMAGES_PER_ID_CAMERA", "2",
    "INPUT.SIZE_TRAIN", "[128, 64]", "INPUT.SIZE_TEST", "[128, 64]", "SOLVER.IMS_PER_BATCH", "16",
    "TEST.IMS_PER_BATCH", "32",
]
# Per-epoch schedule of the run: warm-up over 3 epochs from 0.1, x0.1 from epoch 2 (1-based) on.
SCHEDULE = ["SOLVER.MAX_EPOCH", "2", "SOLVER.WARMUP_EPOCHS", "3", "SOLVER.WARMUP_FACTOR", "0.1", "SOLVER.STEPS", "[2]",
            "SOLVER.GAMMA", "0.1", "TEST.EVAL_PERIOD", "2", "SOLVER.CHECKPOINT_PERIOD", "2"]


class RecordLR(HookBase):
    """``(epoch, [lr of every param group])`` at every training step."""

    def __init__(self):
        self.seen = []

    def before_step(self):
        self.seen.append((self.trainer.epoch, [g["lr"] for g in self.trainer.optimizer.param_groups]))


@pytest.fixture(scope="module")
def trained(datasets_root, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("fastreid_default_trainer"))
    cfg = tiny_cfg(out, *SMALL, *SCHEDULE)
    cfg.freeze()
    os.makedirs(out, exist_ok=True)  # FastReID's default_setup would create it
    torch.manual_seed(0)
    trainer = DefaultTrainer(cfg)
    record = RecordLR()
    trainer.register_hooks([record])
    before = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    results = trainer.train()
    return cfg, trainer, record, before, results


def test_it_is_fastreids_trainer(trained):
    _, trainer, _, _, _ = trained
    assert type(trainer) is DefaultTrainer and DefaultTrainer.__module__ == "fastreid.engine.defaults"
    assert type(trainer.model).__name__ == "ClipBaseline"


def test_dataset_honours_synthetic_config(trained, datasets_root):
    cfg, trainer, _, _, _ = trained
    train_set = trainer.data_loader.dataset
    assert trainer.cfg.MODEL.HEADS.NUM_CLASSES == 8 == train_set.num_classes  # DATASETS.SYNTHETIC.NUM_TRAIN_IDS
    assert len(train_set) == 8 * 2 * 2 and train_set.num_cameras <= 4
    assert trainer.iters_per_epoch == 2
    assert trainer.model.head.classifier.weight.shape == (8, 64)
    # under $FASTREID_DATASETS as set when the loader was built (FastReID itself reads it once, at import)
    assert all(path.startswith(datasets_root) for path, *_ in train_set.img_items)

    loader, num_query = DefaultTrainer.build_test_loader(cfg, "SyntheticReID")
    data = build_dataset(cfg, "SyntheticReID")
    assert num_query == len(data.query) and len(loader.dataset) == len(data.query) + len(data.gallery)
    assert len({pid for _, pid, _ in data.query + data.gallery}) == 6  # DATASETS.SYNTHETIC.NUM_TEST_IDS


def test_lr_follows_our_per_epoch_schedule(trained):
    cfg, trainer, record, _, _ = trained
    sched = trainer.scheduler
    assert set(sched) == {"lr_sched"} and isinstance(sched["lr_sched"], WarmupMultiStepEpochLR)
    assert len(record.seen) == 2 * trainer.iters_per_epoch
    base_lrs = sched["lr_sched"].base_lrs
    assert cfg.SOLVER.BASE_LR in base_lrs and cfg.SOLVER.BASE_LR * cfg.SOLVER.BIAS_LR_FACTOR in base_lrs
    for epoch, lrs in record.seen:
        factor = warmup_multistep_factor(epoch + 1, [2], 0.1, 0.1, 3)  # e1: 0.4, e2: 0.7 * 0.1
        assert lrs == pytest.approx([b * factor for b in base_lrs], rel=1e-9)
    assert [lrs[base_lrs.index(cfg.SOLVER.BASE_LR)] for _, lrs in record.seen] == pytest.approx(
        [3.5e-4 * 0.4] * 2 + [3.5e-4 * 0.07] * 2, rel=1e-9)
    assert sched["lr_sched"].last_epoch == 2  # stepped once per epoch by FastReID's LRScheduler hook


def test_weights_change(trained):
    _, trainer, _, before, _ = trained
    after = trainer.model.state_dict()
    for name in ("backbone.visual.conv1.weight", "head.classifier.weight", "head_proj.bn.weight"):
        assert torch.isfinite(after[name]).all() and not torch.equal(before[name], after[name]), name
    assert torch.equal(before["head.bn.bias"], after["head.bn.bias"])  # the BN-neck bias stays frozen


def test_evaluator_produced_metrics(trained):
    cfg, _, _, _, results = trained
    assert {"Rank-1", "Rank-5", "mAP", "mINP"} <= set(results)
    for key in ("mAP", "mINP"):
        assert 0.0 < float(results[key]) <= 100.0 and math.isfinite(float(results[key])), key
    assert 0.0 <= float(results["Rank-1"]) <= float(results["Rank-5"]) <= 100.0
    state = torch.load(os.path.join(cfg.OUTPUT_DIR, "model_final.pth"), map_location="cpu", weights_only=False)
    assert state["lr_sched"]["last_epoch"] == 2 and "optimizer" in state


def test_fastreid_build_lr_scheduler_builds_epoch_schedules():
    from fastreid.solver import build_lr_scheduler
    import fastreid.solver.lr_scheduler as fastreid_lr_scheduler
    from fastreid_clip.config import get_cfg

    assert fastreid_lr_scheduler.WarmupMultiStepEpochLR is WarmupMultiStepEpochLR
    assert fastreid_lr_scheduler.CosineEpochLR is CosineEpochLR
    cfg = get_cfg()
    cfg.SOLVER.merge_from_list(["SCHED", "CosineEpochLR", "MAX_EPOCH", 10, "WARMUP_EPOCHS", 2, "WARMUP_ITERS", 0,
                                "ETA_MIN_LR", 1e-6, "BASE_LR", 1e-3])
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = build_lr_scheduler(cfg, optimizer, 5)
    assert set(sched) == {"lr_sched"} and isinstance(sched["lr_sched"], CosineEpochLR)
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()  # (no gradients: a no-op) the order torch expects, as in training
        sched["lr_sched"].step()
    assert lrs == pytest.approx([cosine_epoch_lr(e, 1e-3, 10, 2, 1e-5, 1e-6) for e in range(1, 11)], rel=1e-9)

    cfg.SOLVER.WARMUP_ITERS = 100  # FastReID's per-iteration warm-up would multiply into the per-epoch one
    with pytest.raises(ValueError, match="WARMUP_ITERS 0"):
        build_lr_scheduler(cfg, optimizer, 5)
    cfg.SOLVER.SCHED = "WarmupMultiStepLR"  # CLIP-ReID's name for it
    with pytest.raises(ValueError, match="WarmupMultiStepEpochLR"):
        build_lr_scheduler(cfg, optimizer, 5)
    cfg.SOLVER.SCHED = "MultiStepLR"  # FastReID's own schedulers are unchanged
    sched = build_lr_scheduler(cfg, optimizer, 5)
    assert isinstance(sched["lr_sched"], torch.optim.lr_scheduler.MultiStepLR) and "warmup_sched" in sched


def test_fastreid_build_optimizer_updates_weights():
    """compat: FastReID's contiguous parameter buffers lost their gradients to torch 2's ``zero_grad()``."""
    from fastreid.config import get_cfg
    from fastreid.solver import build_optimizer

    cfg = get_cfg()
    cfg.SOLVER.merge_from_list(["OPT", "SGD", "MOMENTUM", 0.0, "BASE_LR", 0.1, "WEIGHT_DECAY", 0.0,
                                "WEIGHT_DECAY_NORM", 0.0, "WEIGHT_DECAY_BIAS", 0.0])
    model = nn.Linear(3, 2)
    start = model.weight.detach().clone()
    optimizer, params = build_optimizer(cfg, model)
    for _ in range(2):  # SimpleTrainer's step
        loss = model(torch.ones(1, 3)).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        params.assert_buffer_is_valid()
    torch.testing.assert_close(model.weight, start - 2 * 0.1 * torch.ones(2, 3))  # d loss / d w = 1, each step


def test_fastreid_build_optimizer_refuses_lr_factors_it_would_ignore():
    from fastreid.solver import build_optimizer

    from fastreid_clip.config import ConfigValueError, get_cfg

    cfg = get_cfg()
    cfg.SOLVER.LR_FACTORS = [["1", 10.0]]
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2))
    with pytest.raises(ConfigValueError, match=r"SOLVER.LR_FACTORS = \[\['1', 10.0\]\].*build_clip_optimizer"):
        build_optimizer(cfg, model)
    optimizer, _ = build_clip_optimizer(cfg, model)  # ours applies them
    lrs = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert lrs[id(model[1].weight)] == pytest.approx(10 * lrs[id(model[0].weight)])


def test_build_clip_optimizer_uses_clipreid_groups():
    from fastreid_clip.config import get_cfg

    cfg = get_cfg()
    cfg.SOLVER.merge_from_list(["OPT", "Adam", "BASE_LR", 1e-4, "BIAS_LR_FACTOR", 2.0, "WEIGHT_DECAY", 1e-4,
                                "WEIGHT_DECAY_BIAS", 0.0])
    model = nn.Module()
    model.attn = nn.MultiheadAttention(8, 2)
    optimizer, wrapper = build_clip_optimizer(cfg, model)
    assert wrapper is None and isinstance(optimizer, torch.optim.Adam)
    lr_of = {id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    assert lr_of[id(model.attn.in_proj_bias)] == (2e-4, 0.0)  # "substring": FastReID's rule gives it 1e-4
    assert lr_of[id(model.attn.out_proj.bias)] == (2e-4, 0.0)
    assert lr_of[id(model.attn.in_proj_weight)] == (1e-4, 1e-4)


@pytest.fixture
def two_stage_cfg(tmp_path, monkeypatch):
    empty_root = tmp_path / "datasets"
    empty_root.mkdir()
    monkeypatch.setenv("FASTREID_DATASETS", str(empty_root))
    cfg = tiny_cfg(str(tmp_path / "out"), config="configs/Synthetic/clip_reid_vit_tiny.yml")
    assert tuple(cfg.STAGES.NAMES) == ("prompt", "image")
    return cfg, empty_root


def test_multi_stage_config_names_clip_trainer(two_stage_cfg):
    cfg, empty_root = two_stage_cfg
    message = r"ClipReID trains in stages.*fastreid_clip\.engine\.ClipTrainer.*tools/train_net\.py"

    class MyTrainer(DefaultTrainer):  # a user's subclass with its own scheduler goes through __init__ too
        @classmethod
        def build_lr_scheduler(cls, cfg, optimizer, iters_per_epoch):
            return {"lr_sched": torch.optim.lr_scheduler.StepLR(optimizer, 1)}

    for trainer_cls in (DefaultTrainer, MyTrainer):
        with pytest.raises(ValueError, match=message):
            trainer_cls(cfg)
    assert list(empty_root.iterdir()) == []  # raised before any data was generated

    from fastreid.solver import build_lr_scheduler, build_optimizer

    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match=r"build_optimizer: .*ClipTrainer"):
        build_optimizer(cfg, model)
    with pytest.raises(ValueError, match=r"build_lr_scheduler: .*ClipTrainer"):
        build_lr_scheduler(cfg, torch.optim.SGD(model.parameters(), lr=0.1), 1)


def test_sample_field_meta_arch_names_clip_trainer(tmp_path, monkeypatch):
    """CLIP-SCGI is single-stage but needs caption embeddings per sample, which FastReID's loader does not deliver."""
    empty_root = tmp_path / "datasets"
    empty_root.mkdir()
    monkeypatch.setenv("FASTREID_DATASETS", str(empty_root))
    cfg = tiny_cfg(str(tmp_path / "out"), config="configs/Synthetic/clip_scgi_vit_tiny.yml")
    assert not tuple(cfg.STAGES.NAMES)  # single-stage: the stage check alone would let it through
    with pytest.raises(ValueError, match=r"DefaultTrainer: MODEL.META_ARCHITECTURE ClipSCGI needs per-sample.*"
                                         r"ClipTrainer.*tools/train_net\.py"):
        DefaultTrainer(cfg)
    assert list(empty_root.iterdir()) == []  # raised before any data was generated
