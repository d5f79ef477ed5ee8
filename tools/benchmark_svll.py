#!/usr/bin/env python
"""Benchmark SVLL-ReID against CLIP-ReID: the cost of its self-supervised losses (issue 11's speed targets).

* **Stage 2** (image stage): one training step (forward, backward, Adam) on the same PK batch of B images,
  ``ClipReID`` vs ``SVLLReID`` (the main pass plus one pass of the 2B extra views, the image MLP and L_vss).
  Target: SVLL <= 3.3x CLIP-ReID. Random images: the model step only (the loader's extra augmentations run in its
  workers and are not counted).
* **Stage 1** (prompt stage): one epoch over the same cached features (minibatches of 64, forward + backward + Adam
  through ``prompt_losses``), both EOT-truncated; SVLL adds two masked text passes per identity of each minibatch,
  the text MLP and L_lss. Target: SVLL <= 3x CLIP-ReID.

Models: the tiny synthetic configs (``configs/Synthetic/svll_reid_vit_tiny.yml``, its MLP widths) and ViT-B/16 with
SIE + OLP (``configs/SVLL-ReID/Base-svll-reid-vit-sie-olp.yml``: 4096-wide MLPs); CLIP-ReID is the same config with
``MODEL.META_ARCHITECTURE ClipReID``. Random weights (timing only). Each time is the best of ``--repeats`` runs after a
warm-up (ViT-B/16 stage 1: ``--vitb-repeats`` epochs, no warm-up), the methods' runs interleaved so that a change of
the machine's load affects both alike, with ``--threads`` intra-op threads (default 1: on a shared machine two OpenMP
threads can be many times slower than one). With one thread on the CPU the times are the process's CPU time, which
leaves out the time it waits for a core on a shared machine (wall time otherwise). Prints markdown tables::

    python tools/benchmark_svll.py                         # tiny stages 1 + 2, ViT-B/16 stage 1 (~2 min on a CPU)
    python tools/benchmark_svll.py --vitb-stage2-batch 8    # also a ViT-B/16 stage-2 step at batch 8 (slow on a CPU)
    python tools/benchmark_svll.py --skip-vitb16 --device cuda
"""

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import fastreid_clip  # noqa: E402,F401
import torch  # noqa: E402
from fastreid.modeling.meta_arch import build_model  # noqa: E402
from tabulate import tabulate  # noqa: E402

from fastreid_clip.config import get_cfg, merge_config_file  # noqa: E402
from fastreid_clip.data.epoch_data import FeatureEpochs  # noqa: E402
from fastreid_clip.utils.timing import best_times, train_steps  # noqa: E402
from fastreid_clip.utils.timing import clock as timing_clock  # noqa: E402

CONFIGS = {"ViT-Tiny-16": "configs/Synthetic/svll_reid_vit_tiny.yml",
           "ViT-B-16": "configs/SVLL-ReID/Base-svll-reid-vit-sie-olp.yml"}
METHODS = ("ClipReID", "SVLLReID")


def build(arch: str, method: str, num_ids: int, num_cameras: int, device: str, *opts: str):
    cfg = merge_config_file(get_cfg(), os.path.join(ROOT, CONFIGS[arch]), [
        "MODEL.META_ARCHITECTURE", method, "MODEL.BACKBONE.PRETRAIN", "False", "MODEL.DEVICE", device,
        "MODEL.HEADS.NUM_CLASSES", str(num_ids), "MODEL.BACKBONE.NUM_CAMERAS", str(num_cameras), *opts])
    torch.manual_seed(0)
    return build_model(cfg).train(), cfg




def image_step(model, cfg, batch_size: int, device: str):
    """A function running one image-stage training step on a fixed random PK batch (two extra views)."""
    model.set_stage("image")
    model.on_stage_start("image")
    h, w = cfg.INPUT.SIZE_TRAIN
    g = torch.Generator().manual_seed(1)
    batch = {"images": torch.rand(batch_size, 3, h, w, generator=g) * 255,
             "views": torch.rand(batch_size, 2, 3, h, w, generator=g) * 255,
             "targets": torch.arange(batch_size // 4).repeat_interleave(4),
             "camids": torch.randint(0, 2, (batch_size,), generator=g)}
    batch = {k: v.to(device) for k, v in batch.items()}
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-6)

    return train_steps(model, lambda: [batch], optimizer)


