"""Sparse k-reciprocal re-ranking and chunked query expansion against FastReID's dense implementations.

FastReID's evaluator (``TEST.RERANK``) runs ``fastreid.utils.compute_dist.compute_jaccard_distance``; its
``search_option=3`` is the same algorithm with a CPU faiss index (the default, 0, needs CUDA).
Tolerances: JACCARD_ULPS (fastreid_reference) for Jaccard distances, numeric.dot_ulps for products.
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
from fastreid.utils import compute_dist
from fastreid.utils.compute_dist import build_dist, compute_jaccard_distance

from fastreid_clip.evaluation import (
    SparseJaccard,
    average_query_expansion,
    evaluate_rank_from_distances,
    knn,
    reranked_distance,
)
from fastreid_reference import JACCARD_ULPS, RecordingDistance, assert_matches_fastreid, distance_magnitude
from numeric import EPS32, assert_close_ulps, assert_within, dot_ulps, ulp

pytestmark = pytest.mark.filterwarnings("ignore:This overload of addmm_ is deprecated")


def clustered_features(seed, num=300, dim=32, num_ids=30):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, num_ids, (num,), generator=generator)
    centres = torch.randn(num_ids, dim, generator=generator)
    return centres[ids] + 0.8 * torch.randn(num, dim, generator=generator), ids


def jaccard_block(jaccard, num_query, chunk):
    return torch.cat([jaccard(start, min(start + chunk, num_query)) for start in range(0, num_query, chunk)]).numpy()


class GivenNeighbours:
    """Stands in for FastReID's CPU faiss index (``index_init_cpu``): its search returns these neighbour lists."""

    def __init__(self, neighbours):
        self.neighbours = neighbours

    def add(self, features):
        pass

    def search(self, features, k):
        return None, self.neighbours[:, :k]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("k1, k2", [(20, 6), (7, 3), (5, 1)])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_sparse_jaccard_matches_fastreid(monkeypatch, seed, k1, k2, normalize, backend):
    features, _ = clustered_features(seed)
    features = F.normalize(features, dim=1) if normalize else features / 4  # raw: softmax weights not one-hot
    num_query = 60
    if backend == "torch":
        # FastReID searches with faiss; items at distances within float32 rounding of each other may come in
        # another order from the torch search (test_torch_and_faiss_neighbours_agree), so FastReID is given
        # the neighbour lists of ours. With faiss both run the same search on the same features.
        monkeypatch.setattr(compute_dist, "index_init_cpu",
                            lambda dim: GivenNeighbours(knn(features, k1, "torch", chunk_size=37).numpy()))
    dense = compute_jaccard_distance(features, k1=k1, k2=k2, search_option=3)[:num_query, num_query:]
    ours = jaccard_block(SparseJaccard(features, num_query, k1, k2, backend=backend, chunk_size=37), num_query, 17)
    assert (dense < 1).mean() > 0.005  # the test is not vacuous
    assert_close_ulps(ours, dense, JACCARD_ULPS, magnitude=1.0)


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
    # Each term within its own tolerance: the Jaccard part's (of 1.0), the original distance's (a 32-term dot
    # product of magnitude |q|^2 + |g|^2, or 1 for cosine), plus the rounding of the weighted sum itself.
    tolerance = ((1 - lambda_value) * JACCARD_ULPS * EPS32
                 + lambda_value * dot_ulps(features.shape[1]) * ulp(distance_magnitude(query, gallery, metric))
                 + 2 * ulp(expected))
    assert_within(ours, expected, tolerance)

    camids = np.arange(len(ids)) % 3
    split = lambda a: (a[:num_query], a[num_query:])  # noqa: E731
    (q_pids, g_pids), (q_camids, g_camids) = split(ids.numpy()), split(camids)
    recorded = RecordingDistance(distance_fn)
    result = evaluate_rank_from_distances(recorded, q_pids, g_pids, q_camids, g_camids, chunk_size=16)
    # FastReID's ranking of the distances ours ranked (``expected`` is a few ulps away: near-ties could swap).
    assert_matches_fastreid(result, recorded.matrix(), q_pids, g_pids, q_camids, g_camids)


def test_torch_and_faiss_neighbours_agree():
    features, _ = clustered_features(3, num=400)
    exact = features.double()
    squared = exact.pow(2).sum(1)
    distances = (squared[:, None] + squared[None] - 2 * exact @ exact.t()).numpy()  # float64 reference
    magnitude = (squared[:, None] + squared[None]).numpy()
    nearest = np.sort(distances, axis=1)[:, :12]
    rows = np.arange(len(features))[:, None]
    for backend, found in (("torch", knn(features, 12, "torch", chunk_size=33)), ("faiss", knn(features, 12, "faiss"))):
        found = found.numpy()
        # The k nearest in order, up to the float32 rounding of each search's 32-term distances. Where distances
        # are further apart than that, this fixes the neighbour and its place, so torch and faiss agree there.
        assert_within(distances[rows, found], nearest, dot_ulps(features.shape[1]) * ulp(magnitude[rows, found]),
                      err_msg=backend)


@pytest.mark.parametrize("qe_times, qe_k, alpha", [(1, 5, 3.0), (2, 10, 1.0)])
def test_average_query_expansion_matches_fastreid(qe_times, qe_k, alpha):
    features, _ = clustered_features(4, num=230)
    query, gallery = features[:40], features[40:]
    # Both pick each feature's qe_k most similar features from float32 similarities (32-term dot products of
    # unit vectors, within dot_ulps(32) ulps of 1.0 of the exact ones): unambiguous while the qe_k-th and next
    # similarities are further apart than twice that, in every round.
    assert aqe_selection_gap(features, qe_times, qe_k, alpha) > 2 * dot_ulps(features.shape[1]) * EPS32
    expected_query, expected_gallery = aqe(query, gallery, qe_times, qe_k, alpha)
    ours_query, ours_gallery = average_query_expansion(query, gallery, qe_times, qe_k, alpha, chunk_size=19)
    # Similarity-weighted means of the same features, weights from other kernels' products: measured 2 ulps
    # of the largest value apart at most (over the kernel paths listed at JACCARD_ULPS).
    for ours, expected in ((ours_query, expected_query), (ours_gallery, expected_gallery)):
        assert ours.dtype == expected.dtype
        assert_close_ulps(ours, expected, 32)


def aqe_selection_gap(features, qe_times, qe_k, alpha):
    """Smallest gap between the qe_k-th and the next similarity of a row over the rounds of AQE, in float64."""
    feats, gap = features.double(), float("inf")
    for _ in range(qe_times):
        unit = F.normalize(feats, dim=1)
        sims, order = (unit @ unit.t()).sort(dim=1, descending=True)
        gap = min(gap, float((sims[:, qe_k - 1] - sims[:, qe_k]).min()))
        weights = sims[:, :qe_k] ** alpha
        feats = (feats[order[:, :qe_k]] * weights[..., None]).mean(1)
    return gap


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
