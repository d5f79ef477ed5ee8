"""Two CPU processes (gloo) through FastReID's launch end with identical weights."""

import os
import subprocess
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def test_two_process_gloo_training_keeps_ranks_in_sync(datasets_root, tmp_path):
    run = subprocess.run([sys.executable, os.path.join(HERE, "ddp_job.py"), str(tmp_path)], capture_output=True,
                         text=True, timeout=600, env={**os.environ, "FASTREID_DATASETS": datasets_root})
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    rank0 = torch.load(tmp_path / "rank0.pt")
    rank1 = torch.load(tmp_path / "rank1.pt")
    assert rank0["world_size"] == rank1["world_size"] == 2
    assert rank0["iters"] == rank1["iters"] > 0
    assert rank0["params"].keys() == rank1["params"].keys()
    for name, value in rank0["params"].items():
        assert torch.equal(value, rank1["params"][name]), name
    # training moved every trainable parameter (the SIE table is off in this config)
    for name, value in rank0["initial"].items():
        assert torch.equal(value, rank1["initial"][name]), name  # rank 0's initialisation was broadcast
        assert not torch.equal(value, rank0["params"][name]), f"{name} did not train"