def prompt_epoch(model, features, labels, batch_size: int):
    """A function running one stage-1 epoch over ``features`` (minibatches of ``batch_size``)."""
    model.set_stage("prompt")
    params = [p for n, p in model.named_parameters() if n.startswith(("prompt_learner.", "text_mlp.")) and
              p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=3.5e-4, weight_decay=1e-4)
    data = FeatureEpochs(features, labels, batch_size, seed=0)
    epochs = iter(range(10 ** 9))
    return train_steps(lambda batch: model.prompt_losses(batch["features"], batch["targets"]),
                       lambda: data.epoch(next(epochs)), optimizer)




def bench_stage2(arch: str, batch_size: int, num_ids: int, repeats: int, device: str, rows: list) -> None:
    runs = {}
    for method in METHODS:
        model, cfg = build(arch, method, num_ids, 2, device)
        runs[method] = image_step(model, cfg, batch_size, device)
    times = best_times(runs, repeats, device)
    ratio = times["SVLLReID"] / times["ClipReID"]
    rows.append([arch, batch_size, f"{times['ClipReID']:.3f}", f"{times['SVLLReID']:.3f}", f"{ratio:.2f}x",
                 "yes" if ratio <= 3.3 else "NO"])


def bench_stage1(arch: str, num_samples: int, num_ids: int, batch: int, repeats: int, device: str, rows: list,
                 warmup: bool = True, masks=("token", "element")) -> None:
    torch.manual_seed(0)
    runs = {}
    for method, mask in [("ClipReID", "token")] + [("SVLLReID", m) for m in masks]:
        model, _ = build(arch, method, num_ids, 2, device, "MODEL.SVLL.LSS.MASK", mask)
        if not runs:
            dim = model.text_encoder.output_dim
            features = torch.randn(num_samples, dim, device=device)
            labels = torch.randint(0, num_ids, (num_samples,), device=device)
        runs[(method, mask)] = prompt_epoch(model, features, labels, batch)
    times = best_times(runs, repeats, device, warmup)
    base = times[("ClipReID", "token")]
    for mask in masks:
        ratio = times[("SVLLReID", mask)] / base
        rows.append([arch, mask, num_samples, f"{base:.3f}", f"{times[('SVLLReID', mask)]:.3f}", f"{ratio:.2f}x",
                     "yes" if ratio <= 3.0 else "NO"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (CPU)")
    parser.add_argument("--tiny-batches", type=int, nargs="+", default=[32, 64], help="stage-2 batches, tiny model")
    parser.add_argument("--vitb-stage2-batch", type=int, default=0, help="ViT-B/16 stage-2 batch (0 = skip)")
    parser.add_argument("--tiny-samples", type=int, default=3200, help="cached features in the tiny stage-1 epoch")
    parser.add_argument("--vitb-samples", type=int, default=320, help="cached features in the ViT-B/16 epoch")
    parser.add_argument("--num-ids", type=int, default=751, help="identities (prompts), Market-1501 has 751")
    parser.add_argument("--batch", type=int, default=64, help="stage-1 minibatch (the paper's 64)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--vitb-repeats", type=int, default=1, help="ViT-B/16 stage-1 epochs per method (no warm-up)")
    parser.add_argument("--skip-vitb16", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    clock = "process CPU time" if timing_clock(args.device) is time.process_time else "wall time"
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, {clock}, best of {args.repeats} after a "
          f"warm-up (ViT-B/16 stage 1: best of {args.vitb_repeats}), the methods interleaved")

    stage2, stage1 = [], []
    for batch in args.tiny_batches:
        bench_stage2("ViT-Tiny-16", batch, 100, args.repeats, args.device, stage2)
    if args.vitb_stage2_batch and not args.skip_vitb16:
        bench_stage2("ViT-B-16", args.vitb_stage2_batch, args.num_ids, args.repeats, args.device, stage2)
    bench_stage1("ViT-Tiny-16", args.tiny_samples, args.num_ids, args.batch, args.repeats, args.device, stage1)
    if not args.skip_vitb16:
        bench_stage1("ViT-B-16", args.vitb_samples, args.num_ids, args.batch, args.vitb_repeats, args.device, stage1,
                     warmup=False)

    print("\nStage-2 training step (forward + backward + Adam), seconds:")
    print(tabulate(stage2, headers=["model", "batch", "CLIP-ReID", "SVLL-ReID", "ratio", "<= 3.3x"],
                   tablefmt="github"))
    print("\nStage-1 epoch (forward + backward + Adam over all minibatches of 64), seconds:")
    print(tabulate(stage1, headers=["model", "LSS.MASK", "features", "CLIP-ReID", "SVLL-ReID", "ratio", "<= 3x"],
                   tablefmt="github"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
