"""Helpers of the inference tests: a trained-like run folder per tiny synthetic config (every one in
``configs/Synthetic/``, so every meta-architecture with a tiny config is covered, including ones added later)."""

from __future__ import annotations

import atexit
import glob
import importlib.util
import os
import shutil
import tempfile
from typing import Dict, List, Tuple

import torch
from fastreid.modeling.meta_arch import META_ARCH_REGISTRY, build_model

from conftest import tiny_cfg

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NUM_TRAIN_IDS = 32  # conftest.TINY_SYNTHETIC
NUM_TEST_IDS = 6  # 6 test identities x 3 cameras x 3 images: 54 query + gallery images (conftest: 16)


def synthetic_configs() -> List[str]:
    """Every tiny config (repository-relative paths), sorted."""
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "configs/Synthetic/*.yml")))


def config_id(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def inference_modes(config: str) -> List[Tuple[str, List[str]]]:
    """``[(mode name, overrides)]`` of the config's meta-architecture (``INFERENCE_MODE_OVERRIDES``), or the default."""
    cfg = tiny_cfg("unused", config=config)
    cls = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)
    modes = getattr(cls, "INFERENCE_MODE_OVERRIDES", None)
    return sorted(modes.items()) if modes else [("default", [])]


def make_run(config: str, out: str, *opts: str, seed: int = 0) -> Tuple[str, str]:
    """A training run's folder as ``tools/train_net.py`` leaves it (``config.yaml`` + ``model_final.pth``), holding
    a freshly built model (shipped synthetic CLIP + random new modules). Returns ``(run dir, checkpoint path)``."""
    os.makedirs(out, exist_ok=True)
    cfg = tiny_cfg(out, "MODEL.HEADS.NUM_CLASSES", str(NUM_TRAIN_IDS), "DATASETS.SYNTHETIC.NUM_TEST_IDS",
                   str(NUM_TEST_IDS), *opts, config=os.path.join(ROOT, config))
    if cfg.MODEL.BACKBONE.SIE_CAMERA and cfg.MODEL.BACKBONE.NUM_CAMERAS == 0:
        cfg.MODEL.BACKBONE.NUM_CAMERAS = cfg.DATASETS.SYNTHETIC.NUM_CAMERAS
    torch.manual_seed(seed)
    model = build_model(cfg)
    with torch.no_grad():  # move BN statistics away from identity so that a missed BN would show
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    path = os.path.join(out, "model_final.pth")
    torch.save({"model": model.state_dict(), "stage": "image", "epoch": 0}, path)
    cfg.MODEL.HEADS.NUM_CLASSES = 0  # as a real run's config.yaml may: the count comes from the checkpoint
    with open(os.path.join(out, "config.yaml"), "w") as f:
        f.write(cfg.dump())
    return out, path


_RUNS: Dict[tuple, Tuple[str, str]] = {}
_RUN_ROOT: List[str] = []


def cached_run(config: str, *opts: str) -> Tuple[str, str]:
    """:func:`make_run` once per ``(config, opts)`` for the whole session (tests must not modify the folder)."""
    key = (config, *opts)
    if key not in _RUNS:
        if not _RUN_ROOT:
            _RUN_ROOT.append(tempfile.mkdtemp(prefix="inference_runs_"))
            atexit.register(shutil.rmtree, _RUN_ROOT[0], True)
        _RUNS[key] = make_run(config, os.path.join(_RUN_ROOT[0], str(len(_RUNS))), *opts)
    return _RUNS[key]


def cfg_has_key(cfg, key: str) -> bool:
    node = cfg
    for part in key.split("."):
        if part not in node:
            return False
        node = node[part]
    return True


def load_tool(name: str):
    """``tools/<name>.py`` as a module."""
    spec = importlib.util.spec_from_file_location(f"tool_{name}", os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
