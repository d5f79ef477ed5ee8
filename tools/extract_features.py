#!/usr/bin/env python
"""Retrieval features of a trained model for a folder, an image list, or a registered dataset's query + gallery.

    # from a training run's OUTPUT_DIR (its config.yaml + model_final.pth)
    python tools/extract_features.py --run-dir output/demo --input photos/ --output feats/photos.npy
    # config + weights, an image list ("path [pid [camid]]" per line), safetensors output
    python tools/extract_features.py --config-file configs/Synthetic/clip_baseline_vit_tiny.yml \\
        --weights output/demo/model_final.pth --list images.txt --output feats/list.safetensors
    # a registered dataset's query + gallery (pids, camids and the split go into the JSON)
    python tools/extract_features.py --run-dir output/demo --dataset SyntheticReID --output feats/synth.npy
    # trailing KEY VALUE pairs override the config, e.g. MODEL.PROMPTSG.INFERENCE simplified

Writes ``<output>`` (.npy or .safetensors, float32 ``[N, D]``, one block per batch: never all in memory) and
``<output minus extension>.json`` (paths, pids / camids where known, split, the images that could not be read).
Unreadable images are skipped and listed, not fatal (docs/inference.md).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import List, Optional, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastreid_clip  # noqa: E402,F401  (must precede every fastreid import)
import torch  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from fastreid_clip.inference import FeatureExtractor  # noqa: E402
from fastreid_clip.inference.extractor import read_image_file  # noqa: E402
from fastreid_clip.inference.feature_files import FeatureFileWriter, write_metadata  # noqa: E402

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")

logger = logging.getLogger("fastreid_clip.tools.extract_features")

Item = Tuple[str, Optional[int], Optional[int], Optional[str]]  # path, pid, camid, split


def folder_items(folder: str) -> List[Item]:
    """Image files under ``folder`` (recursive, sorted)."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"--input folder '{folder}' does not exist")
    paths = []
    for root, _, files in os.walk(folder):
        paths += [os.path.join(root, f) for f in files if f.lower().endswith(IMAGE_EXTENSIONS)]
    return [(p, None, None, None) for p in sorted(paths)]


def list_items(list_file: str) -> List[Item]:
    """``path [pid [camid]]`` per line (whitespace or commas; ``#`` comments; paths relative to the list file)."""
    if not os.path.isfile(list_file):
        raise FileNotFoundError(f"--list file '{list_file}' does not exist")
    base = os.path.dirname(os.path.abspath(list_file))
    items = []
    with open(list_file) as f:
        for number, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            fields = line.replace(",", " ").split()
            try:
                pid = int(fields[1]) if len(fields) > 1 else None
                camid = int(fields[2]) if len(fields) > 2 else None
            except ValueError:
                raise ValueError(f"--list file '{list_file}' line {number}: pid and camid must be integers, got "
                                 f"{line!r}") from None
            path = fields[0] if os.path.isabs(fields[0]) else os.path.join(base, fields[0])
            items.append((path, pid, camid, None))
    return items


def dataset_items(cfg, name: str) -> Tuple[List[Item], int]:
    from fastreid_clip.data.build import query_gallery_items

    items, num_query = query_gallery_items(cfg, name)
    return [(p, int(pid), int(cam), "query" if i < num_query else "gallery")
            for i, (p, pid, cam) in enumerate(items)], num_query


class _Images(Dataset):
    """Items -> (index, [3, H, W] tensor or None, error text or None); a bad image never raises.

    It holds the test transform only, not the extractor: loader workers started with ``spawn`` (macOS, Windows)
    would otherwise receive a copy of the whole model."""

    def __init__(self, items: Sequence[Item], transform):
        self.items, self.transform = items, transform

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        try:
            return index, self.transform(read_image_file(self.items[index][0])), None
        except Exception as err:  # any unreadable or undecodable file is listed, not fatal
            return index, None, f"{type(err).__name__}: {err}"


def _collate(samples):
    return samples


