"""``GalleryIndex``: faiss search over extracted gallery features (cosine = inner product of L2-normalised rows).

Kinds:

* ``flat`` (default): exact inner product (``IndexFlatIP``), the same top-k as a brute-force product;
* ``ivf``: ``IndexIVFFlat`` (k-means coarse quantiser, ``nlist`` lists, ``nprobe`` visited per query);
* ``hnsw``: ``IndexHNSWFlat`` (graph, ``M`` links, ``ef_search`` candidates per query; CPU only).

For the approximate kinds :meth:`GalleryIndex.build` measures recall@k against exact search on a sample of gallery
rows used as queries (each row's own match left out) and logs it (``index.recall``). With faiss-gpu and a GPU, flat
and IVF indexes search on the GPU (``device="auto"``). Gallery rows are identified by their position (0-based, in
the order they were added).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Optional, Tuple

import numpy as np

__all__ = ["GalleryIndex", "exact_topk", "recall_at_k"]

logger = logging.getLogger(__name__)

KINDS = ("flat", "ivf", "hnsw")
_BLOCK = 65536  # rows normalised and added per step (a memory-mapped gallery is read block by block)


def _faiss():
    try:
        import faiss
    except ImportError as err:  # pragma: no cover - faiss-cpu is a dependency of the cpu extra
        raise ImportError("GalleryIndex needs faiss: pip install faiss-cpu (or faiss-gpu-cu12)") from err
    return faiss


def _rows(x, normalize: bool) -> np.ndarray:
    """``[n, D]`` C-contiguous float32 (a copy when normalising)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {list(x.shape)}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if normalize:
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = x / np.maximum(norms, 1e-12)
    return x


def exact_topk(queries, gallery, k: int, normalize: bool = False,
               block: int = _BLOCK) -> Tuple[np.ndarray, np.ndarray]:
    """Brute-force ``(scores, ids)`` of the ``k`` largest inner products, best first (no faiss; the gallery is
    read, and normalised when ``normalize``, block by block)."""
    queries = _rows(queries, normalize)
    best_s = np.full((queries.shape[0], 0), -np.inf, np.float32)
    best_i = np.zeros((queries.shape[0], 0), np.int64)
    for start in range(0, gallery.shape[0], block):
        scores = queries @ _rows(gallery[start:start + block], normalize).T
        cand_s = np.concatenate([best_s, scores], axis=1)
        cand_i = np.concatenate([best_i, np.broadcast_to(np.arange(start, start + scores.shape[1]), scores.shape)],
                                axis=1)
        keep = min(k, cand_s.shape[1])
        top = np.argpartition(-cand_s, keep - 1, axis=1)[:, :keep]
        best_s, best_i = np.take_along_axis(cand_s, top, 1), np.take_along_axis(cand_i, top, 1)
    order = np.argsort(-best_s, axis=1, kind="stable")
    return np.take_along_axis(best_s, order, 1), np.take_along_axis(best_i, order, 1)


def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray, k: int) -> float:
    """Mean over queries of ``|approx top-k & exact top-k| / k``."""
    hits = [len(set(a[:k].tolist()) & set(e[:k].tolist())) for a, e in zip(approx_ids, exact_ids)]
    return float(np.mean(hits)) / k if hits else float("nan")


