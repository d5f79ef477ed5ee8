"""CLIP-SCGI's caption-embedding cache sharded over 2 gloo processes gives every rank the per-image embeddings of
the single-process cache, in the training items' order."""

import os

import torch

from conftest import run_rank_job

JOB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "caption_cache_ddp_job.py")


def test_sharded_caption_cache_equals_single_process(datasets_root, tmp_path):
    rank0, rank1 = run_rank_job(JOB, tmp_path / "ddp", 2, datasets_root)
    (single,) = run_rank_job(JOB, tmp_path / "single", 1, datasets_root)
    assert rank0["world_size"] == rank1["world_size"] == 2 and single["world_size"] == 1
    # each rank encoded its own, uneven, contiguous shard of the 31 distinct captions
    (n, _, _, shard0), (_, _, _, shard1) = rank0["shards"][0], rank1["shards"][0]
    assert n == 31 and shard0 == list(range(16)) and shard1 == list(range(16, 31))
    assert single["shards"][0][3] == list(range(31))
    embeds = single["embeds"]
    assert embeds.shape[0] == len(single["paths"]) > n and embeds.dtype == torch.float32
    for rank in (rank0, rank1):
        assert rank["paths"] == single["paths"]  # the same items in the same order
        # The shards' encoder batches (3 captions, padded to the batch's longest) differ from the single process's:
        # equal up to float rounding, not bitwise. Measured on the 2-core CPU: at most 7.2e-7 apart for entries up
        # to 3.2; a shard gathered in the wrong order or a missing rank moves whole rows.
        torch.testing.assert_close(rank["embeds"], embeds, rtol=1e-5, atol=1e-6)
    assert torch.equal(rank0["embeds"], rank1["embeds"])  # every rank holds the same gathered table
    assert len({tuple(row.tolist()) for row in embeds}) == n  # one embedding per caption: rows are not all alike
