#!/usr/bin/env python
"""Benchmark CLIP-FGDI against CLIP-ReID (issue 12's speed targets); prints markdown tables.

* **Image stage**: one training step (forward, backward, Adam) on the same random PK batch, ``ClipReID``'s stage
  ``image`` vs ``ClipFGDI``'s (with the ID-prompt and domain-prompt banks precomputed at the stage start, so the apn
  term is two row gathers and a few vector ops). Target: FGDI <= 1.1x CLIP-ReID.
* **Prompt stages**: one epoch over the same cached features (same minibatch), CLIP-ReID's stage ``prompt`` vs
  FGDI's ``id_prompt`` (adds the GRL domain head) and ``domain_prompt`` (16-token instead of 12-token text passes,
  monitor head). Target: each <= 1.5x CLIP-ReID's stage 1.

Models: the tiny synthetic configs (``configs/Synthetic/clip_reid_vit_tiny.yml`` / ``clip_fgdi_vit_tiny.yml``) and
ViT-B/16 (``configs/CLIP-ReID/Base-clip-reid-vit.yml`` / ``configs/CLIP-FGDI/Base-clip-fgdi-vit.yml``, prompt stages
only unless ``--vitb-image-batch``). Random weights (timing only). Each time is the best of ``--repeats`` runs after
a warm-up, the methods interleaved; one torch thread by default, timed as process CPU time on the CPU (wall time
otherwise)::

    python tools/benchmark_fgdi.py                      # tiny image step + prompt epochs, ViT-B/16 prompt epochs
    python tools/benchmark_fgdi.py --skip-vitb16 --device cuda
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

CONFIGS = {("ViT-Tiny-16", "ClipReID"): "configs/Synthetic/clip_reid_vit_tiny.yml",
           ("ViT-Tiny-16", "ClipFGDI"): "configs/Synthetic/clip_fgdi_vit_tiny.yml",
           ("ViT-B-16", "ClipReID"): "configs/CLIP-ReID/Base-clip-reid-vit.yml",
           ("ViT-B-16", "ClipFGDI"): "configs/CLIP-FGDI/Base-clip-fgdi-vit.yml"}
NUM_DOMAINS = 3


def build(arch: str, method: str, num_ids: int, device: str):
    opts = ["MODEL.BACKBONE.PRETRAIN", "False", "MODEL.DEVICE", device, "MODEL.HEADS.NUM_CLASSES", str(num_ids),
            "MODEL.BACKBONE.NUM_CAMERAS", "2"]
    if method == "ClipFGDI":
        opts += ["DATASETS.NAMES", str(tuple(f"SyntheticReIDDomain{k}" for k in range(NUM_DOMAINS)))]
    cfg = merge_config_file(get_cfg(), os.path.join(ROOT, CONFIGS[arch, method]), opts)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    if method == "ClipFGDI":
        labels = torch.arange(num_ids)
        model.set_identity_domains(labels, labels % NUM_DOMAINS)
    return model, cfg






def image_step(model, cfg, batch_size: int, device: str):
    """One image-stage step on a fixed random PK batch (banks computed once, before timing)."""
    model.set_stage("image")
    model.on_stage_start("image")
    h, w = cfg.INPUT.SIZE_TRAIN
    g = torch.Generator().manual_seed(1)
    targets = torch.arange(batch_size // 4).repeat_interleave(4)
    batch = {"images": torch.rand(batch_size, 3, h, w, generator=g) * 255, "targets": targets,
             "camids": torch.zeros(batch_size, dtype=torch.long), "domains": targets % NUM_DOMAINS}
    batch = {k: v.to(device) for k, v in batch.items()}
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-6)

    return train_steps(model, lambda: [batch], optimizer)


def prompt_epoch(model, stage: str, features, labels, batch_size: int):
    """One epoch of prompt stage ``stage`` over ``features`` (the stage's trainable parameters under Adam)."""
    model.set_stage(stage)
    prefixes = {"prompt": ("prompt_learner.",), "id_prompt": ("prompt_learner.", "domain_head."),
                "domain_prompt": ("domain_prompt.", "monitor_head.")}[stage]
    params = [p for n, p in model.named_parameters() if n.startswith(prefixes) and p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=3.5e-4, weight_decay=1e-4)
    data = FeatureEpochs(features, labels, batch_size, seed=0, fields={"domains": labels % NUM_DOMAINS})
    epochs = iter(range(10 ** 9))
    return train_steps(model, lambda: data.epoch(next(epochs)), optimizer)




def bench_image(arch, batch_size, num_ids, repeats, device, rows):
    runs = {}
    for method in ("ClipReID", "ClipFGDI"):
        model, cfg = build(arch, method, num_ids, device)
        runs[method] = image_step(model, cfg, batch_size, device)
    times = best_times(runs, repeats, device)
    ratio = times["ClipFGDI"] / times["ClipReID"]
    rows.append([arch, batch_size, f"{times['ClipReID']:.3f}", f"{times['ClipFGDI']:.3f}", f"{ratio:.2f}x",
                 "yes" if ratio <= 1.1 else "NO"])


def bench_prompts(arch, num_samples, num_ids, batch, repeats, device, rows, warmup=True):
    reid, _ = build(arch, "ClipReID", num_ids, device)
    fgdi, _ = build(arch, "ClipFGDI", num_ids, device)
    g = torch.Generator().manual_seed(2)
    features = torch.randn(num_samples, reid.text_encoder.output_dim, generator=g).to(device)
    labels = torch.randint(0, num_ids, (num_samples,), generator=g).to(device)
    runs = {"prompt": prompt_epoch(reid, "prompt", features, labels, batch)}
    for stage in ("id_prompt", "domain_prompt"):
        pair = {"prompt": runs["prompt"], stage: prompt_epoch(fgdi, stage, features, labels, batch)}
        t = best_times(pair, repeats, device, warmup)
        ratio = t[stage] / t["prompt"]
        rows.append([arch, stage, num_samples, f"{t['prompt']:.3f}", f"{t[stage]:.3f}", f"{ratio:.2f}x",
                     "yes" if ratio <= 1.5 else "NO"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (CPU)")
    parser.add_argument("--tiny-batches", type=int, nargs="+", default=[32], help="image-stage batches, tiny model")
    parser.add_argument("--vitb-image-batch", type=int, default=0, help="ViT-B/16 image-stage batch (0 = skip)")
    parser.add_argument("--tiny-samples", type=int, default=3200, help="cached features in the tiny prompt epoch")
    parser.add_argument("--vitb-samples", type=int, default=256, help="cached features in the ViT-B/16 epoch")
    parser.add_argument("--num-ids", type=int, default=751, help="identities (prompts)")
    parser.add_argument("--batch", type=int, default=128, help="prompt-stage minibatch (FGDI: 128)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-vitb16", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    clock = "process CPU time" if timing_clock(args.device) is time.process_time else "wall time"
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, {clock}, best of {args.repeats} after a "
          f"warm-up, the methods interleaved")
    image, prompts = [], []
    for batch in args.tiny_batches:
        bench_image("ViT-Tiny-16", batch, 100, args.repeats, args.device, image)
    if args.vitb_image_batch and not args.skip_vitb16:
        bench_image("ViT-B-16", args.vitb_image_batch, args.num_ids, args.repeats, args.device, image)
    bench_prompts("ViT-Tiny-16", args.tiny_samples, args.num_ids, args.batch, args.repeats, args.device, prompts)
    if not args.skip_vitb16:
        bench_prompts("ViT-B-16", args.vitb_samples, args.num_ids, args.batch, 1, args.device, prompts, warmup=False)
    print("\nImage-stage training step (forward + backward + Adam), seconds:")
    print(tabulate(image, headers=["model", "batch", "CLIP-ReID", "CLIP-FGDI", "ratio", "<= 1.1x"], tablefmt="github"))
    print(f"\nPrompt-stage epoch (minibatches of {args.batch}), seconds, vs CLIP-ReID's stage 1:")
    print(tabulate(prompts, headers=["model", "FGDI stage", "features", "CLIP-ReID", "CLIP-FGDI", "ratio", "<= 1.5x"],
                   tablefmt="github"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
