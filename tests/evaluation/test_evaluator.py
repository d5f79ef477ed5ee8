"""ChunkedReidEvaluator end to end (inference_on_dataset, flip test, AQE, re-ranking) and across 2 gloo processes."""

import json
import socket

import fastreid_clip  # noqa: F401  (before fastreid)
import fastreid.evaluation.rank as fastreid_rank
import fastreid.evaluation.reid_evaluation as fastreid_reid_evaluation
import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from fastreid.config import get_cfg
from fastreid.evaluation import ReidEvaluator, inference_on_dataset
from fastreid.utils import compute_dist

from fastreid_clip.evaluation import (
    ChunkedReidEvaluator,
    RowStore,
    add_eval_config,
    gather_to_main,
    inference_shard_sizes,
)
from fastreid_clip.evaluation import evaluator as evaluator_module
from fastreid_reference import JACCARD_ULPS, distance_magnitude, metric_ulps, record_ranked_distances
from numeric import EPS32, assert_within, dot_ulps, ulp

pytestmark = pytest.mark.filterwarnings("ignore:This overload of addmm_ is deprecated")

NUM_QUERY = 40


def tiny_test_set(num=151, num_ids=12, seed=0):
    """Images ``[N, 3, 4, 6]`` around one template per identity, identities and cameras."""
    generator = torch.Generator().manual_seed(seed)
    pids = torch.randint(0, num_ids, (num,), generator=generator)
    camids = torch.randint(0, 3, (num,), generator=generator)
    templates = torch.randn(num_ids, 3, 4, 6, generator=generator)
    return templates[pids] + 0.9 * torch.randn(num, 3, 4, 6, generator=generator), pids, camids


class TinyModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3 * 4 * 6, 16)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(16, 72, generator=torch.Generator().manual_seed(1)))
            self.proj.bias.zero_()

    def forward(self, batched_inputs):
        return self.proj(batched_inputs["images"].flatten(1))


