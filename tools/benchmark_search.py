#!/usr/bin/env python
"""Gallery search benchmark: queries/s and recall@10 against exact search, per faiss index kind.

Synthetic ReID-like features (``signal * identity centre + camera offset + noise``, as tools/benchmark_eval.py;
about 27 gallery rows per identity, 15 cameras), L2-normalised; queries are separate draws of the same
identities. Exact search is ``GalleryIndex("flat")`` (checked against a brute-force product on the first queries).

    python tools/benchmark_search.py                       # 100k x 1280 gallery, 1000 queries
    python tools/benchmark_search.py --gallery 20000 --kinds flat,ivf
    python tools/benchmark_search.py --onnx-run-dir output/demo   # also onnxruntime vs PyTorch images/s
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import List, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from fastreid_clip.inference.gallery_index import GalleryIndex, exact_topk, recall_at_k  # noqa: E402

NUM_CAMERAS = 15


def synthetic_features(num_gallery: int, num_query: int, dim: int, seed: int = 0, per_id: int = 27,
                       signal: float = 1.0):
    """``(gallery [G, D], queries [Q, D])`` float32, identity-clustered (see the module docstring); ``signal`` scales
    the identity centres (1.0: same-identity cosine about 0.46; tools/benchmark_eval.py's 0.38: about 0.12)."""
    rng = np.random.default_rng(seed)
    num_ids = max(1, num_gallery // per_id)
    centres = rng.standard_normal((num_ids, dim), dtype=np.float32) * signal
    cameras = rng.standard_normal((NUM_CAMERAS, dim), dtype=np.float32) * 0.2

    def draw(n):
        out = np.empty((n, dim), np.float32)
        for start in range(0, n, 8192):
            m = min(8192, n - start)
            out[start:start + m] = (rng.standard_normal((m, dim), dtype=np.float32)
                                    + centres[rng.integers(0, num_ids, m)] + cameras[rng.integers(0, NUM_CAMERAS, m)])
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out

    return draw(num_gallery), draw(num_query)


def bench_kind(kind: str, gallery: np.ndarray, queries: np.ndarray, exact_ids: np.ndarray, k: int,
               search_settings: Sequence[dict] = ({},), **settings) -> List[dict]:
    """Build one index of ``kind`` and time its search once per entry of ``search_settings`` (``nprobe`` /
    ``ef_search`` changed on the built index)."""
    start = time.perf_counter()
    index = GalleryIndex.build(gallery, kind, recall_queries=0, device="cpu", **settings)
    build_s = time.perf_counter() - start
    rows = []
    for extra in search_settings:
        if "nprobe" in extra:
            index._index.nprobe = index.nprobe = extra["nprobe"]
        if "ef_search" in extra:
            index._index.hnsw.efSearch = index.ef_search = extra["ef_search"]
        index.search(queries[:16], k)  # warm-up
        start = time.perf_counter()
        _, ids = index.search(queries, k)
        search_s = time.perf_counter() - start
        shown = {**settings, **extra}
        if kind == "ivf":
            shown["nlist"] = index.nlist
        rows.append({"kind": kind, "settings": ", ".join(f"{a}={b}" for a, b in shown.items()) or "-",
                     "build_s": build_s, "qps": len(queries) / search_s, "recall": recall_at_k(ids, exact_ids, k)})
    return rows


def format_table(rows: List[dict], k: int) -> str:
    lines = [["index", "settings", "build s", "queries/s", f"recall@{k}"]]
    for r in rows:
        lines.append([r["kind"], r["settings"], f"{r['build_s']:.1f}", f"{r['qps']:.0f}", f"{r['recall']:.4f}"])
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in lines)


def onnx_speed(run_dir: str, batch: int, rounds: int) -> str:
    """Images/s of onnxruntime vs PyTorch on the CPU for a run's model (tools/export_onnx.py's export)."""
    import tempfile

    import torch

    from fastreid_clip.inference import FeatureExtractor
    from fastreid_clip.inference.onnx_export import export_onnx, images_per_second

    from fastreid.modeling.meta_arch import META_ARCH_REGISTRY

    from fastreid_clip.config import get_cfg, merge_config_file
    from fastreid_clip.inference.onnx_export import export_overrides

    cfg = merge_config_file(get_cfg(), os.path.join(run_dir, "config.yaml"))
    mode = export_overrides(META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE))  # the mode export_onnx.py exports
    extractor = FeatureExtractor.from_run_dir(run_dir, opts=mode, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(extractor, os.path.join(tmp, "model.onnx"))
        ort_ips, torch_ips = images_per_second(extractor, path, batch, rounds)
    return (f"{extractor.cfg.MODEL.META_ARCHITECTURE} ({extractor.cfg.MODEL.BACKBONE.CLIP_NAME}), batch {batch}, "
            f"{torch.get_num_threads()} threads: onnxruntime {ort_ips:.0f} images/s, PyTorch {torch_ips:.0f} images/s")


def main(argv: Optional[List[str]] = None) -> List[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gallery", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--dim", type=int, default=1280)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--kinds", default="flat,ivf,hnsw")
    p.add_argument("--nprobe", default="8,32", help="IVF lists visited per query (comma-separated: one row each)")
    p.add_argument("--ef-search", default="64,128", help="HNSW ef_search values (one row each)")
    p.add_argument("--hnsw-m", type=int, default=16)
    p.add_argument("--ef-construction", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--signal", type=float, default=1.0, help="identity-centre scale (0.38: benchmark_eval's)")
    p.add_argument("--onnx-run-dir", default=None, help="also time onnxruntime vs PyTorch for this run's model")
    p.add_argument("--onnx-batch", type=int, default=32)
    args = p.parse_args(argv)

    gallery, queries = synthetic_features(args.gallery, args.queries, args.dim, args.seed,
                                          signal=args.signal)
    print(f"gallery {args.gallery:,} x {args.dim}, {args.queries:,} queries, k = {args.k}, signal {args.signal}")
    kinds = args.kinds.split(",")
    exact = GalleryIndex.build(gallery, "flat", device="cpu")
    _, exact_ids = exact.search(queries, args.k)
    _, brute = exact_topk(queries[:50], gallery, args.k)
    print(f"flat index vs brute-force product, top-{args.k} of 50 queries: {np.mean(brute == exact_ids[:50]):.4f} "
          f"of ids equal")
    rows = []
    for kind in kinds:
        done = len(rows)
        if kind == "flat":
            rows += bench_kind("flat", gallery, queries, exact_ids, args.k)
        elif kind == "ivf":
            rows += bench_kind("ivf", gallery, queries, exact_ids, args.k,
                               [{"nprobe": int(v)} for v in args.nprobe.split(",")])
        elif kind == "hnsw":
            rows += bench_kind("hnsw", gallery, queries, exact_ids, args.k,
                               [{"ef_search": int(v)} for v in args.ef_search.split(",")], hnsw_m=args.hnsw_m,
                               ef_construction=args.ef_construction)
        else:
            raise SystemExit(f"unknown index kind '{kind}'")
        print("\n".join(format_table(rows, args.k).splitlines()[1 + done:]), flush=True)
    print()
    print(format_table(rows, args.k))
    if args.onnx_run_dir:
        print(onnx_speed(args.onnx_run_dir, args.onnx_batch, rounds=5))
    return rows


if __name__ == "__main__":
    main()
