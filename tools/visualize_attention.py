#!/usr/bin/env python
"""One picture of what a trained model attends to: per query image a row with the image, its attention maps
(ViT: rollout from the class token and the last block's class-token attention; a text-query interaction / fusion
module: its cross-attention over the patches) and, given a gallery, its top matches.

    python tools/visualize_attention.py --run-dir output/promptsg_tiny --images a.jpg b.jpg --output attn.jpg
    # with top matches from extracted gallery features (tools/extract_features.py; a dataset's file: its gallery
    # split), queries taken from that file's query split when --images is not given
    python tools/visualize_attention.py --run-dir output/demo --gallery feats/synth.npy --top-k 5 --output attn.jpg

Writes the picture and ``<output minus extension>.npz`` with every map (``<name>`` [Q, h, w], each summing to 1).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastreid_clip  # noqa: E402,F401  (must precede every fastreid import)
import numpy as np  # noqa: E402
import torch  # noqa: E402

from fastreid_clip.inference import FeatureExtractor  # noqa: E402
from fastreid_clip.inference.attention import attention_maps, heatmap_overlay  # noqa: E402
from fastreid_clip.inference.extractor import read_image_file  # noqa: E402
from fastreid_clip.inference.feature_files import load_features, read_metadata  # noqa: E402

MAP_FRAME = (70, 110, 200)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    from fastreid_clip.inference.gallery_index import GalleryIndex
    from fastreid_clip.utils.rank_vis import draw_ranked_rows, match_colour

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir")
    p.add_argument("--config-file")
    p.add_argument("--weights")
    p.add_argument("--images", nargs="+", help="query image files")
    p.add_argument("--camids", type=int, nargs="+", help="camera id per query image (SIE models)")
    p.add_argument("--gallery", help="gallery features file (with its .json) for the top matches")
    p.add_argument("--num-queries", type=int, default=4, help="queries from the gallery file's query split")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--output", required=True, help="picture file (.jpg / .png)")
    p.add_argument("--device", default=None)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = p.parse_args(argv)

    if args.run_dir:
        extractor = FeatureExtractor.from_run_dir(args.run_dir, args.weights, args.opts, device=args.device)
    elif args.config_file and args.weights:
        extractor = FeatureExtractor.from_config(args.config_file, args.weights, args.opts, device=args.device)
    else:
        raise SystemExit("give --run-dir, or --config-file and --weights")
    meta = read_metadata(args.gallery) if args.gallery else None
    if args.gallery and not (meta and meta.get("paths")):
        raise SystemExit(f"--gallery '{args.gallery}': its JSON sidecar with the image paths is missing "
                         f"(tools/extract_features.py writes <name>.json beside the features)")
    split = np.array(meta["split"]) if meta and meta.get("split") else None
    camids = args.camids
    if args.images:
        paths = list(args.images)
    elif split is not None:
        rows = np.flatnonzero(split == "query")
        rows = rows[np.linspace(0, len(rows) - 1, num=min(args.num_queries, len(rows))).astype(int)]
        paths = [meta["paths"][i] for i in rows]
        camids = camids or ([meta["camids"][i] for i in rows] if meta.get("camids") else None)
    else:
        raise SystemExit("give --images, or a --gallery file with a query split")
    images = torch.stack([extractor.preprocess(read_image_file(path)) for path in paths])
    cams = torch.tensor(camids if len(camids) == len(paths) else camids * len(paths)) if camids else None
    maps = attention_maps(extractor.model, images, cams)
    if not maps:
        raise SystemExit(f"{type(extractor.model).__name__} has neither a ViT image backbone nor a cross-attention "
                         f"module: there is no attention to show")

    matches = [[] for _ in paths]
    if args.gallery:
        feats = load_features(args.gallery)
        rows = np.flatnonzero(split == "gallery") if split is not None else np.arange(feats.shape[0])
        index = GalleryIndex.build(np.asarray(feats[rows]), "flat")
        _, ids = index.search(extractor(images, cams).numpy(), args.top_k)
        query_pids = [None] * len(paths)
        if split is not None and not args.images and meta.get("pids"):
            q_rows = np.flatnonzero(split == "query")
            by_path = {meta["paths"][i]: meta["pids"][i] for i in q_rows}
            query_pids = [by_path.get(pth) for pth in paths]
        for q, row in enumerate(ids):
            for i in row:
                if i < 0:
                    continue
                g = rows[i]
                pid = meta["pids"][g] if meta and meta.get("pids") else None
                known = pid is not None and query_pids[q] is not None
                matches[q].append((meta["paths"][g], match_colour(pid == query_pids[q] if known else None)))

    names = list(maps)
    table = []
    for q, path in enumerate(paths):
        cells = [(path, match_colour(None))]
        cells += [(heatmap_overlay(images[q], maps[name][q]), MAP_FRAME) for name in names]
        table.append(cells + matches[q])
    picture = draw_ranked_rows(table, args.output, columns=1 + len(names) + (args.top_k if args.gallery else 0))
    npz = os.path.splitext(args.output)[0] + ".npz"
    np.savez(npz, paths=np.array(paths), **{name: maps[name].numpy() for name in names})
    print(f"attention picture ({', '.join(names)}; columns: query, maps{', top matches' if args.gallery else ''}) "
          f"written to {picture}; maps in {npz}")
    return {"picture": picture, "maps": maps, "npz": npz}


if __name__ == "__main__":
    main()