class InMemoryLoader:
    """Batches of dicts, fresh each pass (``inference_on_dataset`` overwrites ``images`` when flipping)."""

    def __init__(self, images, pids, camids, batch_size=16):
        self.dataset = range(len(images))
        self._data = (images, pids, camids)
        self._batch_size = batch_size

    def __len__(self):
        return -(-len(self.dataset) // self._batch_size)

    def __iter__(self):
        images, pids, camids = self._data
        for start in range(0, len(images), self._batch_size):
            batch = slice(start, start + self._batch_size)
            yield {"images": images[batch].clone(), "targets": pids[batch], "camids": camids[batch]}


def fastreid_jaccard_on_cpu(monkeypatch):
    """FastReID's re-ranking searches neighbours on CUDA (search_option=0); use its CPU faiss option instead."""
    original = compute_dist.compute_jaccard_distance

    def on_cpu(features, k1=20, k2=6, search_option=0, fp16=False):
        return original(features, k1=k1, k2=k2, search_option=3, fp16=fp16)

    monkeypatch.setattr(compute_dist, "compute_jaccard_distance", on_cpu)


def run_fastreid_evaluator(monkeypatch, cfg, model, data, flip, distances=None):
    """FastReID's ``ReidEvaluator`` on the test set; with ``distances``, its ranking is given those instead.

    Returns:
        Its results, and the features (after AQE) and distance matrix it computed.
    """
    seen = {}
    original_rank, original_build = fastreid_rank.evaluate_rank, fastreid_reid_evaluation.build_dist

    def evaluate_rank(distmat, *args, **kwargs):
        seen["distances"] = np.asarray(distmat)
        return original_rank(distmat if distances is None else distances, *args, **kwargs)

    def build_dist(feat_1, feat_2, metric="euclidean", **kwargs):
        if metric != "jaccard":
            seen["features"] = (feat_1, feat_2)
        return original_build(feat_1, feat_2, metric, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(fastreid_rank, "evaluate_rank", evaluate_rank)
        patch.setattr(fastreid_reid_evaluation, "build_dist", build_dist)
        results = inference_on_dataset(model, InMemoryLoader(*data), ReidEvaluator(cfg, NUM_QUERY), flip_test=flip)
    return results, seen


def distance_tolerance(cfg, query, gallery, distances):
    """How far our evaluator's distances may be from FastReID's: see test_matches_fastreid_reid_evaluator."""
    # A 16-term product of magnitude |q|^2 + |g|^2 (1 for cosine); AQE features within 32 ulps of the largest
    # (test_average_query_expansion_matches_fastreid) move it by 2 x 32 ulps more.
    ulps = dot_ulps(query.shape[1]) + (64 if cfg.TEST.AQE.ENABLED else 0)
    tolerance = ulps * ulp(distance_magnitude(query, gallery, cfg.TEST.METRIC))
    if cfg.TEST.RERANK.ENABLED:  # (1 - lambda) * jaccard (JACCARD_ULPS of 1.0) + lambda * original, and its rounding
        lam = cfg.TEST.RERANK.LAMBDA
        tolerance = (1 - lam) * JACCARD_ULPS * EPS32 + lam * tolerance + 2 * ulp(distances)
    return tolerance


def percent_tolerances(pids, camids):
    """Tolerances of FastReID's reported values (float32 metrics x 100) against ours, in percent."""
    ulps = metric_ulps(pids[:NUM_QUERY], pids[NUM_QUERY:], camids[:NUM_QUERY], camids[NUM_QUERY:])
    per_key = {"Rank-1": ulps["cmc"], "Rank-5": ulps["cmc"], "Rank-10": ulps["cmc"], "mAP": ulps["mAP"],
               "mINP": ulps["mINP"], "metric": (ulps["mAP"] + ulps["cmc"]) / 2}
    # ulps of 1.0 scaled to percent, plus the float32 rounding of the product by 100 (and of the sum in "metric")
    return {key: 100 * value * EPS32 + 2 * float(ulp(100)) for key, value in per_key.items()}


@pytest.mark.parametrize(
    "metric, flip, aqe, rerank",
    [
        ("cosine", False, False, False),
        ("euclidean", True, False, False),
        ("cosine", True, True, False),
        ("cosine", False, False, True),
        ("euclidean", False, True, True),
    ],
)
def test_matches_fastreid_reid_evaluator(monkeypatch, metric, flip, aqe, rerank):
    """Our distances are FastReID's up to rounding, and FastReID's evaluator ranking them reports our numbers.

    Our chunked products, AQE and Jaccard distances run other kernels than FastReID's, so the two distance
    matrices differ by a few float32 ulps; positive/negative pairs closer than that may be ordered differently
    (on some CPU if not on this one). So the metrics are compared on one matrix, the one our ranking got.
    """
    fastreid_jaccard_on_cpu(monkeypatch)
    cfg = get_cfg()  # a plain FastReID config: our keys take their defaults
    cfg.TEST.METRIC = metric
    cfg.TEST.AQE.ENABLED = aqe
    cfg.TEST.RERANK.ENABLED = rerank
    model, data = TinyModel(), tiny_test_set()

    expected, fastreid = run_fastreid_evaluator(monkeypatch, cfg, model, data, flip)
    ranked = record_ranked_distances(monkeypatch, evaluator_module)
    ours = inference_on_dataset(model, InMemoryLoader(*data), ChunkedReidEvaluator(cfg, NUM_QUERY), flip_test=flip)
    assert list(ours) == list(expected) == ["Rank-1", "Rank-5", "Rank-10", "mAP", "mINP", "metric"]

    distances = ranked[0].matrix()
    assert_within(distances, fastreid["distances"],
                  distance_tolerance(cfg, *fastreid["features"], fastreid["distances"]))
    on_ours, _ = run_fastreid_evaluator(monkeypatch, cfg, model, data, flip, distances=distances)
    tolerances = percent_tolerances(*data[1:])
    for key, value in on_ours.items():
        assert_within(ours[key], float(value), tolerances[key], err_msg=key)


def test_features_stay_on_their_device_until_evaluation():
    evaluator = ChunkedReidEvaluator(get_cfg(), NUM_QUERY)
    images, pids, camids = tiny_test_set()
    features = TinyModel()({"images": images}).half()  # AMP features are stored as float32
    evaluator.process({"targets": pids, "camids": camids}, features)
    block = evaluator._feats.blocks[0]
    assert block.device == features.device and block.dtype == torch.float32
    assert torch.equal(block[: len(features)], features.float())


def test_row_store_keeps_order_across_blocks_and_frees_them():
    store = RowStore(block_bytes=10 * 3 * 4)  # 10 rows of 3 float32 per block
    batches = [torch.randn(n, 3) for n in (4, 7, 25, 1, 9)]  # batches span blocks; one exceeds a block
    for batch in batches:
        store.append(batch)
    assert store.batches == 5 and store.size == 46
    assert [len(block) for block in store.blocks] == [10, 10, 16, 10]
    out = store.consume()
    assert torch.equal(out, torch.cat(batches))
    assert store.blocks == [] and store.size == 0
    with pytest.raises(RuntimeError, match="no batch"):
        store.consume()


def test_row_store_with_the_test_set_size_hands_out_its_block_without_copying():
    batches = [torch.randn(n, 3) for n in (4, 7, 9)]
    store = RowStore(block_bytes=10 * 3 * 4, first_block_rows=20)
    for batch in batches:
        store.append(batch)
    assert [len(block) for block in store.blocks] == [20]
    block_ptr = store.blocks[0].data_ptr()
    out = store.consume()
    assert out.data_ptr() == block_ptr and torch.equal(out, torch.cat(batches))

    store = RowStore(block_bytes=10 * 3 * 4, first_block_rows=8)  # a wrong (small) size is only slower
    for batch in batches:
        store.append(batch)
    assert [len(block) for block in store.blocks] == [8, 10, 10]
    assert torch.equal(store.consume(), torch.cat(batches))


def test_add_eval_config_defaults():
    cfg = get_cfg()
    add_eval_config(cfg)
    assert cfg.TEST.CHUNK_SIZE == 0 and cfg.TEST.CUHK03_METRIC is False and cfg.TEST.RERANK.BACKEND == "auto"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def evaluate_shards(shards, with_index):
    """Feeds each of this rank's shard items to a fresh evaluator in batches of 16 and evaluates."""
    images, pids, camids = tiny_test_set()
    features = TinyModel()({"images": images}).detach()
    evaluator = ChunkedReidEvaluator(get_cfg(), NUM_QUERY)
    for start in range(0, len(shards), 16):
        index = torch.tensor(shards[start : start + 16])
        inputs = {"targets": pids[index], "camids": camids[index]}
        if with_index:
            inputs["index"] = index
        evaluator.process(inputs, features[index])
    return evaluator.evaluate()


def gloo_worker(rank, world_size, port, out_dir):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        num = len(tiny_test_set()[0])
        sizes = inference_shard_sizes(num, world_size)
        contiguous = list(range(sum(sizes[:rank]), sum(sizes[: rank + 1])))
        padded = list(range(num)) + list(range(-num % world_size))  # DistributedSampler: pad, then interleave
        interleaved = padded[rank::world_size]
        report = {
            "contiguous": evaluate_shards(contiguous, with_index=False),
            "interleaved": evaluate_shards(interleaved, with_index=True),
        }
        values = torch.arange(num, dtype=torch.float64)[:, None] * torch.ones(1, 3, dtype=torch.float64)
        gathered = gather_to_main([values[interleaved]], torch.tensor(interleaved))
        report["gathered_in_order"] = gathered is None or torch.equal(gathered[0], values)
        uneven = list(range(3)) if rank == 0 else list(range(3, num))
        try:
            gather_to_main([values[uneven]])
            report["uneven_raised"] = False
        except RuntimeError:
            report["uneven_raised"] = True
        with open(f"{out_dir}/rank{rank}.json", "w") as out:
            json.dump(report, out)
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_gather_in_dataset_order(tmp_path):
    mp.spawn(gloo_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    main, other = (json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1))
    single = evaluate_shards(list(range(len(tiny_test_set()[0]))), with_index=False)
    # The same features in the same order, evaluated by the same code: the same ranks, so float64 metrics
    # equal but for the last bits (the closest positive/negative distances differ by thousands of ulps).
    assert main["contiguous"] == pytest.approx(single, abs=1e-9)
    assert main["interleaved"] == pytest.approx(single, abs=1e-9)
    assert other["contiguous"] == other["interleaved"] == {}
    assert main["gathered_in_order"] and other["gathered_in_order"]
    assert main["uneven_raised"] and other["uneven_raised"]
