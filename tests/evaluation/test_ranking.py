"""Chunked ranking (fastreid_clip.evaluation.ranking) against FastReID's evaluate_rank and a stable-sort reference.

Metrics are compared on one distance matrix (see fastreid_reference): these random sets hold positive/negative
pairs a few float32 ulps apart, which distances from two different kernels may order differently.
"""

import itertools

import fastreid_clip  # noqa: F401  (before fastreid)
import numpy as np
import pytest
import torch
from fastreid.evaluation.rank import evaluate_rank
from fastreid.utils.compute_dist import build_dist

from fastreid_clip.evaluation import evaluate_rank_chunked, evaluate_rank_from_distances, feature_distance, normalize_
from fastreid_clip.evaluation import ranking
from fastreid_reference import (RecordingDistance, assert_matches_fastreid, distance_magnitude, max_positives,
                                record_feature_distances)
from numeric import assert_close_ulps, dot_ulps, mean_ulps

pytestmark = pytest.mark.filterwarnings("ignore:This overload of addmm_ is deprecated")


def random_test_set(seed, num_query=83, num_gallery=517, num_ids=40, dim=16, num_cams=4):
    """Identity-clustered features; some queries have no valid positive (absent identity, or same camera only)."""
    rng = np.random.default_rng(seed)
    q_pids = rng.integers(0, num_ids + 6, num_query)  # identities >= num_ids are not in the gallery
    g_pids = rng.integers(0, num_ids, num_gallery)
    q_camids = rng.integers(0, num_cams, num_query)
    g_camids = rng.integers(0, num_cams, num_gallery)
    q_pids[0], q_camids[0] = 999, 0  # its only gallery image shares its camera: removed
    g_pids[-1], g_camids[-1] = 999, 0
    centres = rng.normal(size=(1000, dim))
    q_feats = centres[q_pids] + 1.5 * rng.normal(size=(num_query, dim))
    g_feats = centres[g_pids] + 1.5 * rng.normal(size=(num_gallery, dim))
    as_tensor = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return as_tensor(q_feats), as_tensor(g_feats), q_pids, g_pids, q_camids, g_camids


def rows_of(distmat):
    return lambda start, end: torch.from_numpy(np.ascontiguousarray(distmat[start:end]))


DIM = 16  # feature dimension of random_test_set: the depth of every distance's dot product


def assert_matches_reference(ours, reference, num_gallery):
    """Ours vs a float64 reference ranking of the same distances: CMC from the same integer counts; AP and
    INP are means of at most G terms in [0, 1], summed in another order (a few float64 ulps of 1.0)."""
    cmc, all_ap, all_inp = reference
    assert_close_ulps(ours.cmc, cmc, 1, magnitude=1.0, dtype=np.float64)
    assert_close_ulps(ours.all_ap, all_ap, 2 * mean_ulps(num_gallery), magnitude=1.0, dtype=np.float64)
    assert_close_ulps(ours.all_inp, all_inp, 1, magnitude=1.0, dtype=np.float64)


