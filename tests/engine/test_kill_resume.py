"""A short two-stage run SIGKILLed mid-epoch, during a checkpoint write and during the final write, resumed each time
(``--resume`` semantics), ends with the same weights as an uninterrupted run; damaged files are named and skipped."""

import glob
import os
import subprocess
import sys

import pytest
import torch

from fastreid_clip.checkpoint import read_checkpoint

JOB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kill_job.py")


def _job(out, kill, resume, datasets_root, expect_killed):
    cmd = [sys.executable, JOB, str(out), kill] + (["--resume"] if resume else [])
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                         env={**os.environ, "FASTREID_DATASETS": datasets_root})
    log = run.stdout + run.stderr
    if expect_killed:
        assert run.returncode == -9, f"expected SIGKILL at {kill}, got rc {run.returncode}:\n{log[-3000:]}"
    else:
        assert run.returncode == 0, log[-3000:]
    return log


def _tag(out):
    with open(os.path.join(out, "last_checkpoint")) as f:
        return f.read().strip()


def _model(path):
    return read_checkpoint(str(path))["model"]


def _assert_same_weights(expected, got):
    assert expected.keys() == got.keys()
    different = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


@pytest.fixture(scope="module")
def reference(datasets_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    _job(out, "none", False, datasets_root, expect_killed=False)
    return out


def test_killed_three_times_and_resumed_gives_identical_weights(reference, datasets_root, tmp_path):
    out = str(tmp_path)
    # 1. killed mid-epoch: in the image stage's second epoch (7 iterations per epoch), after model_image_0001.pth
    _job(out, "step:image:10", False, datasets_root, expect_killed=True)
    assert _tag(out) == "model_image_0001.pth"
    # 2. resumed inside the image stage, killed half-way through writing the stage's final checkpoint
    log = _job(out, "save:model_image_final.pth", True, datasets_root, expect_killed=True)
    assert "Resuming from" in log and "model_image_0001.pth" in log and "epoch 2 of 3" in log
    assert _tag(out) == "model_image_0002.pth"  # the tag was never moved to the partial file
    assert not os.path.exists(os.path.join(out, "model_image_final.pth"))
    assert glob.glob(os.path.join(out, ".tmp-model_image_final.pth.*"))  # what the kill left behind
    # 3. resumed again (the last epoch redone), killed while writing model_final.pth
    log = _job(out, "save:model_final.pth", True, datasets_root, expect_killed=True)
    assert "partial checkpoint left by an interrupted run" in log and "epoch 3 of 3" in log
    assert _tag(out) == "model_image_final.pth" and not os.path.exists(os.path.join(out, "model_final.pth"))
    # 4. resumed once more: nothing left to train, but the final checkpoint is written
    log = _job(out, "none", True, datasets_root, expect_killed=False)
    assert "all 2 stages are already trained" in log and "writing it again" in log
    assert not glob.glob(os.path.join(out, ".tmp-*"))
    assert _tag(out) == "model_final.pth"
    _assert_same_weights(_model(os.path.join(reference, "model_final.pth")), _model(os.path.join(out, "model_final.pth")))

    # 5. a damaged file named by last_checkpoint (a 0-byte model_final.pth, as a non-atomic writer left it when
    # killed) is named in a warning, skipped, and the final checkpoint is repaired from the newest valid one
    open(os.path.join(out, "model_final.pth"), "wb").close()
    log = _job(out, "none", True, datasets_root, expect_killed=False)
    assert "Cannot resume from" in log and "model_final.pth' is empty (0 bytes)" in log
    assert "Falling back to" in log and "model_image_final.pth" in log
    _assert_same_weights(_model(os.path.join(reference, "model_final.pth")), _model(os.path.join(out, "model_final.pth")))


def test_every_checkpoint_of_a_run_verifies(reference):
    names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(reference, "*.pth")))
    assert names == ["model_final.pth", "model_image_0001.pth", "model_image_0002.pth", "model_image_final.pth",
                     "model_prompt_0001.pth", "model_prompt_final.pth"]  # 1-based epoch counts in the names
    for name in names:
        data = read_checkpoint(os.path.join(reference, name))  # checksum verified
        assert data["epochs_done"] == data["epoch"] + 1
    assert read_checkpoint(os.path.join(reference, "model_image_0002.pth"))["epochs_done"] == 2
