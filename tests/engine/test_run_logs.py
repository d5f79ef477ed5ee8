"""What a user sees of a `tools/train_net.py` run: our log lines in the console and log.txt, one line per logged
iteration, the seed that was used, stage-tagged metrics.json, and --eval-only leaving the training run's files alone."""

import glob
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import TINY_SYNTHETIC

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs/Synthetic/clip_baseline_vit_tiny.yml")


def _train_net(datasets_root, *opts, eval_only=False):
    cmd = [sys.executable, os.path.join(ROOT, "tools/train_net.py"), "--config-file", CONFIG,
           *(["--eval-only"] if eval_only else []), *TINY_SYNTHETIC, *opts]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "FASTREID_DATASETS": datasets_root})


def _read(path):
    with open(path) as f:
        return f.read()


@pytest.fixture(scope="module")
def run(datasets_root, tiny_weights, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("logged_run"))
    weights, _ = tiny_weights["ViT-Tiny-16"]
    result = _train_net(datasets_root, "SOLVER.MAX_EPOCH", "2", "SOLVER.WARMUP_EPOCHS", "1", "SOLVER.STEPS", "[2]",
                        "SOLVER.LOG_PERIOD", "1", "TEST.EVAL_PERIOD", "2", "MODEL.BACKBONE.PRETRAIN", "True",
                        "MODEL.BACKBONE.PRETRAIN_PATH", weights, "OUTPUT_DIR", out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result.stdout + result.stderr, weights


def test_our_lines_reach_console_and_log_file(run):
    out, console, weights = run
    log = _read(os.path.join(out, "log.txt"))
    for text in (console, log):
        assert "fastreid_clip.engine.trainer" in text and "Stage 1/1 'train'" in text
        assert re.search(rf"Loaded CLIP weights for ViT-Tiny-16 from {re.escape(weights)}: \d+ tensors", text)
        assert "Saved checkpoint" in text and "model_final.pth" in text
        assert "No pretrained weights loaded" not in text  # open_clip's random-init line, wrong here


def test_seed_from_config_is_the_one_reported(run):
    _, console, _ = run
    assert "Using a generated random seed" not in console
    assert "Seeded python, numpy and torch with SEED 7 + rank 0" in console


def test_each_iteration_is_logged_once(run):
    out, _, _ = run
    lines = re.findall(r"epoch/iter: (\d+/\d+)", _read(os.path.join(out, "log.txt")))
    assert lines, "no training-progress lines in log.txt"
    assert len(lines) == len(set(lines)), f"repeated progress lines: {lines}"


def test_metrics_json_records_name_stage_and_epoch(run):
    out, _, _ = run
    with open(os.path.join(out, "metrics.json")) as f:
        records = [json.loads(line) for line in f if line.strip()]
    train = [r for r in records if "total_loss" in r]
    assert train and all(r["stage"] == "train" for r in train)
    assert sorted({r["epoch"] for r in train}) == [1, 2]  # 1-based
    assert len({r["iteration"] for r in train}) == len(train)


def test_eval_only_leaves_the_training_run_files_alone(run, datasets_root):
    out, _, _ = run
    before = {name: _read(os.path.join(out, name)) for name in ("config.yaml", "log.txt")}
    result = _train_net(datasets_root, "MODEL.WEIGHTS", os.path.join(out, "model_final.pth"),
                        "OUTPUT_DIR", out, eval_only=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| SyntheticReID" in result.stdout + result.stderr
    assert {name: _read(os.path.join(out, name)) for name in before} == before
    eval_dirs = glob.glob(os.path.join(out, "eval", "*"))
    assert len(eval_dirs) == 1
    assert os.path.isfile(os.path.join(eval_dirs[0], "config.yaml"))
    assert "Loaded" in _read(os.path.join(eval_dirs[0], "log.txt"))


def test_non_finite_loss_error_is_in_the_log_file(datasets_root, tmp_path):
    result = _train_net(datasets_root, "SOLVER.MAX_EPOCH", "1", "MODEL.LOSSES.CE.SCALE", "1e308",
                        "OUTPUT_DIR", str(tmp_path))
    assert result.returncode != 0
    log = _read(os.path.join(tmp_path, "log.txt"))
    assert "Loss became infinite or NaN at iteration=0" in log
    assert "Exception during training" in log