class GalleryIndex:
    """A faiss index over ``[N, D]`` gallery features.

    Args:
        dim: feature dimension ``D``.
        kind: ``flat`` (exact), ``ivf`` or ``hnsw``.
        normalize: L2-normalise gallery and query rows (cosine similarity); off for raw inner products.
        nlist: IVF lists (0: ``4 * sqrt(N)`` at the first :meth:`add`, at least 1, at most ``N / 39``).
        nprobe: IVF lists visited per query.
        hnsw_m: HNSW links per node.
        ef_construction, ef_search: HNSW candidate-list sizes at build and search time.
        device: ``cpu``, ``gpu`` or ``auto`` (GPU when faiss has GPU support and sees a GPU; not for HNSW).
        train_per_list: IVF k-means training rows per list (a random sample of the first :meth:`add`'s rows).
        kmeans_iters: IVF k-means iterations.
    """

    def __init__(self, dim: int, kind: str = "flat", *, normalize: bool = True, nlist: int = 0, nprobe: int = 16,
                 hnsw_m: int = 32, ef_construction: int = 80, ef_search: int = 128, device: str = "auto",
                 train_per_list: int = 64, kmeans_iters: int = 10):
        if kind not in KINDS:
            raise ValueError(f"index kind must be one of {', '.join(KINDS)}, got '{kind}'")
        if device not in ("cpu", "gpu", "auto"):
            raise ValueError(f"device must be cpu, gpu or auto, got '{device}'")
        self.dim, self.kind, self.normalize = int(dim), kind, bool(normalize)
        self.nlist, self.nprobe = int(nlist), int(nprobe)
        self.hnsw_m, self.ef_construction, self.ef_search = int(hnsw_m), int(ef_construction), int(ef_search)
        self.device = device
        self.train_per_list, self.kmeans_iters = int(train_per_list), int(kmeans_iters)
        self.recall: Optional[float] = None  # recall@k vs exact measured by build(), for approximate kinds
        self._index = None
        self._on_gpu = False
        self._gpu_resources = None

    # ------------------------------------------------------------------ building
    @classmethod
    def build(cls, gallery, kind: str = "flat", *, recall_k: int = 10, recall_queries: int = 1000, seed: int = 0,
              **kwargs) -> "GalleryIndex":
        """An index over ``gallery`` (``[N, D]`` array, memmap or tensor); for ``ivf``/``hnsw`` the recall@``recall_k``
        against exact search is measured on ``recall_queries`` gallery rows and logged (``index.recall``)."""
        dim = gallery.shape[1]
        index = cls(dim, kind, **kwargs)
        index.add(gallery)
        if kind != "flat" and recall_queries > 0 and index.size > recall_k + 1:
            index.recall = index.measure_recall(gallery, recall_k, recall_queries, seed)
            logger.info("GalleryIndex(%s): recall@%d vs exact search %.4f (%d gallery rows as queries)", kind,
                        recall_k, index.recall, min(recall_queries, index.size))
        return index

    def _make(self, sample: Optional[np.ndarray]):
        faiss = _faiss()
        metric = faiss.METRIC_INNER_PRODUCT
        if self.kind == "flat":
            index = faiss.IndexFlatIP(self.dim)
        elif self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, metric)
            index.hnsw.efConstruction = self.ef_construction
            index.hnsw.efSearch = self.ef_search
        else:
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(self.dim), self.dim, self.nlist, metric)
            index.cp.niter = self.kmeans_iters
            index.cp.min_points_per_centroid = 1  # a small sample is a deliberate choice (train_per_list)
            index.train(sample)
            index.nprobe = self.nprobe
        if self.kind != "hnsw" and self._use_gpu():
            index = self._to_gpu(index)
        return index

    def _to_gpu(self, index):
        """``index`` copied to GPU 0; its ``StandardGpuResources`` are kept on ``self`` for the index's lifetime."""
        faiss = _faiss()
        self._gpu_resources = faiss.StandardGpuResources()
        self._on_gpu = True
        return faiss.index_cpu_to_gpu(self._gpu_resources, 0, index)

    def _use_gpu(self) -> bool:
        faiss = _faiss()
        available = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
        if self.device == "gpu" and not available:
            raise RuntimeError("GalleryIndex(device='gpu'): this faiss has no GPU support or sees no GPU "
                               "(install faiss-gpu-cu12)")
        return available and self.device != "cpu"

    def add(self, gallery) -> None:
        """Append ``[n, D]`` rows (ids continue from :attr:`size`). An IVF index is trained at the first call,
        on ``train_per_list`` random rows per list of that call's rows."""
        n = gallery.shape[0]
        if gallery.ndim != 2 or gallery.shape[1] != self.dim:
            raise ValueError(f"expected [N, {self.dim}] features, got shape {list(gallery.shape)}")
        if self._index is None:
            sample = None
            if self.kind == "ivf":
                self.nlist = self.nlist or int(max(1, min(4 * np.sqrt(n), n // 39)))
                pick = np.sort(np.random.default_rng(0).permutation(n)[:min(n, self.train_per_list * self.nlist)])
                sample = _rows(np.asarray(gallery[pick]), self.normalize)
            self._index = self._make(sample)
        for start in range(0, n, _BLOCK):
            self._index.add(_rows(gallery[start:start + _BLOCK], self.normalize))

    @property
    def size(self) -> int:
        return 0 if self._index is None else int(self._index.ntotal)

    # ------------------------------------------------------------------ searching
    def search(self, queries, k: int = 10) -> Tuple[np.ndarray, np.ndarray]:
        """``(scores [Q, k] float32, ids [Q, k] int64)``, best first; ids of missing results are -1."""
        if self._index is None:
            raise RuntimeError("the index is empty: add() gallery features first")
        q = _rows(queries, self.normalize)
        if q.shape[1] != self.dim:
            raise ValueError(f"queries have dimension {q.shape[1]}, the index {self.dim}")
        scores, ids = self._index.search(q, int(k))
        return scores, ids.astype(np.int64)

    def measure_recall(self, gallery, k: int = 10, num_queries: int = 1000, seed: int = 0) -> float:
        """Recall@k of this index against exact search, with ``num_queries`` random gallery rows as queries (each
        query's own row left out of both result lists)."""
        n = gallery.shape[0]
        pick = np.sort(np.random.default_rng(seed).permutation(n)[:min(n, num_queries)])
        queries = _rows(np.asarray(gallery[pick]), self.normalize)
        _, approx = self.search(queries, k + 1)
        _, exact = exact_topk(queries, gallery, k + 1, normalize=self.normalize)

        def drop_self(ids, own):
            return [[i for i in row if i != o][:k] for row, o in zip(ids.tolist(), own)]

        return recall_at_k(np.array(drop_self(approx, pick)), np.array(drop_self(exact, pick)), k)

    # ------------------------------------------------------------------ files
    def _settings(self) -> dict:
        return {"kind": self.kind, "dim": self.dim, "normalize": self.normalize, "nlist": self.nlist,
                "nprobe": self.nprobe, "hnsw_m": self.hnsw_m, "ef_construction": self.ef_construction,
                "ef_search": self.ef_search, "train_per_list": self.train_per_list,
                "kmeans_iters": self.kmeans_iters, "size": self.size, "recall": self.recall}

    def save(self, path: str) -> str:
        """Write the index (faiss format, CPU copy) to ``path`` and its settings to ``path + '.json'``."""
        faiss = _faiss()
        if self._index is None:
            raise RuntimeError("nothing to save: the index is empty")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        index = faiss.index_gpu_to_cpu(self._index) if self._on_gpu else self._index
        faiss.write_index(index, path)
        with open(path + ".json", "w") as f:
            json.dump(self._settings(), f, indent=1)
        return path

    @classmethod
    def load(cls, path: str, device: str = "auto") -> "GalleryIndex":
        """An index written by :meth:`save`."""
        faiss = _faiss()
        for p in (path, path + ".json"):
            if not os.path.isfile(p):
                raise FileNotFoundError(f"gallery index file '{p}' does not exist (GalleryIndex.save writes both)")
        with open(path + ".json") as f:
            settings = json.load(f)
        size, recall = settings.pop("size"), settings.pop("recall")
        index = cls(**settings, device=device)
        index.recall = recall
        index._index = faiss.read_index(path)
        if index.kind == "ivf":
            index._index.nprobe = index.nprobe
        if index.kind == "hnsw":
            index._index.hnsw.efSearch = index.ef_search
        if index.kind != "hnsw" and index._use_gpu():
            index._index = index._to_gpu(index._index)
        if index.size != size:
            raise ValueError(f"gallery index '{path}' holds {index.size} rows, its settings file says {size}")
        return index

    def __repr__(self) -> str:
        extra = {"ivf": f", nlist={self.nlist}, nprobe={self.nprobe}",
                 "hnsw": f", M={self.hnsw_m}, ef_search={self.ef_search}"}.get(self.kind, "")
        return f"GalleryIndex({self.kind}, dim={self.dim}, size={self.size}{extra})"