def extract_to_file(extractor: FeatureExtractor, items: Sequence[Item], output: str, num_workers: int = 2,
                    camid: Optional[int] = None, progress: bool = True) -> dict:
    """Write the features of ``items`` to ``output`` batch by batch; returns the metadata written beside it."""
    from tqdm import tqdm

    writer = FeatureFileWriter(output, extractor.feature_dim)
    loader = DataLoader(_Images(items, extractor.transform), batch_size=extractor.batch_size, num_workers=num_workers,
                        collate_fn=_collate)
    kept: List[int] = []
    skipped = []
    start = time.perf_counter()
    bar = tqdm(total=len(items), unit="img", desc="features", disable=not progress, dynamic_ncols=True)
    try:
        for samples in loader:
            good = [(i, x) for i, x, _ in samples if x is not None]
            for i, _, err in samples:
                if err is not None:
                    skipped.append({"path": items[i][0], "error": err})
                    logger.warning("skipped unreadable image %s (%s)", items[i][0], err)
            if good:
                cams = [items[i][2] if items[i][2] is not None else camid for i, _ in good]
                camids = torch.tensor(cams, dtype=torch.long) if all(c is not None for c in cams) else None
                writer.append(extractor.forward_batch(torch.stack([x for _, x in good]), camids).cpu())
                kept += [i for i, _ in good]
            bar.update(len(samples))
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
    writer.close()
    seconds = time.perf_counter() - start
    rows = [items[i] for i in kept]
    known = lambda k: [r[k] for r in rows] if rows and all(r[k] is not None for r in rows) else None  # noqa: E731
    split = known(3)
    meta = {
        "features": os.path.basename(output),
        "count": len(rows),
        "dim": writer.dim,
        "paths": [r[0] for r in rows],
        "pids": known(1),
        "camids": known(2) if camid is None else [r[2] if r[2] is not None else camid for r in rows],
        "split": split,
        "num_query": split.count("query") if split else None,
        "skipped": skipped,
        "images_per_second": round(len(items) / max(seconds, 1e-9), 1),
        "model": {"meta_architecture": extractor.cfg.MODEL.META_ARCHITECTURE, "weights": extractor.cfg.MODEL.WEIGHTS,
                  "flip_test": extractor.flip_test},
    }
    write_metadata(output, meta)
    return meta


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    model = p.add_argument_group("model (a run folder, or a config file plus weights)")
    model.add_argument("--run-dir", help="a training run's OUTPUT_DIR (config.yaml + model_final.pth)")
    model.add_argument("--config-file", help="config file")
    model.add_argument("--weights", help="trained checkpoint (with --config-file; overrides the run's final one)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", help="a folder of images (searched recursively)")
    src.add_argument("--list", help="a text file: 'path [pid [camid]]' per line")
    src.add_argument("--dataset", help="a registered dataset's query + gallery (e.g. SyntheticReID)")
    p.add_argument("--output", required=True, help="features file, .npy or .safetensors")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: MODEL.DEVICE)")
    p.add_argument("--batch-size", type=int, default=None, help="images per forward (default TEST.IMS_PER_BATCH)")
    p.add_argument("--num-workers", type=int, default=2, help="image-decoding worker processes")
    p.add_argument("--amp", action="store_true", help="autocast (float16 on CUDA, bfloat16 on the CPU)")
    p.add_argument("--camid", type=int, default=None, help="camera id for images without one (SIE models)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return p


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = build_parser().parse_args(argv)
    kwargs = {"device": args.device, "batch_size": args.batch_size, "amp": args.amp}
    if args.run_dir:
        extractor = FeatureExtractor.from_run_dir(args.run_dir, args.weights, args.opts, **kwargs)
    elif args.config_file and args.weights:
        extractor = FeatureExtractor.from_config(args.config_file, args.weights, args.opts, **kwargs)
    else:
        raise SystemExit("give --run-dir, or --config-file and --weights")
    if args.input:
        items = folder_items(args.input)
    elif args.list:
        items = list_items(args.list)
    else:
        items, _ = dataset_items(extractor.cfg, args.dataset)
    if not items:
        raise SystemExit(f"no images found in {args.input or args.list or args.dataset}")
    meta = extract_to_file(extractor, items, args.output, args.num_workers, args.camid, not args.no_progress)
    print(f"wrote {meta['count']} x {meta['dim']} features to {args.output} ({meta['images_per_second']} images/s); "
          f"paths in {os.path.splitext(args.output)[0]}.json")
    if meta["skipped"]:
        print(f"skipped {len(meta['skipped'])} unreadable image(s):")
        for s in meta["skipped"]:
            print(f"  {s['path']}: {s['error']}")
    return meta


if __name__ == "__main__":
    main()
