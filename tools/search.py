#!/usr/bin/env python
"""Search a gallery of extracted features (tools/extract_features.py) with a faiss index; optionally draw the
ranked results.

    # a dataset's features (one file, its JSON has the query/gallery split): exact search, top 10
    python tools/search.py --gallery feats/synth.npy --output results.json --picture ranked.jpg
    # separate files, an approximate index saved for later (recall@10 vs exact is printed at build time)
    python tools/search.py --gallery feats/gallery.npy --query feats/query.npy --kind ivf --save-index idx.faiss
    python tools/search.py --load-index idx.faiss --gallery feats/gallery.npy --query feats/query.npy --top-k 5

``--gallery`` is always needed (its JSON names the gallery images); with ``--load-index`` its features are not
read. With identity and camera labels on both sides, same-identity same-camera matches are left out of the
results, as in evaluation (``--keep-junk`` keeps them) and the picture frames correct matches green, wrong red.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import List, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from fastreid_clip.inference.feature_files import load_features, read_metadata  # noqa: E402
from fastreid_clip.inference.gallery_index import GalleryIndex  # noqa: E402


class Side:
    """Features (lazy) and labels of a query or gallery set: rows ``rows`` of a feature file."""

    def __init__(self, path: str, rows: Optional[np.ndarray] = None):
        self.path = path
        meta = read_metadata(path) or {}
        count = meta.get("count")
        self.rows = rows if rows is not None else (np.arange(count) if count is not None else None)

        def pick(key):
            values = meta.get(key)
            return None if values is None else [values[i] for i in self.rows]

        self.paths, self.pids, self.camids = pick("paths"), pick("pids"), pick("camids")

    def features(self) -> np.ndarray:
        feats = load_features(self.path)
        if self.rows is None:
            self.rows = np.arange(feats.shape[0])
            return feats
        contiguous = len(self.rows) and self.rows[-1] - self.rows[0] + 1 == len(self.rows)
        return feats[self.rows[0]:self.rows[-1] + 1] if contiguous else np.asarray(feats[self.rows])

    def __len__(self):
        return len(self.rows)


def split_sides(gallery_path: str, query_path: Optional[str]):
    if query_path:
        return Side(query_path), Side(gallery_path)
    meta = read_metadata(gallery_path)
    split = (meta or {}).get("split")
    if not split:
        raise SystemExit(f"'{gallery_path}' has no query/gallery split in its JSON: give --query")
    split = np.array(split)
    return Side(gallery_path, np.flatnonzero(split == "query")), Side(gallery_path, np.flatnonzero(split == "gallery"))


def ranked_results(index: GalleryIndex, query: Side, gallery: Side, query_rows: Sequence[int], k: int,
                   drop_junk: bool) -> List[dict]:
    """Top-``k`` matches of the chosen queries; same-identity same-camera gallery items dropped when asked."""
    feats = query.features()
    labels = drop_junk and None not in (query.pids, query.camids, gallery.pids, gallery.camids)
    fetch = k
    results = [None] * len(query_rows)
    todo = list(range(len(query_rows)))
    while todo:
        fetch = min(fetch * 2 + 16 if labels else k, index.size)
        scores, ids = index.search(np.asarray(feats[[query_rows[t] for t in todo]]), fetch)
        left = []
        for t, s_row, i_row in zip(todo, scores, ids):
            q = query_rows[t]
            keep = [(float(s), int(i)) for s, i in zip(s_row, i_row) if i >= 0 and not (
                labels and gallery.pids[i] == query.pids[q] and gallery.camids[i] == query.camids[q])]
            if len(keep) >= k or fetch >= index.size:
                results[t] = keep[:k]
            else:
                left.append(t)
        todo = left
    out = []
    for q, matches in zip(query_rows, results):
        entry = {"query_row": int(q), "query": query.paths[q] if query.paths else None, "matches": []}
        for score, i in matches:
            m = {"gallery_row": i, "score": score, "path": gallery.paths[i] if gallery.paths else None}
            if gallery.pids is not None:
                m["pid"] = gallery.pids[i]
            entry["matches"].append(m)
        if query.pids is not None:
            entry["pid"] = query.pids[q]
        out.append(entry)
    return out


def draw(results: List[dict], path: str, k: int) -> str:
    from fastreid_clip.utils.rank_vis import draw_ranked_rows, match_colour

    rows = []
    for r in results:
        if r["query"] is None:
            raise SystemExit("--picture needs the image paths (the features' JSON files)")
        cells = [(r["query"], match_colour(None))]
        for m in r["matches"]:
            known = "pid" in r and "pid" in m
            cells.append((m["path"], match_colour(m["pid"] == r["pid"] if known else None)))
        rows.append(cells)
    return draw_ranked_rows(rows, path, columns=k + 1)


def main(argv: Optional[Sequence[str]] = None) -> List[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gallery", required=True, help="gallery features (.npy / .safetensors with its .json)")
    p.add_argument("--query", help="query features (default: the gallery file's query split)")
    p.add_argument("--kind", default="flat", choices=["flat", "ivf", "hnsw"], help="index kind (flat = exact)")
    p.add_argument("--nlist", type=int, default=0, help="IVF lists (0 = 4 sqrt(N))")
    p.add_argument("--nprobe", type=int, default=16, help="IVF lists visited per query")
    p.add_argument("--hnsw-m", type=int, default=32)
    p.add_argument("--ef-search", type=int, default=128)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"], help="faiss device (gpu: faiss-gpu)")
    p.add_argument("--save-index", help="write the built index (and its .json settings) here")
    p.add_argument("--load-index", help="use an index written by --save-index instead of building one")
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--queries", default="all", help="query rows to search: 'all' or e.g. 0,5,9")
    p.add_argument("--keep-junk", action="store_true", help="keep same-identity same-camera matches")
    p.add_argument("--output", help="write the ranked results as JSON here")
    p.add_argument("--picture", help="write a ranked-results picture here")
    p.add_argument("--picture-queries", type=int, default=6, help="queries in the picture (evenly spread)")
    args = p.parse_args(argv)

    query, gallery = split_sides(args.gallery, args.query)
    start = time.perf_counter()
    if args.load_index:
        index = GalleryIndex.load(args.load_index, device=args.device)
        print(f"loaded {index} from {args.load_index}")
    else:
        index = GalleryIndex.build(gallery.features(), args.kind, nlist=args.nlist, nprobe=args.nprobe,
                                   hnsw_m=args.hnsw_m, ef_search=args.ef_search, device=args.device)
        if index.kind == "flat":
            recall = " (exact)"
        elif index.recall is not None:
            recall = f", recall@10 vs exact {index.recall:.4f}"
        else:
            recall = " (recall not measured: gallery of 11 rows or fewer)"
        print(f"built {index} in {time.perf_counter() - start:.1f} s{recall}")
    if len(gallery) and index.size != len(gallery):
        raise SystemExit(f"the index holds {index.size} rows but the gallery '{args.gallery}' has {len(gallery)}")
    if args.save_index:
        index.save(args.save_index)
        print(f"index written to {args.save_index}")
    rows = list(range(len(query))) if args.queries == "all" else [int(v) for v in args.queries.split(",")]
    start = time.perf_counter()
    results = ranked_results(index, query, gallery, rows, args.top_k, not args.keep_junk)
    seconds = time.perf_counter() - start
    print(f"searched {len(rows)} queries in {seconds:.3f} s ({len(rows) / max(seconds, 1e-9):.0f} queries/s)")
    for r in results[:3]:
        top = ", ".join(f"{m['gallery_row']} ({m['score']:.3f})" for m in r["matches"][:5])
        print(f"  query {r['query_row']} {r['query'] or ''}: {top}")
    if args.output:
        with open(args.output, "w") as f:
            json.dump(results, f, indent=1)
        print(f"results written to {args.output}")
    if args.picture:
        picks = np.linspace(0, len(results) - 1, num=min(args.picture_queries, len(results))).astype(int)
        print(f"picture written to {draw([results[i] for i in picks], args.picture, args.top_k)}")
    return results


if __name__ == "__main__":
    main()
