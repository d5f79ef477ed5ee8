"""Exact CMC / mAP / mINP of a query set against a gallery, one query chunk at a time.

FastReID's ``evaluate_rank`` materialises the whole ``Q x G`` distance matrix and its full argsort. Here a
query chunk of ``C`` rows is ranked against the whole gallery and dropped before the next one, so memory is
``O(C * G)`` whatever ``Q`` is, and the same code runs on the CPU and on CUDA (wherever the distances are).

No row is sorted. Average precision, CMC and INP only need the rank of every *positive* gallery item (same
identity, different camera), and the rank of a positive is one plus the number of kept gallery items that
come before it. Per chunk:

1. the positives of each query are read from the gallery grouped by identity (``C x P`` entries);
2. every gallery item that can precede some positive (distance <= the query's last positive) is a
   candidate; items of the query's own identity are never counted (they are positives or removed);
3. each candidate is located among the sorted positives of its row, and a per-row histogram of those
   locations gives, for each positive, the number of negatives ranked before it.

Steps 2-3 run as one compiled pass over the chunk on the CPU (``candidate_scan.pyx``, when built) and as torch
operations otherwise (a mask, ``nonzero``, one ``searchsorted`` over packed ``(row, distance, gallery index)``
integer keys); both give the same histogram. For the cosine metric the chunk holds the similarities, and
only positives and candidates are turned into distances (:class:`_CosineDistance`).

Order and ties. The gallery is ranked by ascending distance, and items at exactly the same float32 distance
by ascending gallery index: the order of a *stable* sort of each distance row. FastReID argsorts with
NumPy's default (unstable) sort, so with exact ties its metrics can differ from ours in the last digits;
without ties, and ranking the same distances, they are equal up to FastReID's float32 arithmetic (its AP is
a float32 mean). Distances are compared in float32, as FastReID's Cython ranker does. Our distances are
FastReID's formulas but other matrix products than its one ``Q x G`` product (see :func:`feature_distance`),
a few float32 ulps apart on some CPUs; items closer than that may be ranked in another order than FastReID's.

Protocols. Market-1501 (default): gallery items with the query's identity *and* camera are removed; queries
with no remaining positive are skipped (they do not count towards any metric). CUHK03 single-gallery-shot
(``cuhk03=True``): mAP and mINP as above, CMC averaged over ``cuhk03_repeats`` draws of one random kept image
per gallery identity; FastReID does the same with ``np.random`` (10 draws), we draw from a seeded
``torch.Generator``, so the two CMC estimates agree in expectation, not digit for digit.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
from typing import Callable, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "DistanceFn",
    "RankingResult",
    "default_chunk_size",
    "evaluate_rank_chunked",
    "evaluate_rank_from_distances",
    "feature_distance",
    "normalize_",
]

ArrayLike = Union[np.ndarray, torch.Tensor]
DistanceFn = Callable[[int, int], torch.Tensor]
"""``fn(start, end) -> Tensor[end - start, G]``: distances of queries ``start:end`` to the whole gallery.

