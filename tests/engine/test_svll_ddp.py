"""SVLL-ReID under DDP (two CPU processes, gloo): with deterministic data both stages (masked prompts of the global
minibatch encoded in shards; stage 2's three image passes per sample, the views' features gathered so that the image
MLP and L_vss see the global batch) train the single-process model; the shipped tiny config keeps ranks in sync."""

import os
import subprocess
import sys

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


@pytest.fixture(scope="module")
def ddp_results(datasets_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("svll_ddp")
    run = subprocess.run([sys.executable, os.path.join(HERE, "svll_ddp_job.py"), str(out)], capture_output=True,
                         text=True, timeout=600,  # one thread per rank: the two ranks share the test machine's cores
                         env={**os.environ, "FASTREID_DATASETS": datasets_root, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    return {job: [torch.load(out / f"{job}_rank{r}.pt") for r in (0, 1)] for job in ("exact", "full")}


def test_two_processes_train_the_single_process_model(ddp_results, tmp_path):
    from svll_ddp_job import snapshot, train

    rank0, rank1 = ddp_results["exact"]
    assert rank0["world_size"] == 2
    trainer, initial = train(str(tmp_path), "exact")
    single = snapshot(trainer, initial)
    assert single["iters"] == rank0["iters"] > 0
    for name, value in single["initial"].items():  # rank 0's seed (SEED + 0) is the single process's
        assert torch.equal(value, rank0["initial"][name]), name
    assert single["params"].keys() == rank0["params"].keys()
    assert any(k.startswith("image_mlp.") for k in single["params"]) and "prompt_learner.ctx" in single["params"]
    # Not the same computation: half-batch products per rank and gloo's all-reduce order, over 2 prompt epochs (Adam)
    # and one image epoch (SGD). Tolerances as tests/engine/test_distributed.py; the weights moved by far more.
    for name, value in single["params"].items():
        torch.testing.assert_close(rank0["params"][name], value, rtol=1e-4, atol=1e-5, msg=name)
        torch.testing.assert_close(rank1["params"][name], value, rtol=1e-4, atol=1e-5, msg=name)
    moved = {n: (v - single["initial"][n]).abs().max().item() for n, v in single["params"].items()}
    # every stage-1 / stage-2 weight moved by more than 10x the tolerance (the linear biases before a BatchNorm have no
    # gradient; the ID classifiers only decay: weight 0)
    assert moved["prompt_learner.ctx"] > 1e-3
    trained = {n: v for n, v in moved.items() if n.startswith(("backbone.", "image_mlp."))
               and n not in ("image_mlp.mlp.0.bias", "image_mlp.mlp.3.bias")}
    assert min(trained.values()) > 1e-4, min(trained, key=trained.get)
    for name, value in single["mlp_buffers"].items():  # the image MLP's BatchNorm saw the global batch on each rank
        if value.is_floating_point():
            torch.testing.assert_close(rank0["mlp_buffers"][name], value, rtol=1e-4, atol=1e-5, msg=name)
        else:
            assert torch.equal(rank0["mlp_buffers"][name], value), name


def test_shipped_config_keeps_ranks_in_sync(ddp_results):
    rank0, rank1 = ddp_results["full"]
    assert rank0["iters"] == rank1["iters"] > 0
    for name, value in rank0["params"].items():
        assert torch.equal(value, rank1["params"][name]), name
        if not name.startswith("text_mlp."):  # the text MLP stays random (LSS.TRAIN_HEAD False)
            assert not torch.equal(value, rank0["initial"][name]), f"{name} did not train"
