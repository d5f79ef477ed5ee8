#!/usr/bin/env python
"""Benchmark CLIP-ReID stage 1 (prompt learning): text context truncated at EOT (12 tokens) vs the full 77.

Measures, on the same cached features and labels, the wall time of one stage-1 epoch (minibatches of 64,
forward + backward + Adam step through ``ClipReID.prompt_losses``) for the tiny test model and for ViT-B/16's text
tower (random weights: timing only), plus one forward+backward of a 64-prompt batch through ViT-B/16's text tower.

    python tools/benchmark_stage1.py                       # tiny + ViT-B/16 (a few minutes on 2 CPU cores)
    python tools/benchmark_stage1.py --skip-vitb16         # tiny only
    python tools/benchmark_stage1.py --device cuda
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastreid_clip  # noqa: E402,F401
import torch  # noqa: E402
from fastreid.modeling.meta_arch import build_model  # noqa: E402
from tabulate import tabulate  # noqa: E402

from fastreid_clip.config import get_cfg  # noqa: E402
from fastreid_clip.data.epoch_data import FeatureEpochs  # noqa: E402


def build_clip_reid(arch: str, num_ids: int, device: str):
    cfg = get_cfg()
    cfg.MODEL.META_ARCHITECTURE = "ClipReID"
    cfg.MODEL.BACKBONE.NAME = "build_clip_backbone"
    cfg.MODEL.BACKBONE.CLIP_NAME = arch
    cfg.MODEL.BACKBONE.PRETRAIN = False  # random weights: the timing does not depend on their values
    cfg.MODEL.HEADS.NUM_CLASSES = num_ids
    cfg.MODEL.DEVICE = device
    model = build_model(cfg)
    model.set_stage("prompt")
    model.train()
    return model


def time_epoch(model, features, labels, batch_size: int, truncate: bool, repeats: int) -> float:
    """Seconds of the fastest of ``repeats`` stage-1 epochs over ``features``."""
    model.truncate_at_eot = truncate
    optimizer = torch.optim.Adam([model.prompt_learner.ctx], lr=3.5e-4, weight_decay=1e-4)
    data = FeatureEpochs(features, labels, batch_size, seed=0)
    best = float("inf")
    for epoch in range(repeats):
        start = time.perf_counter()
        for batch in data.epoch(epoch):
            losses = model.prompt_losses(batch["features"], batch["targets"])
            optimizer.zero_grad(set_to_none=True)
            sum(losses.values()).backward()
            optimizer.step()
        if features.is_cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def time_text_batch(model, num_prompts: int, truncate: bool, repeats: int) -> float:
    """Seconds of one forward+backward of ``num_prompts`` distinct prompts through the text tower (best of n)."""
    model.truncate_at_eot = truncate
    labels = torch.arange(num_prompts, device=model.device)
    best = float("inf")
    for _ in range(repeats):
        model.prompt_learner.zero_grad()
        start = time.perf_counter()
        model.encode_prompts(labels).sum().backward()
        if labels.is_cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def bench(arch: str, num_ids: int, num_samples: int, batch: int, repeats: int, device: str, rows: list,
          batch_rows: list) -> None:
    torch.manual_seed(0)
    model = build_clip_reid(arch, num_ids, device)
    dim = model.text_encoder.output_dim
    features = torch.randn(num_samples, dim, device=device)
    labels = torch.randint(0, num_ids, (num_samples,), device=device)
    times = {t: time_epoch(model, features, labels, batch, t, repeats) for t in (True, False)}
    tokens = model.prompt_learner.eot_index + 1
    rows.append([arch, num_samples, f"{times[False]:.3f}", f"{times[True]:.3f}", f"{times[False] / times[True]:.1f}x"])
    if batch_rows is not None:
        t = {trunc: time_text_batch(model, batch, trunc, repeats) for trunc in (True, False)}
        batch_rows.append([arch, batch, f"{t[False]:.3f}", f"{t[True]:.3f} ({tokens} tokens)",
                           f"{t[False] / t[True]:.1f}x"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny-samples", type=int, default=3200, help="cached features in the tiny-model epoch")
    parser.add_argument("--vitb-samples", type=int, default=640, help="cached features in the ViT-B/16 epoch")
    parser.add_argument("--num-ids", type=int, default=751, help="identities (prompts), Market-1501 has 751")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-vitb16", action="store_true")
    args = parser.parse_args(argv)
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, batch {args.batch}, ids {args.num_ids}")
    epoch_rows, batch_rows = [], []
    bench("ViT-Tiny-16", args.num_ids, args.tiny_samples, args.batch, args.repeats, args.device, epoch_rows, None)
    if not args.skip_vitb16:
        bench("ViT-B-16", args.num_ids, args.vitb_samples, args.batch, args.repeats, args.device, epoch_rows,
              batch_rows)
    print("\nStage-1 epoch (forward + backward + Adam over all minibatches), seconds:")
    print(tabulate(epoch_rows, headers=["text tower", "samples", "77 tokens", "truncated at EOT", "speed-up"],
                   tablefmt="github"))
    if batch_rows:
        print("\nOne forward + backward of a prompt batch through the text tower, seconds:")
        print(tabulate(batch_rows, headers=["text tower", "prompts", "77 tokens", "truncated", "speed-up"],
                       tablefmt="github"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