def stable_sort_reference(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    """Market-1501 metrics with ties in gallery order (a stable sort of each float32 row)."""
    hits, aps, inps = np.zeros(max_rank), [], []
    for i in range(distmat.shape[0]):
        order = np.argsort(distmat[i].astype(np.float32), kind="stable")
        keep = ~((g_pids[order] == q_pids[i]) & (g_camids[order] == q_camids[i]))
        match_ranks = np.flatnonzero((g_pids[order] == q_pids[i])[keep]) + 1
        if match_ranks.size == 0:
            continue
        aps.append(np.mean(np.arange(1, match_ranks.size + 1) / match_ranks))
        inps.append(match_ranks.size / match_ranks[-1])
        hits[match_ranks[0] - 1 :] += 1
    return hits / len(aps), np.array(aps), np.array(inps)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("chunk_size", [1, 7, 64, None])
def test_distance_rows_match_fastreid(seed, chunk_size):
    q_feats, g_feats, *ids = random_test_set(seed)
    distmat = build_dist(q_feats, g_feats, "cosine")
    ours = evaluate_rank_from_distances(rows_of(distmat), *ids, chunk_size=chunk_size)
    assert ours.num_valid < len(ids[0])  # some queries are skipped, as FastReID skips them
    assert_matches_fastreid(ours, distmat, *ids)


def test_distance_rows_match_fastreid_python_ranker():
    q_feats, g_feats, *ids = random_test_set(3)
    distmat = build_dist(q_feats, g_feats, "euclidean")
    ours = evaluate_rank_from_distances(rows_of(distmat), *ids, chunk_size=10)
    assert_matches_fastreid(ours, distmat, *ids, use_cython=False)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("chunk_size", [13, None])
def test_features_match_fastreid(monkeypatch, seed, metric, chunk_size):
    q_feats, g_feats, *ids = random_test_set(seed)
    recorded = record_feature_distances(monkeypatch, ranking)
    ours = evaluate_rank_chunked(q_feats, g_feats, *ids, metric=metric, chunk_size=chunk_size)
    (distance,) = recorded
    distmat = distance.matrix()
    # The distances ranked are FastReID's build_dist up to the summation order of other GEMM shapes.
    assert_close_ulps(distmat, build_dist(q_feats, g_feats, metric), dot_ulps(DIM),
                      magnitude=distance_magnitude(q_feats, g_feats, metric))
    # FastReID ranks the same matrix: near-ties cannot be ordered differently.
    assert_matches_fastreid(ours, distmat, *ids)


def test_feature_distance_matches_fastreid():
    q_feats, g_feats, *_ = random_test_set(0)
    for metric in ("cosine", "euclidean"):
        # Rows 5:40 are a 35-row product, FastReID's an 83-row one: equal up to their summation orders.
        assert_close_ulps(feature_distance(q_feats, g_feats, metric)(5, 40).numpy(),
                          build_dist(q_feats, g_feats, metric)[5:40], dot_ulps(DIM),
                          magnitude=distance_magnitude(q_feats[5:40], g_feats, metric))
    # normalize_ runs F.normalize's operations on the same tensor: the same bits.
    assert torch.equal(normalize_(q_feats.clone()), torch.nn.functional.normalize(q_feats, p=2, dim=1))
    normalized = feature_distance(normalize_(q_feats.clone()), normalize_(g_feats.clone()), "cosine", normalized=True)
    assert_close_ulps(normalized(5, 40).numpy(), build_dist(q_feats, g_feats, "cosine")[5:40], dot_ulps(DIM),
                      magnitude=1.0)


def test_gallery_blocked_product_and_reused_buffer_match_fastreid(monkeypatch):
    monkeypatch.setattr(ranking, "_CPU_GEMM_COLUMNS", 7)  # many gallery blocks, a partial last one
    q_feats, g_feats, *_ = random_test_set(0)
    for metric in ("cosine", "euclidean"):
        expected = build_dist(q_feats, g_feats, metric)
        magnitude = np.broadcast_to(distance_magnitude(q_feats, g_feats, metric), expected.shape)
        distance = feature_distance(q_feats, g_feats, metric, reuse_output=True)
        first = distance(0, 16)
        # Products of 7 gallery columns vs FastReID's one product: other GEMM shapes, maybe another summation
        # order of each 16-term dot product (bit-identical on the Xeon this test was written on, up to 4 ulps
        # apart on an AMD EPYC).
        assert_close_ulps(first.numpy(), expected[:16], dot_ulps(DIM), magnitude[:16])
        second = distance(16, 30)  # smaller chunk: written into the same buffer
        assert second.data_ptr() == first.data_ptr()
        assert_close_ulps(second.numpy(), expected[16:30], dot_ulps(DIM), magnitude[16:30])
        # The reused buffer holds what a fresh output gets from the same blocked products: the same bits.
        np.testing.assert_array_equal(second.numpy(), feature_distance(q_feats, g_feats, metric)(16, 30).numpy())


@pytest.mark.parametrize("duplicates", [False, True])
def test_ranking_from_similarities_equals_ranking_from_distances(duplicates):
    q_feats, g_feats, *ids = random_test_set(6)
    if duplicates:  # many exact ties, and similarities whose 1 - s round to the same distance
        g_feats = g_feats[torch.arange(len(g_feats)) % 23]
    cosine = RecordingDistance(feature_distance(q_feats, g_feats, "cosine"))
    assert hasattr(cosine, "similarity")
    from_sims = evaluate_rank_from_distances(cosine, *ids, chunk_size=13)
    distmat = cosine.matrix()  # the distances 1 - s that were ranked, chunk by chunk
    from_dists = evaluate_rank_from_distances(lambda start, end: cosine(start, end), *ids, chunk_size=13)
    # The same products, the same float32 1 - s: the same ranks, bit for bit.
    np.testing.assert_array_equal(from_sims.valid, from_dists.valid)
    for field in ("cmc", "all_ap", "all_inp"):
        np.testing.assert_array_equal(getattr(from_sims, field), getattr(from_dists, field))
    if duplicates:  # equal features, equal products (where the BLAS sums all output columns alike): ties
        assert (distmat[:, :, None] == distmat[:, None, :23]).any(2).mean() > 0.9
    assert_matches_reference(from_sims, stable_sort_reference(distmat, *ids), len(g_feats))


def test_compiled_candidate_scan_is_built():
    assert ranking._candidate_scan is not None, "run `python -m fastreid_clip.utils.build_kernels` (make setup does)"


def _integer_distances(seed):
    rng = np.random.default_rng(seed)
    _, _, *ids = random_test_set(seed)
    distmat = rng.integers(0, 6, (len(ids[0]), len(ids[1]))).astype(np.float32)
    zeros = distmat == 0
    distmat[zeros] = np.where(rng.integers(0, 2, zeros.sum()) == 1, -0.0, 0.0)  # -0.0 == 0.0: a tie as well
    return rows_of(distmat), ids


@pytest.mark.parametrize("case", ["cosine", "euclidean", "duplicates", "integer_ties"])
@pytest.mark.parametrize("chunk_size", [1, 13, 200])
def test_compiled_scan_equals_torch_scan(monkeypatch, case, chunk_size):
    if case == "integer_ties":
        distance, ids = _integer_distances(7)
    else:
        q_feats, g_feats, *ids = random_test_set(8)
        if case == "duplicates":
            g_feats = g_feats[torch.arange(len(g_feats)) % 29]
        distance = feature_distance(q_feats, g_feats, "euclidean" if case == "euclidean" else "cosine")
    compiled = evaluate_rank_from_distances(distance, *ids, chunk_size=chunk_size)
    monkeypatch.setattr(ranking, "_candidate_scan", None)
    monkeypatch.setattr(ranking, "_CPU_MASK_ELEMENTS", 5 * len(ids[1]))  # torch search in blocks of 5 rows
    reference = evaluate_rank_from_distances(distance, *ids, chunk_size=chunk_size)
    for field in ("valid", "cmc", "all_ap", "all_inp"):
        np.testing.assert_array_equal(getattr(compiled, field), getattr(reference, field))


def test_integer_distances_with_ties_follow_gallery_order():
    rng = np.random.default_rng(0)
    _, _, *ids = random_test_set(4)
    distmat = rng.integers(0, 6, (len(ids[0]), len(ids[1]))).astype(np.float32)
    zeros = distmat == 0
    distmat[zeros] = np.where(rng.integers(0, 2, zeros.sum()) == 1, -0.0, 0.0)  # -0.0 == 0.0: a tie as well
    assert np.signbit(distmat[zeros]).any() and not np.signbit(distmat[zeros]).all()
    ours = evaluate_rank_from_distances(rows_of(distmat), *ids, chunk_size=9)
    assert_matches_reference(ours, stable_sort_reference(distmat, *ids), distmat.shape[1])


def test_duplicate_features_follow_gallery_order(monkeypatch):
    q_feats, g_feats, *ids = random_test_set(5)
    g_feats = g_feats[torch.arange(len(g_feats)) % 37]  # every gallery feature repeated about 14 times
    recorded = record_feature_distances(monkeypatch, ranking)
    ours = evaluate_rank_chunked(q_feats, g_feats, *ids, chunk_size=11)
    distmat = recorded[0].matrix()  # the distances that were ranked
    # Equal features give equal products (when a BLAS sums every output column in one order, as MKL does
    # here): the ties to be broken by gallery index.
    assert (distmat[:, :, None] == distmat[:, None, :37]).any(2).mean() > 0.9
    assert_matches_reference(ours, stable_sort_reference(distmat, *ids), len(g_feats))


def test_max_rank_is_capped_at_gallery_size():
    q_feats, g_feats, q_pids, g_pids, q_camids, g_camids = random_test_set(0, num_gallery=30)
    ours = evaluate_rank_chunked(q_feats, g_feats, q_pids, g_pids, q_camids, g_camids, max_rank=50)
    assert ours.cmc.shape == (30,) and ours.cmc[-1] == 1.0


def test_no_valid_query_raises():
    feats = torch.randn(4, 8)
    with pytest.raises(ValueError, match="no query"):
        evaluate_rank_chunked(feats, feats, [0, 0, 1, 1], [2, 2, 3, 3], [0, 1, 0, 1], [0, 1, 0, 1])


def single_shot_test_set(seed, num_query=40, num_gallery=70):
    """One gallery image per identity, query cameras differ from it: single-gallery-shot sampling is certain."""
    rng = np.random.default_rng(seed)
    g_pids = rng.permutation(num_gallery)
    g_camids = np.zeros(num_gallery, dtype=np.int64)
    q_pids = rng.integers(0, num_gallery + 5, num_query)
    q_camids = np.ones(num_query, dtype=np.int64)
    distmat = rng.random((num_query, num_gallery)).astype(np.float32)
    return distmat, q_pids, g_pids, q_camids, g_camids


@pytest.mark.parametrize("seed", [0, 1])
def test_cuhk03_single_image_per_identity_matches_fastreid(seed):
    distmat, *ids = single_shot_test_set(seed)
    cmc, mAP = evaluate_rank(distmat, *ids, use_metric_cuhk03=True)
    ours = evaluate_rank_from_distances(rows_of(distmat), *ids, cuhk03=True, chunk_size=6)
    # FastReID: float32 means over its 10 draws, then over the queries; one positive each, so AP is one rounding.
    num_query = len(distmat)
    assert_close_ulps(ours.cmc, cmc, mean_ulps(10) + mean_ulps(num_query), magnitude=1.0)
    assert_close_ulps(ours.mAP, mAP, mean_ulps(1) + mean_ulps(num_query), magnitude=1.0)


def test_cuhk03_map_matches_fastreid():
    q_feats, g_feats, *ids = random_test_set(6)
    distmat = build_dist(q_feats, g_feats, "cosine")
    _, mAP = evaluate_rank(distmat, *ids, use_metric_cuhk03=True)
    ours = evaluate_rank_from_distances(rows_of(distmat), *ids, cuhk03=True, chunk_size=16)
    # FastReID's mAP: a float32 mean over the queries of float32 means over their positives.
    assert_close_ulps(ours.mAP, mAP, mean_ulps(max_positives(*ids)) + mean_ulps(len(distmat)), magnitude=1.0)


def expected_single_shot_cmc(distmat, q_pids, g_pids, q_camids, g_camids):
    """Exact expectation of the single-gallery-shot CMC, enumerating every draw of one image per identity."""
    per_query = []
    for i in range(distmat.shape[0]):
        keep = ~((g_pids == q_pids[i]) & (g_camids == q_camids[i]))
        if not (keep & (g_pids == q_pids[i])).any():
            continue
        groups = [np.flatnonzero(keep & (g_pids == pid)) for pid in np.unique(g_pids[keep])]
        cmc = np.zeros(len(groups))
        draws = list(itertools.product(*groups))
        for draw in draws:
            order = np.array(draw)[np.argsort(distmat[i, list(draw)], kind="stable")]
            cmc[np.flatnonzero(g_pids[order] == q_pids[i])[0] :] += 1
        per_query.append(cmc / len(draws))
    return np.mean(per_query, axis=0)


def test_cuhk03_cmc_estimates_its_expectation():
    rng = np.random.default_rng(0)
    g_pids = np.repeat(np.arange(5), [3, 2, 3, 1, 2])
    g_camids = rng.integers(0, 2, g_pids.size)
    q_pids, q_camids = np.array([0, 1, 2, 4]), np.array([0, 1, 0, 1])
    distmat = rng.random((4, g_pids.size)).astype(np.float32)
    ours = evaluate_rank_from_distances(rows_of(distmat), q_pids, g_pids, q_camids, g_camids, cuhk03=True,
                                        cuhk03_repeats=4000, chunk_size=3)
    expected = expected_single_shot_cmc(distmat, q_pids, g_pids, q_camids, g_camids)  # one rank per identity
    # Monte Carlo: a mean of 4000 draws of a fraction has a standard deviation below 0.5 / sqrt(4000) = 0.008.
    np.testing.assert_allclose(ours.cmc[:5], expected, rtol=0, atol=0.04)
    assert (ours.cmc[5:] == 1).all()