A distance function may also have a ``similarity(start, end)`` method returning the cosine similarities ``s``
of the distances ``1 - s`` (as :func:`feature_distance` does for ``"cosine"``); ranking then uses it."""

# Distance-matrix elements per chunk when no chunk size is given (64 MiB of float32 on the CPU). The CPU
# product re-packs the whole gallery for every chunk, so chunks of a few hundred rows are much faster than
# chunks of a hundred; the distance buffer itself is allocated once (``feature_distance(reuse_output=True)``).
_CPU_CHUNK_ELEMENTS = 1 << 24
_CPU_MASK_ELEMENTS = 1 << 21
_CPU_GEMM_COLUMNS = 4096
_SIMILARITY_MARGIN = 2.0**-20

try:  # compiled CPU candidate search (python -m fastreid_clip.utils.build_kernels); torch ops otherwise
    from . import candidate_scan as _candidate_scan
except ImportError:  # pragma: no cover - depends on the build
    _candidate_scan = None
_POOLS: dict[int, concurrent.futures.ThreadPoolExecutor] = {}  # by number of workers
os.register_at_fork(after_in_child=_POOLS.clear)  # a forked child has none of the parent's threads
_CUDA_CHUNK_ELEMENTS = 1 << 27
_INT64_MAX = torch.iinfo(torch.int64).max


@dataclasses.dataclass
class RankingResult:
    """Retrieval metrics of one evaluation, as fractions (FastReID's ``evaluate_rank`` units).

    Attributes:
        cmc: ``[min(max_rank, G)]`` float64; ``cmc[r - 1]`` is the Rank-r accuracy over valid queries.
        all_ap: ``[num_valid]`` float64 average precision of each valid query, in query order.
        all_inp: ``[num_valid]`` float64 inverse negative penalty of each valid query, in query order.
        valid: ``[Q]`` bool; True for queries with at least one positive left after the camera filter.
    """

    cmc: np.ndarray
    all_ap: np.ndarray
    all_inp: np.ndarray
    valid: np.ndarray

    @property
    def mAP(self) -> float:  # noqa: N802 (the field name of the metric)
        return float(self.all_ap.mean())

    @property
    def mINP(self) -> float:  # noqa: N802
        return float(self.all_inp.mean())

    @property
    def num_valid(self) -> int:
        return int(self.valid.sum())


def default_chunk_size(num_gallery: int, device: Union[str, torch.device]) -> int:
    """Queries per chunk when none is configured: about 4M distances on the CPU, 128M on CUDA.

    Args:
        num_gallery: G, the number of gallery items.
        device: where the distances are computed.

    Returns:
        Number of query rows per chunk (at least 1).
    """
    budget = _CUDA_CHUNK_ELEMENTS if torch.device(device).type == "cuda" else _CPU_CHUNK_ELEMENTS
    return max(1, budget // max(1, num_gallery))


def feature_distance(
    query: torch.Tensor,
    gallery: torch.Tensor,
    metric: str = "cosine",
    normalized: bool = False,
    reuse_output: bool = False,
) -> DistanceFn:
    """Query-chunk distances with the formulas of FastReID's ``build_dist``, in float32.

    The products are a query chunk at a time and, on the CPU, ``_CPU_GEMM_COLUMNS`` gallery items at a time,
    where ``build_dist`` makes one ``Q x G`` product; a BLAS may sum each dot product in another order for
    another shape. So the distances equal ``build_dist``'s to within a few float32 ulps of the magnitude summed
    (1 for cosine, ``|q|^2 + |g|^2`` for Euclidean): the tests found them bit-identical on the Intel Xeon the
    project was developed on and up to 4 ulps apart on an AMD EPYC; they allow ``4 * D`` ulps (``D`` the
    feature dimension).

    Args:
        query: ``[Q, D]`` float32 query features.
        gallery: ``[G, D]`` float32 gallery features, on the same device.
        metric: ``"cosine"`` (``1 - cos``, features L2-normalised) or ``"euclidean"`` (squared distance).
        normalized: for ``"cosine"``, the features are already ``F.normalize``-d (e.g. by
            :func:`normalize_`), which saves a normalised copy of the gallery.
        reuse_output: write every chunk into one buffer, allocated at the first (largest) chunk, so the
            returned tensor is only valid until the next call. A chunk of distances is too large for the
            allocator to recycle, so without it every chunk's memory is mapped and zero-filled anew
            (about a quarter of the time of the product itself on the CPU).

    Returns:
        A :data:`DistanceFn` returning ``[end - start, G]`` float32 distances on the features' device.
    """
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
    buffer: list[torch.Tensor] = []

    def output(rows: int) -> torch.Tensor:
        if not reuse_output:
            return torch.empty(rows, gallery.shape[0], dtype=torch.float32, device=gallery.device)
        if not buffer or buffer[0].shape[0] < rows:
            buffer[:] = [torch.empty(rows, gallery.shape[0], dtype=torch.float32, device=gallery.device)]
        return buffer[0][:rows]

    if metric == "cosine":
        return _CosineDistance(query, gallery if normalized else F.normalize(gallery, p=2, dim=1), normalized, output)

    gallery_t = gallery.t()
    gallery_sq = gallery.pow(2).sum(dim=1)
    block = _gemm_columns(gallery)

    def euclidean(start: int, end: int) -> torch.Tensor:
        chunk = query[start:end]
        dist = torch.add(chunk.pow(2).sum(dim=1, keepdim=True), gallery_sq, out=output(len(chunk)))
        for col in range(0, dist.shape[1], block):
            dist[:, col : col + block].addmm_(chunk, gallery_t[:, col : col + block], beta=1, alpha=-2)
        return dist

    return euclidean


def _gemm_columns(gallery: torch.Tensor) -> int:
    """Gallery items per matrix product. On the CPU, BLAS packs the whole right-hand matrix for every call and
    its packing memory grows with it; blocks of a few thousand items keep that small at the same speed."""
    return _CPU_GEMM_COLUMNS if gallery.device.type != "cuda" else max(1, gallery.shape[0])


class _CosineDistance:
    """:data:`DistanceFn` of ``1 - cos``, which also hands out the cosine similarities themselves.

    Ranking asks for :meth:`similarity` when it can: it then turns into distances only the few entries it
    needs (positives and candidates), with FastReID's float32 ``1 - cos``, instead of a pass over the chunk.

    Args:
        query: ``[Q, D]`` query features.
        gallery: ``[G, D]`` L2-normalised gallery features.
        normalized: the query features are already normalised.
        output: ``output(rows)`` gives the ``[rows, G]`` float32 tensor to write a chunk into.
    """

    def __init__(self, query: torch.Tensor, gallery: torch.Tensor, normalized: bool, output: Callable):
        self.query = query
        self.gallery_t = gallery.t()
        self.normalized = normalized
        self.output = output
        self.block = _gemm_columns(gallery)
        self.one = torch.ones((), dtype=torch.float32, device=gallery.device)

    def similarity(self, start: int, end: int) -> torch.Tensor:
        """``[end - start, G]`` float32 cosine similarities of queries ``start:end``."""
        chunk = self.query[start:end] if self.normalized else F.normalize(self.query[start:end], p=2, dim=1)
        sims = self.output(len(chunk))
        for col in range(0, sims.shape[1], self.block):
            torch.mm(chunk, self.gallery_t[:, col : col + self.block], out=sims[:, col : col + self.block])
        return sims

    def __call__(self, start: int, end: int) -> torch.Tensor:
        sims = self.similarity(start, end)
        return torch.sub(self.one, sims, out=sims)  # 1 - cos, in place


def normalize_(features: torch.Tensor) -> torch.Tensor:
    """L2-normalises rows in place with the operations of ``F.normalize(features, p=2, dim=1)`` (same bits).

    Args:
        features: ``[N, D]`` float32 features, overwritten.

    Returns:
        ``features``.
    """
    return features.div_(features.norm(p=2, dim=1, keepdim=True).clamp_min_(1e-12))


def evaluate_rank_chunked(
    query_feats: ArrayLike,
    gallery_feats: ArrayLike,
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_camids: ArrayLike,
    g_camids: ArrayLike,
    metric: str = "cosine",
    max_rank: int = 50,
    chunk_size: Optional[int] = None,
    cuhk03: bool = False,
    cuhk03_repeats: int = 10,
    seed: int = 0,
) -> RankingResult:
    """Ranks features chunk by chunk on their device; FastReID's ``build_dist`` + ``evaluate_rank``.

    Args:
        query_feats: ``[Q, D]`` query features (tensor on any device, or array for the CPU).
        gallery_feats: ``[G, D]`` gallery features, on the same device.
        q_pids: ``[Q]`` query identities.
        g_pids: ``[G]`` gallery identities.
        q_camids: ``[Q]`` query cameras.
        g_camids: ``[G]`` gallery cameras.
        metric: ``"cosine"`` or ``"euclidean"``, see :func:`feature_distance`.
        max_rank: longest CMC rank reported (capped at G).
        chunk_size: queries per chunk; ``None`` for :func:`default_chunk_size`.
        cuhk03: use the CUHK03 single-gallery-shot CMC.
        cuhk03_repeats: random gallery draws averaged by the CUHK03 CMC.
        seed: seed of those draws.

    Returns:
        The :class:`RankingResult`.
    """
    query = torch.as_tensor(query_feats).detach().float()
    gallery = torch.as_tensor(gallery_feats).detach().float().to(query.device)
    return evaluate_rank_from_distances(
        feature_distance(query, gallery, metric, reuse_output=True), q_pids, g_pids, q_camids, g_camids,
        max_rank=max_rank, chunk_size=chunk_size, cuhk03=cuhk03, cuhk03_repeats=cuhk03_repeats, seed=seed,
        device=query.device,
    )


def evaluate_rank_from_distances(
    distance_fn: DistanceFn,
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_camids: ArrayLike,
    g_camids: ArrayLike,
    max_rank: int = 50,
    chunk_size: Optional[int] = None,
    cuhk03: bool = False,
    cuhk03_repeats: int = 10,
    seed: int = 0,
    device: Union[str, torch.device, None] = None,
) -> RankingResult:
    """Ranks the gallery for every query, asking ``distance_fn`` for one query chunk at a time.

    Args:
        distance_fn: gives ``[end - start, G]`` distances (e.g. :func:`feature_distance`, or re-ranked ones).
        q_pids: ``[Q]`` query identities.
        g_pids: ``[G]`` gallery identities.
        q_camids: ``[Q]`` query cameras.
        g_camids: ``[G]`` gallery cameras.
        max_rank: longest CMC rank reported (capped at G).
        chunk_size: queries per chunk; ``None`` for :func:`default_chunk_size`. Working memory is what
            ``distance_fn`` needs for a chunk (4 bytes per distance for :func:`feature_distance`) plus, for
            the torch candidate search only, a mask block and about 50 bytes per candidate of it (a negative
            ranked before the query's last positive: few with a useful model, all in the worst case).
        cuhk03: use the CUHK03 single-gallery-shot CMC.
        cuhk03_repeats: random gallery draws averaged by the CUHK03 CMC.
        seed: seed of those draws.
        device: where ranking runs; ``None`` for the device of ``q_pids`` (the CPU for arrays).

    Returns:
        The :class:`RankingResult`.

    Raises:
        ValueError: if no query has a positive in the gallery.
    """
    if device is None:
        device = q_pids.device if isinstance(q_pids, torch.Tensor) else torch.device("cpu")
    q_pids, g_pids, q_camids, g_camids = (
        torch.as_tensor(ids).to(device=device, dtype=torch.int64) for ids in (q_pids, g_pids, q_camids, g_camids)
    )
    gallery = _Gallery(g_pids, g_camids)
    num_query = q_pids.numel()
    max_rank = min(max_rank, gallery.size)
    chunk = min(chunk_size or default_chunk_size(gallery.size, device), gallery.max_rows)
    generator = torch.Generator(device=device).manual_seed(seed) if cuhk03 else None

    # Outputs are allocated once: small tensors kept alive between chunks would fragment the CPU heap, and
    # the next chunk's large temporaries could then not reuse the memory freed by the previous chunk.
    cmc_counts = torch.zeros(max_rank, dtype=torch.float64, device=device)
    all_ap = torch.empty(num_query, dtype=torch.float64, device=device)
    all_inp = torch.empty(num_query, dtype=torch.float64, device=device)
    valid = torch.empty(num_query, dtype=torch.bool, device=device)
    # Scratch mask of the torch candidate search (CUDA, or a CPU without the compiled scan), reused by every
    # chunk. On the CPU it covers a few rows at a time: small enough to stay in memory the allocator recycles
    # (mapping fresh memory for every chunk costs as much as the comparison filling it).
    mask = None
    if not _compiled_scan(device):
        mask_rows = min(chunk, num_query)
        if torch.device(device).type != "cuda":
            mask_rows = min(mask_rows, max(1, _CPU_MASK_ELEMENTS // gallery.size))
        mask = torch.empty(mask_rows, gallery.size, dtype=torch.bool, device=device)
    # Cosine distances are ranked from the similarities (see _CosineDistance), except for CUHK03's CMC,
    # which compares whole rows.
    similarity = None if cuhk03 else getattr(distance_fn, "similarity", None)
    for start in range(0, num_query, chunk):
        end = min(start + chunk, num_query)
        pos = gallery.positives(q_pids[start:end], q_camids[start:end])
        if similarity is not None:
            dist = similarity(start, end).to(device=device, dtype=torch.float32).contiguous()
            pos_dist = torch.rsub(dist.gather(1, pos.index), 1.0)
        else:
            dist = distance_fn(start, end).to(device=device, dtype=torch.float32).contiguous()
            pos_dist = dist.gather(1, pos.index)
        ranks = _positive_ranks(dist, pos, pos_dist, gallery, mask, similarity is not None)
        has_pos = pos.count > 0
        all_ap[start:end], all_inp[start:end] = _ap_inp(ranks, pos.count)
        valid[start:end] = has_pos
        if cuhk03:
            cmc_counts += _single_shot_cmc(
                dist, pos, pos_dist, q_pids[start:end], gallery, max_rank, cuhk03_repeats, generator
            )
        elif bool(has_pos.any()):
            cmc_counts += _first_hit_cmc(ranks[has_pos, 0], max_rank)

    num_valid = int(valid.sum())
    if num_valid == 0:
        raise ValueError("no query identity has a positive in the gallery")
    return RankingResult(
        cmc=(cmc_counts / num_valid).cpu().numpy(),
        all_ap=all_ap[valid].cpu().numpy(),
        all_inp=all_inp[valid].cpu().numpy(),
        valid=valid.cpu().numpy(),
    )


@dataclasses.dataclass
class _Positives:
    """The gallery items of each query's identity, padded to ``P`` (the largest such group in the chunk).

    Attributes:
        index: ``[C, P]`` int64 gallery indices (padding repeats a valid index).
        kept: ``[C, P]`` bool; same identity, other camera: the positives.
        removed: ``[C, P]`` bool; same identity, same camera: excluded from the ranking.
        count: ``[C]`` int64 number of positives.
        group: ``[C]`` int64 identity group of each query in the gallery (``-1``: identity not in it).
    """

    index: torch.Tensor
    kept: torch.Tensor
    removed: torch.Tensor
    count: torch.Tensor
    group: torch.Tensor


class _Gallery:
    """Gallery identities and cameras, grouped by identity for fast positive look-up.

    Args:
        pids: ``[G]`` int64 identities.
        camids: ``[G]`` int64 cameras.
    """

    def __init__(self, pids: torch.Tensor, camids: torch.Tensor):
        if pids.numel() == 0:
            raise ValueError("the gallery is empty")
        self.pids = pids
        self.camids = camids
        self.size = pids.numel()
        self.order = torch.argsort(pids, stable=True)
        self.group_pids, self.group_sizes = torch.unique_consecutive(pids[self.order], return_counts=True)
        self.group_starts = torch.cumsum(self.group_sizes, 0) - self.group_sizes
        self.identity = torch.searchsorted(self.group_pids, pids)  # [G] dense identity id
        # Packed sort keys hold (row, float32 distance, gallery index) in 63 bits.
        self.index_bits = max(1, (self.size - 1).bit_length())
        self.max_rows = 1 << (31 - self.index_bits)

    def positives(self, q_pids: torch.Tensor, q_camids: torch.Tensor) -> _Positives:
        """Positives and removed items of each query.

        Args:
            q_pids: ``[C]`` query identities.
            q_camids: ``[C]`` query cameras.

        Returns:
            The queries' :class:`_Positives`.
        """
        group = torch.searchsorted(self.group_pids, q_pids).clamp_(max=self.group_pids.numel() - 1)
        present = self.group_pids[group] == q_pids
        sizes = torch.where(present, self.group_sizes[group], 0)
        width = int(sizes.max()) if sizes.numel() else 0
        offsets = torch.arange(width, device=q_pids.device)
        in_group = offsets < sizes[:, None]
        slots = (self.group_starts[group][:, None] + offsets).clamp_(max=self.size - 1)
        index = self.order[slots]
        same_cam = self.camids[index] == q_camids[:, None]
        kept = in_group & ~same_cam
        return _Positives(
            index=index, kept=kept, removed=in_group & same_cam, count=kept.sum(1), group=group.masked_fill_(~present, -1)
        )

    def sort_keys(self, dist: torch.Tensor, row: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Integer keys ordered like ``(row, distance, gallery index)``; unique per (row, item).

        Args:
            dist: float32 distances (any shape).
            row: int64 chunk rows, broadcastable to ``dist``.
            index: int64 gallery indices, broadcastable to ``dist``.

        Returns:
            int64 keys of the broadcast shape.
        """
        bits = (dist + 0.0).contiguous().view(torch.int32)  # + 0.0 turns -0.0 into 0.0
        ordered = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # float order == signed int order
        unsigned = ordered.to(torch.int64).add_(1 << 31)
        return unsigned.bitwise_left_shift_(self.index_bits).bitwise_or_(index).bitwise_or_(
            row << (32 + self.index_bits)
        )


def _positive_ranks(
    dist: torch.Tensor,
    pos: _Positives,
    pos_dist: torch.Tensor,
    gallery: _Gallery,
    mask: Optional[torch.Tensor] = None,
    similarities: bool = False,
) -> torch.Tensor:
    """1-based rank of each positive among the kept gallery, positives sorted by rank.

    Args:
        dist: ``[C, G]`` float32 distances of the chunk (not modified), or cosine similarities ``s`` of
            the distances ``1 - s`` if ``similarities``.
        pos: the chunk's :class:`_Positives` (``P`` columns).
        pos_dist: ``[C, P]`` float32 distances of ``pos.index``.
        gallery: the :class:`_Gallery` (``C`` must not exceed its ``max_rows``).
        mask: optional ``[R, G]`` bool scratch tensor, overwritten; candidates are then found ``R`` rows
            at a time (less memory). By default the whole chunk is done at once.
        similarities: ``dist`` holds cosine similarities.

    Returns:
        ``[C, P]`` int64; entry ``k`` of a row is the rank of its ``(k+1)``-th positive (valid for
        ``k < pos.count``).
    """
    num_rows, width = pos.index.shape
    if width == 0:
        return pos.index
    rows = torch.arange(num_rows, device=dist.device)
    pos_keys = gallery.sort_keys(pos_dist, rows[:, None], pos.index).masked_fill_(~pos.kept, _INT64_MAX)
    # Candidates: negatives at a distance <= the query's last positive.
    bound = pos_dist.masked_fill(~pos.kept, float("-inf")).amax(dim=1)
    if similarities:
        # fl(1 - s) <= last needs s >= 1 - last up to the rounding of both subtractions (< 2.4e-7 for cosine
        # distances, which are < 2); the margin takes a few more entries, which rank after the last positive.
        bound = torch.rsub(bound, 1.0).sub_(_SIMILARITY_MARGIN)
    if _compiled_scan(dist.device):
        hist = _scan_compiled(dist, pos, pos_dist, pos_keys, bound, gallery, similarities)
    else:
        hist = _scan_torch(dist, pos, pos_keys, bound, gallery, mask, similarities)
    negatives_before = hist.view(num_rows, width + 1)[:, :width].cumsum(dim=1)
    return negatives_before + torch.arange(width, device=dist.device) + 1


def _compiled_scan(device: Union[str, torch.device]) -> bool:
    """Whether candidates on ``device`` are searched by the compiled scan (CPU, when built)."""
    return _candidate_scan is not None and torch.device(device).type == "cpu"


def _scan_torch(
    dist: torch.Tensor,
    pos: _Positives,
    pos_keys: torch.Tensor,
    bound: torch.Tensor,
    gallery: _Gallery,
    mask: Optional[torch.Tensor],
    similarities: bool,
) -> torch.Tensor:
    """Candidate histogram with torch operations (any device): see :func:`_positive_ranks`.

    Returns:
        ``[C * (P + 1)]`` int64; bin ``r * (P + 1) + k`` counts row ``r``'s candidates after ``k`` positives.
    """
    num_rows, width = pos.index.shape
    rows = torch.arange(num_rows, device=dist.device)
    slot = torch.arange(width, device=dist.device)
    flat_keys = pos_keys.sort(dim=1).values[slot < pos.count[:, None]]  # row-major, hence globally sorted
    # Histogram bin of a candidate: its row's first bin plus the number of its row's positives before it.
    bin_shift = rows * (width + 1) - (torch.cumsum(pos.count, 0) - pos.count)
    hist = torch.zeros(num_rows * (width + 1), dtype=torch.int64, device=dist.device)

    # Items of the query's identity (positives and removed items, ``group_row`` / ``group_index``, sorted by
    # row) never count.
    group_row, group_slot = torch.nonzero(pos.kept | pos.removed, as_tuple=True)
    group_index = pos.index[group_row, group_slot]
    block = num_rows if mask is None else mask.shape[0]
    if block < num_rows:  # where each row block's group entries start
        bounds = torch.searchsorted(group_row, torch.arange(0, num_rows + block, block, device=dist.device)).tolist()
    else:
        bounds = [0, group_row.numel()]
    compare = torch.ge if similarities else torch.le
    flat_dist = dist.view(-1)
    for lo, first, stop in zip(range(0, num_rows, block), bounds, bounds[1:]):
        hi = min(lo + block, num_rows)
        below = compare(dist[lo:hi], bound[lo:hi, None], out=None if mask is None else mask[: hi - lo])
        below[group_row[first:stop] - lo, group_index[first:stop]] = False
        cand_row, cand_index = torch.nonzero(below, as_tuple=True)
        cand_row = cand_row + lo
        cand_dist = flat_dist[cand_row * dist.shape[1] + cand_index]
        if similarities:
            cand_dist = torch.rsub(cand_dist, 1.0)
        cand_keys = gallery.sort_keys(cand_dist, cand_row, cand_index)
        bins = torch.searchsorted(flat_keys, cand_keys).add_(bin_shift[cand_row])
        hist += torch.bincount(bins, minlength=hist.numel())
    return hist


def _scan_compiled(
    dist: torch.Tensor,
    pos: _Positives,
    pos_dist: torch.Tensor,
    pos_keys: torch.Tensor,
    bound: torch.Tensor,
    gallery: _Gallery,
    similarities: bool,
) -> torch.Tensor:
    """Candidate histogram with the compiled one-pass scan (CPU), rows split over torch's CPU threads.

    Returns:
        ``[C, P + 1]`` int64, laid out like :func:`_scan_torch`'s result.
    """
    num_rows, width = pos.index.shape
    order = pos_keys.argsort(dim=1)
    args = [
        dist.numpy(),
        similarities,
        bound.contiguous().numpy(),
        pos_dist.gather(1, order).numpy(),
        pos.index.gather(1, order).numpy(),
        pos.count.contiguous().numpy(),
        pos.group.contiguous().numpy(),
        gallery.identity.numpy(),
    ]
    hist = torch.zeros(num_rows, width + 1, dtype=torch.int64)
    args.append(hist.numpy())
    workers = max(1, min(torch.get_num_threads(), num_rows))
    edges = [num_rows * part // workers for part in range(workers + 1)]
    if workers == 1:
        _candidate_scan.count_negatives_before(*args, 0, num_rows)
    else:  # the scan releases the GIL, so threads run it in parallel
        pool = _scan_pool(workers)
        list(pool.map(lambda span: _candidate_scan.count_negatives_before(*args, *span), zip(edges, edges[1:])))
    return hist


def _scan_pool(workers: int) -> concurrent.futures.ThreadPoolExecutor:
    if workers not in _POOLS:
        _POOLS[workers] = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="candidate_scan")
    return _POOLS[workers]


def _ap_inp(ranks: torch.Tensor, count: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Average precision and inverse negative penalty from the sorted ranks of the positives.

    Args:
        ranks: ``[C, P]`` int64 ranks from :func:`_positive_ranks`.
        count: ``[C]`` int64 number of positives per row.

    Returns:
        ``([C], [C])`` float64 AP and INP (NaN where ``count == 0``).
    """
    slot = torch.arange(ranks.shape[1], device=ranks.device)
    precision = (slot + 1).double() / ranks.double()
    precision = precision.masked_fill_(slot >= count[:, None], 0.0)
    n = count.double()
    ap = precision.sum(dim=1) / n
    if ranks.shape[1] == 0:
        return ap, ap.clone()
    last_rank = ranks.gather(1, (count - 1).clamp(min=0)[:, None])[:, 0]
    return ap, n / last_rank.double()


def _first_hit_cmc(first_rank: torch.Tensor, max_rank: int) -> torch.Tensor:
    """Per-rank hit counts: how many queries have their first positive at rank <= r.

    Args:
        first_rank: ``[V]`` int64 rank of the first positive of each valid query.
        max_rank: CMC length.

    Returns:
        ``[max_rank]`` float64 counts.
    """
    hits = torch.bincount((first_rank - 1).clamp(max=max_rank), minlength=max_rank + 1)[:max_rank]
    return hits.cumsum(0).double()


def _single_shot_cmc(
    dist: torch.Tensor,
    pos: _Positives,
    pos_dist: torch.Tensor,
    q_pids: torch.Tensor,
    gallery: _Gallery,
    max_rank: int,
    repeats: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """CUHK03 single-gallery-shot CMC counts: one random kept image per gallery identity, averaged.

    Args:
        dist: ``[C, G]`` float32 distances of the chunk.
        pos: the chunk's :class:`_Positives`.
        pos_dist: ``[C, P]`` float32 distances of ``pos.index``.
        q_pids: ``[C]`` query identities.
        gallery: the :class:`_Gallery`.
        max_rank: CMC length.
        repeats: number of random draws averaged.
        generator: source of the draws.

    Returns:
        ``[max_rank]`` float64 hit counts summed over valid queries (each query adds at most 1 per rank).
    """
    num_rows, size = dist.shape
    counts = torch.zeros(max_rank, dtype=torch.float64, device=dist.device)
    has_pos = pos.count > 0
    if not bool(has_pos.any()):
        return counts
    rows = torch.arange(num_rows, device=dist.device)
    index = torch.arange(size, device=dist.device)
    identity = gallery.identity.expand(num_rows, size)
    negative = gallery.pids != q_pids[:, None]
    removed_row, removed_slot = torch.nonzero(pos.removed, as_tuple=True)
    for _ in range(repeats):
        # A unique random key per (query, image); each identity's draw is its image with the largest key.
        draw = torch.randint(0, 1 << 31, (num_rows, size), generator=generator, device=dist.device)
        draw = (draw << gallery.index_bits) | index
        draw[removed_row, pos.index[removed_row, removed_slot]] = -1
        best = torch.full((num_rows, gallery.group_pids.numel()), -1, dtype=torch.int64, device=dist.device)
        best.scatter_reduce_(1, identity, draw, reduce="amax")
        drawn = draw == best.gather(1, identity)
        own_slot = (drawn.gather(1, pos.index) & pos.kept).to(torch.int8).argmax(dim=1)
        own = pos.index[rows, own_slot]
        own_dist = pos_dist[rows, own_slot][:, None]
        before = (dist < own_dist) | ((dist == own_dist) & (index < own[:, None]))
        rank = (before & drawn & negative).sum(dim=1)[has_pos]
        counts += _first_hit_cmc(rank + 1, max_rank)
    return counts / repeats
