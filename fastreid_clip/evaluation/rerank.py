"""Query-side re-ranking with bounded memory: sparse k-reciprocal Jaccard distance and average query expansion.

k-reciprocal re-ranking (Zhong et al., CVPR 2017) as FastReID's evaluator runs it
(``fastreid.utils.compute_dist.compute_jaccard_distance``, enabled by ``TEST.RERANK``), without its dense
``N x N`` arrays (``N = Q + G``; 35 GB each for MSMT17). Over the ``N`` query and gallery features:

1. ``k1`` nearest neighbours of every item (itself included) with faiss or an exact torch search;
2. ``R(i)``: the neighbours ``j`` of ``i`` that have ``i`` among their own ``k1`` neighbours; ``R'(j)``
   the same with ``round(k1 / 2) + 1`` neighbours; every ``R'(j)``, ``j`` in ``R(i)``, that shares more
   than 2/3 of its items with ``R(i)`` is added to ``R(i)``;
3. sparse rows ``V[i]``: softmax of minus the squared Euclidean distance over the expanded ``R(i)``;
   then (if ``k2 > 1``) ``V[i]`` is replaced by the mean of ``V`` over the ``k2`` nearest neighbours of ``i``;
4. Jaccard distance ``1 - s / (2 - s)`` with ``s(i, j) = sum_k min(V[i, k], V[j, k])``, clamped at 0,
   computed from the sparse rows through a column index for one query chunk at a time.

Memory grows like ``N`` times a function of ``k1`` and ``k2`` (the non-zeros of ``V``), plus ``chunk x G``
per distance block; nothing is ``N x N``. Results equal FastReID's to float32 rounding (the Jaccard sums are
FastReID's, in its order, but the softmax weights come from distances computed by other kernels: measured at
most 4.5 float32 ulps of 1.0 apart on the CPU; on CUDA the Jaccard sums are accumulated in a
non-deterministic order), except where the neighbour search meets items equidistant to within float32
rounding, whose order is up to the search backend (as it is in FastReID).

Average query expansion (:func:`average_query_expansion`, ``TEST.AQE``) re-runs FastReID's ``aqe`` one row
chunk at a time instead of on the dense ``N x N`` similarity matrix.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch
import torch.nn.functional as F

from .ranking import DistanceFn, default_chunk_size, feature_distance

__all__ = ["SparseJaccard", "average_query_expansion", "knn", "reranked_distance"]

# Bounds on temporary tensors, in elements: row blocks while building V, (entry x column) pairs per Jaccard step.
_BUILD_ELEMENTS = 1 << 22
_PAIR_ELEMENTS = 1 << 23


def knn(features: torch.Tensor, k: int, backend: str = "auto", chunk_size: Optional[int] = None) -> torch.Tensor:
    """Exact k nearest neighbours (squared Euclidean) of every row among all rows, itself included.

    Args:
        features: ``[N, D]`` float32 features.
        k: neighbours per row (capped at N).
        backend: ``"faiss"`` (faiss-GPU index for CUDA features when faiss has GPU support, a CPU index
            otherwise), ``"torch"`` (matmul + top-k on the features' device, ``chunk_size`` rows at a time)
            or ``"auto"`` (faiss, except torch for CUDA features when faiss has no GPU support).
        chunk_size: rows per block of the torch search; ``None`` for :func:`default_chunk_size`.

    Returns:
        ``[N, k]`` int64 neighbour indices, nearest first, on the features' device.
    """
    k = min(k, features.shape[0])
    if backend == "auto":
        backend = "torch" if features.is_cuda and not _faiss_has_gpu() else "faiss"
    if backend == "faiss":
        import faiss

        array = features.detach().float().cpu().contiguous().numpy()
        if features.is_cuda and _faiss_has_gpu():
            index = faiss.GpuIndexFlatL2(faiss.StandardGpuResources(), array.shape[1])
        else:
            index = faiss.IndexFlatL2(array.shape[1])
        index.add(array)
        _, neighbours = index.search(array, k)
        return torch.from_numpy(neighbours).to(features.device)
    if backend != "torch":
        raise ValueError(f"backend must be 'auto', 'faiss' or 'torch', got {backend!r}")
    squared = features.pow(2).sum(dim=1)
    rows = chunk_size or default_chunk_size(features.shape[0], features.device)
    neighbours = torch.empty((features.shape[0], k), dtype=torch.int64, device=features.device)
    for start in range(0, features.shape[0], rows):
        block = features[start : start + rows]
        dist = (squared[start : start + rows, None] + squared).addmm_(block, features.t(), alpha=-2)
        neighbours[start : start + rows] = dist.topk(k, dim=1, largest=False).indices
    return neighbours


def _faiss_has_gpu() -> bool:
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


@dataclasses.dataclass
class _SparseRows:
    """A sparse ``[R, N]`` float32 matrix in compressed-row form (columns ascending within a row).

    Attributes:
        ptr: ``[R + 1]`` int64 row offsets into ``col``/``val``.
        col: ``[nnz]`` int64 column indices.
        val: ``[nnz]`` float32 values.
    """

    ptr: torch.Tensor
    col: torch.Tensor
    val: torch.Tensor

    @classmethod
    def from_sorted(cls, row: torch.Tensor, col: torch.Tensor, val: torch.Tensor, num_rows: int) -> "_SparseRows":
        """Builds the matrix from entries sorted by (row, column).

        Args:
            row: ``[nnz]`` int64 row of each entry.
            col: ``[nnz]`` int64 column of each entry.
            val: ``[nnz]`` float32 value of each entry.
            num_rows: R.

        Returns:
            The matrix.
        """
        ptr = torch.zeros(num_rows + 1, dtype=torch.int64, device=row.device)
        ptr[1:] = torch.bincount(row, minlength=num_rows).cumsum(0)
        return cls(ptr, col, val)

    def expand(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Entries of the given rows, row after row.

        Args:
            rows: ``[m]`` int64 row indices (repeats allowed).

        Returns:
            ``(source, position)``, each ``[sum of the rows' lengths]`` int64: which of ``rows`` an entry
            belongs to, and its position in ``col``/``val``.
        """
        starts = self.ptr[rows]
        lengths = self.ptr[rows + 1] - starts
        source = torch.repeat_interleave(torch.arange(rows.numel(), device=rows.device), lengths)
        first = torch.cumsum(lengths, 0) - lengths
        position = starts[source] + torch.arange(source.numel(), device=rows.device) - first[source]
        return source, position


class SparseJaccard:
    """k-reciprocal Jaccard distances between queries and gallery, served one query chunk at a time.

    Args:
        features: ``[Q + G, D]`` float32 query then gallery features (L2-normalised for the cosine metric,
            as FastReID does).
        num_query: Q.
        k1: neighbours of the k-reciprocal sets.
        k2: neighbours averaged by the local query expansion (1 disables it).
        backend: nearest-neighbour search, see :func:`knn`.
        chunk_size: rows per block of the torch search; ``None`` for :func:`default_chunk_size`.
    """

    def __init__(
        self,
        features: torch.Tensor,
        num_query: int,
        k1: int = 20,
        k2: int = 6,
        backend: str = "auto",
        chunk_size: Optional[int] = None,
    ):
        num = features.shape[0]
        self.num_query = num_query
        self.num_gallery = num - num_query
        neighbours = knn(features, k1, backend, chunk_size)
        weights = _reciprocal_weights(features, neighbours, half=int(round(k1 / 2)) + 1)
        if k2 != 1:
            weights = _neighbour_mean(weights, neighbours[:, :k2])
        query_end = int(weights.ptr[num_query])
        self._query = _SparseRows(weights.ptr[: num_query + 1], weights.col[:query_end], weights.val[:query_end])
        self._gallery_by_column = _gallery_columns(weights, num_query, num)

    def __call__(self, start: int, end: int) -> torch.Tensor:
        """Jaccard distances of queries ``start:end`` to the whole gallery.

        Args:
            start: first query.
            end: one past the last query.

        Returns:
            ``[end - start, G]`` float32 distances in ``[0, 1]``.
        """
        ptr, col, val = self._query.ptr, self._query.col, self._query.val
        entries = torch.arange(int(ptr[start]), int(ptr[end]), device=col.device)
        lengths = ptr[start + 1 : end + 1] - ptr[start:end]
        entry_row = torch.repeat_interleave(torch.arange(end - start, device=col.device), lengths)
        columns = self._gallery_by_column
        pairs = columns.ptr[col[entries] + 1] - columns.ptr[col[entries]]
        overlap = torch.zeros((end - start) * self.num_gallery, dtype=torch.float32, device=col.device)
        # Entries in row order, each row's columns ascending: min() terms are summed in FastReID's order.
        for batch in _batches(pairs, _PAIR_ELEMENTS):
            source, position = columns.expand(col[entries[batch]])
            target = entry_row[batch][source] * self.num_gallery + columns.col[position]
            overlap.index_add_(0, target, torch.minimum(val[entries[batch]][source], columns.val[position]))
        overlap = overlap.view(end - start, self.num_gallery)
        return (1 - overlap / (2.0 - overlap)).clamp_(min=0.0)


def _batches(sizes: torch.Tensor, budget: int) -> list[torch.Tensor]:
    """Splits consecutive items into ranges whose ``sizes`` sum to at most ``budget`` (or one item).

    Args:
        sizes: ``[m]`` int64 work per item.
        budget: work per range.

    Returns:
        ``arange`` index tensors covering ``0..m-1`` in order.
    """
    ends = torch.cumsum(sizes, 0)
    ranges, start = [], 0
    while start < sizes.numel():
        done = int(ends[start - 1]) if start else 0
        stop = max(start + 1, int(torch.searchsorted(ends, done + budget, right=True)))
        ranges.append(torch.arange(start, stop, device=sizes.device))
        start = stop
    return ranges


def _reciprocal_sets(neighbours: torch.Tensor, k: int) -> torch.Tensor:
    """k-reciprocal neighbours: ``j`` in the first ``k`` neighbours of ``i`` and ``i`` in those of ``j``.

    Args:
        neighbours: ``[N, K]`` int64 nearest-first neighbour lists.
        k: list length used (at most K).

    Returns:
        ``[N, k]`` int64: the neighbour where reciprocal, -1 elsewhere.
    """
    forward = neighbours[:, :k]
    rows_per_block = max(1, _BUILD_ELEMENTS // (k * k))
    out = torch.empty_like(forward)
    for start in range(0, forward.shape[0], rows_per_block):
        block = forward[start : start + rows_per_block]
        rows = torch.arange(start, start + block.shape[0], device=block.device)
        mutual = (forward[block] == rows[:, None, None]).any(dim=2)
        out[start : start + rows_per_block] = block.masked_fill(~mutual, -1)
    return out


def _reciprocal_weights(features: torch.Tensor, neighbours: torch.Tensor, half: int) -> _SparseRows:
    """Rows ``V[i]``: softmax of minus squared distances over the expanded k-reciprocal set of ``i``.

    Args:
        features: ``[N, D]`` float32 features.
        neighbours: ``[N, k1]`` int64 nearest-first neighbours.
        half: list length of the candidates' own reciprocal sets (``round(k1 / 2) + 1``, at most k1).

    Returns:
        ``[N, N]`` sparse rows.
    """
    num, k1 = neighbours.shape
    full = _reciprocal_sets(neighbours, k1)
    candidate_sets = _reciprocal_sets(neighbours, min(half, k1))
    rows_per_block = max(1, _BUILD_ELEMENTS // (k1 * k1 * candidate_sets.shape[1]))
    rows, cols = [], []
    for start in range(0, num, rows_per_block):
        own = full[start : start + rows_per_block]  # [n, k1]
        sets = candidate_sets[own.clamp(min=0)].masked_fill_(own[:, :, None] < 0, -1)  # [n, k1, h]
        present = sets >= 0
        shared = ((sets[..., None] == own[:, None, None, :]).any(dim=3) & present).sum(dim=2)
        accepted = 3 * shared > 2 * present.sum(dim=2)  # FastReID: |R'(j) & R(i)| > 2/3 |R'(j)|
        members = torch.cat([own, sets.masked_fill_(~accepted[..., None], -1).flatten(1)], dim=1)
        members = members.sort(dim=1).values
        unique = members >= 0
        unique[:, 1:] &= members[:, 1:] != members[:, :-1]
        row, slot = torch.nonzero(unique, as_tuple=True)
        rows.append(row + start)
        cols.append(members[row, slot])
    row, col = torch.cat(rows), torch.cat(cols)

    squared = features.pow(2).sum(dim=1)
    dist = torch.empty(row.numel(), device=features.device)
    step = max(1, _BUILD_ELEMENTS // features.shape[1])
    for start in range(0, row.numel(), step):
        r, c = row[start : start + step], col[start : start + step]
        dist[start : start + step] = squared[r] + squared[c] - 2 * (features[r] * features[c]).sum(dim=1)
    logits = -dist
    row_max = torch.full((num,), float("-inf"), device=dist.device).scatter_reduce_(0, row, logits, reduce="amax")
    exp = torch.exp(logits - row_max[row])
    total = torch.zeros(num, device=dist.device).index_add_(0, row, exp)
    return _SparseRows.from_sorted(row, col, exp / total[row], num)


def _neighbour_mean(weights: _SparseRows, neighbours: torch.Tensor) -> _SparseRows:
    """Local query expansion: row ``i`` becomes the mean of the rows of its ``k2`` nearest neighbours.

    Args:
        weights: ``[N, N]`` sparse rows.
        neighbours: ``[N, k2]`` int64 nearest-first neighbours (the row itself first).

    Returns:
        ``[N, N]`` sparse rows.
    """
    num, k2 = neighbours.shape
    lengths = (weights.ptr[1:] - weights.ptr[:-1])[neighbours].sum(dim=1)
    rows, cols, vals = [], [], []
    for batch in _batches(lengths, _BUILD_ELEMENTS):
        source, position = weights.expand(neighbours[batch].flatten())
        row = batch[source // k2]
        # A stable sort keeps, for each (row, column), the contributions in neighbour order, as FastReID sums them.
        key, order = torch.sort(row * num + weights.col[position], stable=True)
        unique_key, inverse = torch.unique_consecutive(key, return_inverse=True)
        total = torch.zeros(unique_key.numel(), device=key.device).index_add_(0, inverse, weights.val[position][order])
        rows.append(unique_key // num)
        cols.append(unique_key % num)
        vals.append(total / k2)
    return _SparseRows.from_sorted(torch.cat(rows), torch.cat(cols), torch.cat(vals), num)


def _gallery_columns(weights: _SparseRows, num_query: int, num: int) -> _SparseRows:
    """The gallery rows of ``V`` indexed by column: row ``c`` lists (gallery item, value) pairs of column c.

    Args:
        weights: ``[N, N]`` sparse rows.
        num_query: Q; rows from Q on are gallery items.
        num: N.

    Returns:
        ``[N, G]`` sparse rows of the transposed gallery block.
    """
    start = int(weights.ptr[num_query])
    lengths = weights.ptr[num_query + 1 :] - weights.ptr[num_query:-1]
    gallery_row = torch.repeat_interleave(torch.arange(num - num_query, device=lengths.device), lengths)
    col = weights.col[start:]
    order = torch.sort(col, stable=True).indices  # gallery rows stay ascending within a column
    return _SparseRows.from_sorted(col[order], gallery_row[order], weights.val[start:][order], num)


def reranked_distance(
    query: torch.Tensor,
    gallery: torch.Tensor,
    metric: str = "cosine",
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    backend: str = "auto",
    chunk_size: Optional[int] = None,
    normalized: bool = False,
) -> DistanceFn:
    """FastReID's re-ranked distance ``(1 - lambda) * jaccard + lambda * original``, one query chunk at a time.

    Args:
        query: ``[Q, D]`` float32 query features.
        gallery: ``[G, D]`` float32 gallery features, on the same device.
        metric: original distance, ``"cosine"`` or ``"euclidean"``; for cosine the Jaccard distance is
            built on L2-normalised features.
        k1: neighbours of the k-reciprocal sets.
        k2: neighbours of the local query expansion.
        lambda_value: weight of the original distance.
        backend: nearest-neighbour search, see :func:`knn`.
        chunk_size: rows per block of the torch search; ``None`` for :func:`default_chunk_size`.
        normalized: for ``"cosine"``, the features are already ``F.normalize``-d.

    Returns:
        A :data:`~fastreid_clip.evaluation.ranking.DistanceFn` of ``[end - start, G]`` float32 distances.
    """
    original = feature_distance(query, gallery, metric, normalized, reuse_output=True)
    features = torch.cat([query, gallery])
    if metric == "cosine" and not normalized:
        features = F.normalize(features, p=2, dim=1)
    jaccard = SparseJaccard(features, query.shape[0], k1, k2, backend, chunk_size)
    del features

    def distance(start: int, end: int) -> torch.Tensor:
        return jaccard(start, end).mul_(1 - lambda_value).add_(original(start, end).mul_(lambda_value))

    return distance


def average_query_expansion(
    query: torch.Tensor,
    gallery: torch.Tensor,
    qe_times: int = 1,
    qe_k: int = 10,
    alpha: float = 3.0,
    chunk_size: Optional[int] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """FastReID's ``aqe``: each feature becomes the similarity-weighted mean of its ``qe_k`` nearest features.

    Weights are cosine similarities raised to ``alpha``; the mean is over raw (not normalised) features, and
    the whole is repeated ``qe_times`` times, as in FastReID, but one row chunk of the similarity matrix at a
    time.

    Args:
        query: ``[Q, D]`` float32 query features.
        gallery: ``[G, D]`` float32 gallery features, on the same device.
        qe_times: number of expansion rounds.
        qe_k: neighbours averaged (the feature itself included).
        alpha: exponent of the similarity weights.
        chunk_size: rows per chunk; ``None`` for :func:`default_chunk_size`.

    Returns:
        ``([Q, D], [G, D])`` expanded query and gallery features.
    """
    features = torch.cat([query, gallery])
    rows = chunk_size or default_chunk_size(features.shape[0], features.device)
    for _ in range(qe_times):
        normalized_t = F.normalize(features, p=2, dim=1).t()
        expanded = torch.empty_like(features)
        for start in range(0, features.shape[0], rows):
            sims = torch.mm(F.normalize(features[start : start + rows], p=2, dim=1), normalized_t)
            weights, neighbours = sims.topk(qe_k, dim=1)
            expanded[start : start + rows] = (features[neighbours] * weights.pow(alpha)[..., None]).mean(dim=1)
        features = expanded
    return features[: query.shape[0]], features[query.shape[0] :]
