"""Sparse k-reciprocal re-ranking and chunked query expansion against FastReID's dense implementations.

FastReID's evaluator (``TEST.RERANK``) runs ``fastreid.utils.compute_dist.compute_jaccard_distance``; its
``search_option=3`` is the same algorithm with a CPU faiss index (the default, 0, needs CUDA).
"""

import os
import subprocess
import sys
import textwrap

import fastreid_clip  # noqa: F401  (before fastreid)
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fastreid.evaluation.query_expansion import aqe
from fastreid.evaluation.rank import evaluate_rank
from fastreid.utils.compute_dist import build_dist, compute_jaccard_distance

from fastreid_clip.evaluation import (
    SparseJaccard,
    average_query_expansion,
    evaluate_rank_from_distances,
    knn,
    reranked_distance,
)

pytestmark = pytest.mark.filterwarnings("ignore:This overload of addmm_ is deprecated")


def clustered_features(seed, num=300, dim=32, num_ids=30):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, num_ids, (num,), generator=generator)
    centres = torch.randn(num_ids, dim, generator=generator)
    return centres[ids] + 0.8 * torch.randn(num, dim, generator=generator), ids


def jaccard_block(jaccard, num_query, chunk):
    return torch.cat([jaccard(start, min(start + chunk, num_query)) for start in range(0, num_query, chunk)]).numpy()


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("k1, k2", [(20, 6), (7, 3), (5, 1)])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_sparse_jaccard_matches_fastreid(seed, k1, k2, normalize, backend):
    features, _ = clustered_features(seed)
    features = F.normalize(features, dim=1) if normalize else features / 4  # raw: softmax weights not one-hot
    num_query = 60
    dense = compute_jaccard_distance(features, k1=k1, k2=k2, search_option=3)[:num_query, num_query:]
    ours = jaccard_block(SparseJaccard(features, num_query, k1, k2, backend=backend, chunk_size=37), num_query, 17)
    assert (dense < 1).mean() > 0.005  # the test is not vacuous
    np.testing.assert_allclose(ours, dense, rtol=0, atol=2e-6)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_reranked_distance_matches_fastreid_evaluator(metric):
    features, ids = clustered_features(2, num=260)
    num_query, k1, k2, lambda_value = 50, 20, 6, 0.3
    query, gallery = features[:num_query], features[num_query:]
    # FastReID's ReidEvaluator.evaluate with TEST.RERANK.ENABLED, search on the CPU.
    dist = build_dist(query, gallery, metric)
    if metric == "cosine":
        query, gallery = F.normalize(query, dim=1), F.normalize(gallery, dim=1)
    jaccard = compute_jaccard_distance(torch.cat([query, gallery]), k1=k1, k2=k2, search_option=3)
    expected = jaccard[:num_query, num_query:] * (1 - lambda_value) + dist * lambda_value

    distance_fn = reranked_distance(features[:num_query], features[num_query:], metric, k1, k2, lambda_value)
    ours = torch.cat([distance_fn(start, min(start + 16, num_query)) for start in range(0, num_query, 16)]).numpy()
    np.testing.assert_allclose(ours, expected, rtol=0, atol=2e-6)

    camids = np.arange(len(ids)) % 3
    split = lambda a: (a[:num_query], a[num_query:])  # noqa: E731
    (q_pids, g_pids), (q_camids, g_camids) = split(ids.numpy()), split(camids)
    cmc, all_ap, _ = evaluate_rank(expected, q_pids, g_pids, q_camids, g_camids)
    result = evaluate_rank_from_distances(distance_fn, q_pids, g_pids, q_camids, g_camids, chunk_size=16)
    np.testing.assert_allclose(result.cmc, cmc, atol=1e-6)
    assert abs(result.mAP - np.mean(all_ap)) < 1e-6


def test_torch_and_faiss_neighbours_agree():
    features, _ = clustered_features(3, num=400)
    np.testing.assert_array_equal(knn(features, 12, "torch", chunk_size=33).numpy(), knn(features, 12, "faiss").numpy())


@pytest.mark.parametrize("qe_times, qe_k, alpha", [(1, 5, 3.0), (2, 10, 1.0)])
def test_average_query_expansion_matches_fastreid(qe_times, qe_k, alpha):
    features, _ = clustered_features(4, num=230)
    query, gallery = features[:40], features[40:]
    expected_query, expected_gallery = aqe(query, gallery, qe_times, qe_k, alpha)
    ours_query, ours_gallery = average_query_expansion(query, gallery, qe_times, qe_k, alpha, chunk_size=19)
    torch.testing.assert_close(ours_query, expected_query, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours_gallery, expected_gallery, rtol=1e-5, atol=1e-6)


def test_jaccard_memory_grows_with_n_times_k_not_n_squared(tmp_path):
    """20,000 items: one dense N x N float32 array would be 1.6 GB; FastReID builds several."""
    script = textwrap.dedent("""
        import fastreid_clip, torch
        from fastreid_clip.evaluation import SparseJaccard

        def rss_mb(field):
            with open("/proc/self/status") as status:
                return next(int(line.split()[1]) / 1024 for line in status if line.startswith(field + ":"))

        features = torch.nn.functional.normalize(torch.randn(20000, 32, generator=torch.Generator().manual_seed(0)))
        before = rss_mb("VmRSS")
        open("/proc/self/clear_refs", "w").write("5")
        jaccard = SparseJaccard(features, 2000, k1=20, k2=6, backend="torch")
        block = jaccard(0, 100)
        print(rss_mb("VmHWM") - before)
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    assert float(done.stdout.split()[-1]) < 400
