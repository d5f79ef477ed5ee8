"""Comparing our evaluation with FastReID's: distance magnitudes, recorded distances, metric tolerances.

Distances from two different kernels (our chunked, gallery-blocked product and FastReID's one ``Q x G``
product; another CPU's BLAS path) differ by a few float32 ulps, and the test sets hold positive/negative pairs
closer than that (near-ties), whose order can then differ. So metrics are compared on one distance matrix:
the one our ranking was given (recorded with :class:`RecordingDistance`) is also handed to FastReID's
``evaluate_rank``, and separately that matrix is checked against FastReID's own distances to within ulps.
"""

from __future__ import annotations

import numpy as np
import torch
from fastreid.evaluation.rank import evaluate_rank
from numeric import assert_close_ulps, mean_ulps

# Jaccard distances lie in [0, 1]; ours and FastReID's sum the same terms in the same order, but the softmax
# weights come from squared distances computed by other kernels (an elementwise product and sum for us, addmm
# for FastReID). Measured: at most 4.5 float32 ulps of 1.0 apart over MKL's default, AVX2 and CBWR=COMPATIBLE
# paths, ATen's default, AVX2 and AVX-512 paths and 1 or 2 threads; allowed: 32 ulps of 1.0 (3.8e-6).
JACCARD_ULPS = 32


def distance_magnitude(query: torch.Tensor, gallery: torch.Tensor, metric: str):
    """Magnitude of the terms each distance sums: 1 for cosine (unit vectors; ``1 - s`` is below 2), and
    ``|q|^2 + |g|^2`` (``[Q, G]``) for the squared Euclidean distance ``|q|^2 + |g|^2 - 2 q.g``."""
    if metric == "cosine":
        return 1.0
    q_sq = query.double().pow(2).sum(1)
    g_sq = gallery.double().pow(2).sum(1)
    return (q_sq[:, None] + g_sq[None]).numpy()


class RecordingDistance:
    """A :data:`~fastreid_clip.evaluation.ranking.DistanceFn` wrapper keeping a copy of every chunk handed out.

    Ranking turns the cosine similarities ``s`` of a ``similarity`` method into float32 distances ``1 - s``;
    recorded similarities are turned into distances the same way, so :meth:`matrix` holds exactly the
    distances that were ranked.
    """

    def __init__(self, fn):
        self.fn = fn
        self.chunks: dict[int, np.ndarray] = {}
        if hasattr(fn, "similarity"):
            self.similarity = self._similarity

    def __call__(self, start: int, end: int) -> torch.Tensor:
        out = self.fn(start, end)
        self.chunks[start] = out.detach().cpu().numpy().copy()
        return out

    def _similarity(self, start: int, end: int) -> torch.Tensor:
        out = self.fn.similarity(start, end)
        self.chunks[start] = np.float32(1) - out.detach().cpu().numpy()  # torch.rsub(s, 1.0): fl32(1 - s)
        return out

    def matrix(self) -> np.ndarray:
        starts = sorted(self.chunks)
        ends = [start + len(self.chunks[start]) for start in starts]
        assert starts[0] == 0 and starts[1:] == ends[:-1], "the recorded chunks do not cover the queries in one piece"
        return np.concatenate([self.chunks[start] for start in starts])


def record_feature_distances(monkeypatch, module) -> list:
    """Makes ``module.feature_distance`` return :class:`RecordingDistance` wrappers; returns the list of them."""
    recorded = []
    original = module.feature_distance

    def recording(*args, **kwargs):
        recorded.append(RecordingDistance(original(*args, **kwargs)))
        return recorded[-1]

    monkeypatch.setattr(module, "feature_distance", recording)
    return recorded


def record_ranked_distances(monkeypatch, module) -> list:
    """Makes ``module.evaluate_rank_from_distances`` record the distances it ranks; returns the list of them."""
    recorded = []
    original = module.evaluate_rank_from_distances

    def recording(distance_fn, *args, **kwargs):
        recorded.append(RecordingDistance(distance_fn))
        return original(recorded[-1], *args, **kwargs)

    monkeypatch.setattr(module, "evaluate_rank_from_distances", recording)
    return recorded


def max_positives(q_pids, g_pids, q_camids, g_camids) -> int:
    """Largest number of positives (same identity, other camera) of a query."""
    q_pids, g_pids, q_camids, g_camids = (np.asarray(ids) for ids in (q_pids, g_pids, q_camids, g_camids))
    positives = (q_pids[:, None] == g_pids[None]) & (q_camids[:, None] != g_camids[None])
    return int(positives.sum(1).max())


def metric_ulps(q_pids, g_pids, q_camids, g_camids) -> dict:
    """Ulps of 1.0 within which FastReID's Market-1501 metrics equal ours (float64, exact up to rounding).

    FastReID's Cython ranker forms a query's AP as a float32 running mean of the precisions at its ``n``
    positives (:func:`numeric.mean_ulps`); INP (count / rank) and CMC (exact integer count / number of
    valid queries) are one float32 rounding each. The mAP and mINP its ``ReidEvaluator`` reports are ``np.mean``
    of the float32 per-query values: another float32 mean, over the queries.
    """
    n = max_positives(q_pids, g_pids, q_camids, g_camids)
    num_query = len(q_pids)
    return {"ap": mean_ulps(n), "cmc": 1, "inp": 1, "mAP": mean_ulps(n) + mean_ulps(num_query),
            "mINP": 1 + mean_ulps(num_query)}


def assert_matches_fastreid(ours, distmat, q_pids, g_pids, q_camids, g_camids, use_cython=True):
    """FastReID's ``evaluate_rank`` of ``distmat`` (the distances ``ours`` ranked) equals ``ours``, per query."""
    cmc, all_ap, all_inp = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, use_cython=use_cython)
    ulps = metric_ulps(q_pids, g_pids, q_camids, g_camids)
    assert ours.num_valid == len(all_ap)
    assert_close_ulps(ours.cmc, cmc, ulps["cmc"], magnitude=1.0, err_msg="CMC:")
    assert_close_ulps(ours.all_ap, all_ap, ulps["ap"], magnitude=1.0, err_msg="AP:")
    assert_close_ulps(ours.all_inp, all_inp, ulps["inp"], magnitude=1.0, err_msg="INP:")
    # the means of FastReID's per-query values (taken in float64: the bounds above hold for them too)
    assert_close_ulps(ours.mAP, np.mean(all_ap, dtype=np.float64), ulps["ap"], magnitude=1.0, err_msg="mAP:")
    assert_close_ulps(ours.mINP, np.mean(all_inp, dtype=np.float64), ulps["inp"], magnitude=1.0, err_msg="mINP:")

