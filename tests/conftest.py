"""Shared fixtures: tiny CLIP weight files and configs. ``import fastreid_clip`` precedes every fastreid import."""

import contextlib
import os

import fastreid_clip  # noqa: F401
import pytest
import torch

from fastreid_clip.modeling.backbones import register_model_configs


def pytest_configure(config):
    config.addinivalue_line("markers", "large: ViT-B/16 / RN50-sized checks (minutes on a CPU); run with -m large")


def pytest_collection_modifyitems(config, items):
    if config.getoption("-m"):
        return
    skip_large = pytest.mark.skip(reason="large model test: run `make test-large` (pytest -m large)")
    for item in items:
        if "large" in item.keywords:
            item.add_marker(skip_large)


def save_random_clip(arch: str, path: str, seed: int = 0, fmt: str = "bin") -> torch.nn.Module:
    """Create an open_clip model with random weights, save its state dict as ``fmt`` and return the model."""
    import open_clip

    register_model_configs()
    torch.manual_seed(seed)
    model = open_clip.create_model(arch, pretrained=None, force_quick_gelu=True).eval()
    state = model.state_dict()
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, path)
    elif fmt == "ddp":
        torch.save({"state_dict": {"module." + k: v for k, v in state.items()}, "epoch": 3}, path)
    else:
        torch.save(state, path)
    return model


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    """``{arch: (path, open_clip model)}`` for the tiny ViT and ResNet."""
    root = tmp_path_factory.mktemp("weights")
    return {arch: (str(root / f"{arch}.bin"), save_random_clip(arch, str(root / f"{arch}.bin"), seed=i))
            for i, arch in enumerate(["ViT-Tiny-16", "RN-Tiny"])}


@pytest.fixture(scope="session")
def datasets_root(tmp_path_factory):
    """A FASTREID_DATASETS root shared by the tests (the synthetic data is generated there once)."""
    root = tmp_path_factory.mktemp("datasets")
    old = os.environ.get("FASTREID_DATASETS")
    os.environ["FASTREID_DATASETS"] = str(root)
    yield str(root)
    if old is None:
        os.environ.pop("FASTREID_DATASETS", None)
    else:
        os.environ["FASTREID_DATASETS"] = old


TINY_SYNTHETIC = [
    "DATASETS.SYNTHETIC.NUM_TRAIN_IDS", "32", "DATASETS.SYNTHETIC.NUM_TEST_IDS", "16",
    "DATASETS.SYNTHETIC.NUM_CAMERAS", "4", "DATASETS.SYNTHETIC.CAMERAS_PER_ID", "3",
    "DATASETS.SYNTHETIC.IMAGES_PER_ID_CAMERA", "3", "DATALOADER.NUM_WORKERS", "0",
    "TEST.EVAL_INIT", "False", "TEST.RANK_VIS.ENABLED", "False", "SEED", "7",
]


def tiny_cfg(output_dir: str, *opts: str, config: str = "configs/Synthetic/clip_baseline_vit_tiny.yml"):
    """The demo config shrunk for tests (32 train ids), writing to ``output_dir``; ``opts`` override it."""
    from fastreid_clip.config import get_cfg, merge_config_file

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return merge_config_file(get_cfg(), os.path.join(root, config),
                             TINY_SYNTHETIC + ["OUTPUT_DIR", output_dir] + list(opts))


def train_tiny(output_dir: str, *opts: str, config: str, resume: bool = False):
    """Train :func:`tiny_cfg` ``(output_dir, *opts, config=config)`` with ``ClipTrainer`` (``--resume`` when
    ``resume``) and return the trainer."""
    from fastreid_clip.engine import ClipTrainer

    cfg = tiny_cfg(output_dir, *opts, config=config)
    cfg.freeze()
    trainer = ClipTrainer(cfg)
    trainer.resume_or_load(resume=resume)
    trainer.train()
    return trainer


class Killed(Exception):
    """Stops a training run inside :func:`killed_after_epoch`, as a kill would."""


@contextlib.contextmanager
def killed_after_epoch(monkeypatch, stage: str, epoch: int):
    """A training run inside the block stops right after stage ``stage``'s 0-based epoch ``epoch`` is checkpointed
    (the block must end in that kill)."""
    from fastreid_clip.engine import StageCheckpointer

    original = StageCheckpointer.after_epoch

    def after_epoch_then_kill(self):
        original(self)
        if self.stage.name == stage and self.trainer.epoch == epoch:
            raise Killed()

    monkeypatch.setattr(StageCheckpointer, "after_epoch", after_epoch_then_kill)
    try:
        with pytest.raises(Killed):
            yield
    finally:
        monkeypatch.setattr(StageCheckpointer, "after_epoch", original)


# CLIP-ReID's two stages shrunk for tests: 2 prompt epochs, 3 image epochs, a checkpoint after every epoch.
TWO_STAGE_CONFIG = "configs/Synthetic/clip_reid_vit_tiny.yml"
TWO_STAGE_SHORT = [
    "STAGES.PROMPT.EPOCHS", "2", "STAGES.IMAGE.EPOCHS", "3", "STAGES.IMAGE.STEPS", "[2]",
    "STAGES.IMAGE.WARMUP_EPOCHS", "1", "STAGES.IMAGE.EVAL_PERIOD", "0", "STAGES.IMAGE.CHECKPOINT_PERIOD", "1",
    "STAGES.PROMPT.CHECKPOINT_PERIOD", "1", "STAGES.PROMPT.IMS_PER_BATCH", "16",
]


def reload_final_checkpoint(trainer):
    """``(fresh, trained)`` eval-mode models: a model built as ``--eval-only`` builds it (no CLIP weight file, a
    different random init) with ``OUTPUT_DIR/model_final.pth`` loaded, and the trainer's own model."""
    import os

    from fastreid_clip.checkpoint import load_model_weights
    from fastreid_clip.engine import ClipTrainer

    cfg = trainer.cfg.clone()
    cfg.defrost()
    cfg.MODEL.BACKBONE.PRETRAIN = False  # as --eval-only: every weight and prompt row from the checkpoint
    torch.manual_seed(123)
    fresh = ClipTrainer.build_model(cfg)
    load_model_weights(fresh, os.path.join(cfg.OUTPUT_DIR, "model_final.pth"))
    return fresh.eval(), trainer.raw_model.eval()


def run_rank_job(job: str, out, world: int, datasets_root: str):
    """Run ``python <job> <out> <world>`` (a script that trains or caches with ``world`` gloo processes and saves
    ``<out>/rank<r>.pt`` per rank) and return the per-rank results; a failing job fails the test with its output."""
    import subprocess
    import sys

    out.mkdir()
    run = subprocess.run([sys.executable, job, str(out), str(world)], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "FASTREID_DATASETS": datasets_root})
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    return [torch.load(out / f"rank{r}.pt") for r in range(world)]
