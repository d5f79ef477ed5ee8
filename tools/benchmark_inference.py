#!/usr/bin/env python
"""Benchmark PromptSG inference (paper Tab. 5): images/s of the bare visual encoder, of ``simplified`` inference
(cached "A photo of a person" text feature and MIM query) and of ``composed`` inference (per-image s* through the
text encoder), on the same input, plus optionally a training step against a CLIP-ReID image-stage step.

Random weights (timing does not depend on their values). Each mode is timed in several interleaved rounds and the
fastest round is kept, so a busy machine slows every mode alike. Prints markdown tables.

    python tools/benchmark_inference.py                              # tiny ViT, CPU
    python tools/benchmark_inference.py --arch ViT-Tiny-16 ViT-B-16 --batch 8
    python tools/benchmark_inference.py --train-step                 # + PromptSG vs CLIP-ReID image-stage step
    python tools/benchmark_inference.py --arch ViT-B-16 --batch 64 --device cuda --amp --train-step
    python tools/benchmark_inference.py --arch ViT-B-16 MODEL.PROMPT.TRUNCATE_AT_EOT False   # 77-token text context
"""

import argparse
import os
import sys
import time
from typing import Callable, Dict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastreid_clip  # noqa: E402,F401
import torch  # noqa: E402
from fastreid.modeling.meta_arch import build_model  # noqa: E402
from tabulate import tabulate  # noqa: E402

from fastreid_clip.config import get_cfg, merge_config_file  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPTSG_CONFIGS = {"ViT-Tiny-16": os.path.join(ROOT, "configs/Synthetic/promptsg_vit_tiny.yml")}  # its MIM/f_θ sizes
PROMPTSG_CONFIG = os.path.join(ROOT, "configs/PromptSG/Base-promptsg-vit.yml")  # paper sizes for the others
CLIP_REID_CONFIG = os.path.join(ROOT, "configs/CLIP-ReID/Base-clip-reid-vit.yml")


def build(config: str, arch: str, device: str, num_classes: int, opts=()):
    """A model of ``config`` for ``arch`` with random weights; ``opts`` are extra KEY VALUE overrides."""
    if config == PROMPTSG_CONFIG:
        config = PROMPTSG_CONFIGS.get(arch, config)
    cfg = merge_config_file(get_cfg(), config, ["MODEL.BACKBONE.CLIP_NAME", arch, "MODEL.BACKBONE.PRETRAIN", "False",
                                                "MODEL.DEVICE", device, "MODEL.HEADS.NUM_CLASSES", str(num_classes)]
                            + list(opts))
    torch.manual_seed(0)
    return build_model(cfg)


def best_seconds(fns: Dict[str, Callable[[], object]], iters: int, rounds: int, device: str) -> Dict[str, float]:
    """Fastest round (``iters`` calls) of each function; the functions alternate round by round."""
    best = {name: float("inf") for name in fns}
    for fn in fns.values():  # warm-up (allocator, caches, lazy init)
        fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(iters):
                fn()
            if device == "cuda":
                torch.cuda.synchronize()
            best[name] = min(best[name], (time.perf_counter() - start) / iters)
    return best


def autocast(device: str, enabled: bool):
    dtype = torch.float16 if device == "cuda" else torch.bfloat16
    return torch.autocast(device, dtype=dtype, enabled=enabled)


def inference_rows(arch: str, args) -> list:
    model = build(PROMPTSG_CONFIG, arch, args.device, 751, args.opts).eval()
    images = torch.rand(args.batch, 3, 256, 128, device=args.device) * 255
    batch = {"images": images, "camids": torch.zeros(args.batch, dtype=torch.long, device=args.device)}

    def visual():
        return model.backbone(model.preprocess_image(batch)).proj

    def mode(name):
        def run():
            model.inference_mode = name
            return model(batch)
        return run

    with torch.no_grad(), autocast(args.device, args.amp):
        seconds = best_seconds({"visual encoder only": visual, "simplified": mode("simplified"),
                                "composed": mode("composed")}, args.iters, args.rounds, args.device)
    base = seconds["visual encoder only"]
    paper = {"visual encoder only": "1x", "simplified": "0.88x", "composed": "0.48x"}
    return [[arch, name, args.batch, f"{args.batch / s:.1f}", f"{base / s:.2f}x", paper[name]]
            for name, s in seconds.items()]


def train_rows(arch: str, args) -> list:
    """Forward + backward + Adam step of one PK batch: PromptSG vs CLIP-ReID's image stage (text bank ready)."""
    num_ids = max(args.batch // 4, 2)
    targets = torch.arange(num_ids, device=args.device).repeat_interleave(4)[:args.batch]
    batch = {"images": torch.rand(args.batch, 3, 256, 128, device=args.device) * 255, "targets": targets,
             "camids": torch.zeros(args.batch, dtype=torch.long, device=args.device)}
    promptsg = build(PROMPTSG_CONFIG, arch, args.device, 751, args.opts).train()
    clip_reid = build(CLIP_REID_CONFIG, arch, args.device, 751)
    clip_reid.set_stage("image")
    clip_reid.on_stage_start("image")
    clip_reid.train()
    steps = {}
    for name, model in (("PromptSG step", promptsg), ("CLIP-ReID image-stage step", clip_reid)):
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-6)

        def step(model=model, optimizer=optimizer):
            with autocast(args.device, args.amp):
                losses = model(batch)
            optimizer.zero_grad(set_to_none=True)
            sum(v.float() for v in losses.values()).backward()
            optimizer.step()
        steps[name] = step
    seconds = best_seconds(steps, max(args.iters // 2, 1), args.rounds, args.device)
    base = seconds["CLIP-ReID image-stage step"]
    return [[arch, name, args.batch, f"{s * 1000:.0f}", f"{s / base:.2f}x"] for name, s in seconds.items()]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", nargs="+", default=["ViT-Tiny-16"], help="open_clip architectures")
    parser.add_argument("--batch", type=int, default=8, help="images per batch")
    parser.add_argument("--iters", type=int, default=10, help="batches per timed round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the fastest is reported")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--amp", action="store_true", help="autocast (float16 on CUDA, bfloat16 on the CPU)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--train-step", action="store_true", help="also time PromptSG vs CLIP-ReID training steps")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides of the PromptSG config")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows, train = [], []
    for arch in args.arch:
        rows += inference_rows(arch, args)
        if args.train_step:
            train += train_rows(arch, args)
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    extra = f", {' '.join(args.opts)}" if args.opts else ""
    print(f"\nPromptSG inference ({where}, {'AMP' if args.amp else 'float32'}, random weights, best of "
          f"{args.rounds} rounds of {args.iters} batches{extra})\n")
    print(tabulate(rows, headers=["arch", "mode", "batch", "images/s", "vs visual", "paper Tab. 5"],
                   tablefmt="github"))
    if train:
        print("\nTraining step (forward + backward + Adam), same PK batch\n")
        print(tabulate(train, headers=["arch", "step", "batch", "ms", "vs CLIP-ReID"], tablefmt="github"))


if __name__ == "__main__":
    main()
