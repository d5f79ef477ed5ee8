#!/usr/bin/env python
"""Benchmark CLIP-SCGI against its speed targets (issue 13): a training step with cached caption embeddings against
a PromptSG step at the same batch (target <= 1.2x), the same step encoding the captions on the fly
(``CAPTIONS.CACHE False``), and inference images/s against the bare visual encoder (target >= 0.85x).

Random weights (timing does not depend on their values); captions are 56-token attribute captions. Every variant is
timed in interleaved rounds and the fastest round is kept (tools/benchmark_inference.py's method). Prints markdown.

    python tools/benchmark_scgi.py                                  # tiny ViT, CPU
    python tools/benchmark_scgi.py --arch ViT-B-16 --batch 8
    python tools/benchmark_scgi.py --arch ViT-B-16 --batch 64 --device cuda --amp
    python tools/benchmark_scgi.py MODEL.SCGI.CFF.KV all            # overrides of the CLIP-SCGI config
"""

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools"))

import fastreid_clip  # noqa: E402,F401
import torch  # noqa: E402
from benchmark_inference import autocast, best_seconds  # noqa: E402
from fastreid.modeling.meta_arch import build_model  # noqa: E402
from tabulate import tabulate  # noqa: E402

from fastreid_clip.config import get_cfg, merge_config_file  # noqa: E402

TINY = {"ClipSCGI": "configs/Synthetic/clip_scgi_vit_tiny.yml", "PromptSG": "configs/Synthetic/promptsg_vit_tiny.yml"}
PAPER = {"ClipSCGI": "configs/CLIP-SCGI/Base-clip-scgi-vit.yml", "PromptSG": "configs/PromptSG/Base-promptsg-vit.yml"}
CAPTION = ("A young man is wearing a red striped shirt. He is wearing a red striped shirt and blue trousers. The man "
           "is wearing black shoes and carrying a green backpack. The man has short black hair and wears glasses.")


def build(method: str, arch: str, device: str, opts=()):
    config = (TINY if arch == "ViT-Tiny-16" else PAPER)[method]
    cfg = merge_config_file(get_cfg(), os.path.join(ROOT, config),
                            ["MODEL.BACKBONE.CLIP_NAME", arch, "MODEL.BACKBONE.PRETRAIN", "False", "MODEL.DEVICE",
                             device, "MODEL.HEADS.NUM_CLASSES", "751"] + list(opts))
    torch.manual_seed(0)
    return build_model(cfg)


def _batch(args, text_encoder=None):
    num_ids = max(args.batch // 4, 2)
    batch = {"images": torch.rand(args.batch, 3, 256, 128, device=args.device) * 255,
             "targets": torch.arange(num_ids, device=args.device).repeat_interleave(4)[:args.batch],
             "camids": torch.zeros(args.batch, dtype=torch.long, device=args.device)}
    if text_encoder is not None:
        texts = [CAPTION.replace("red", f"red {i}") for i in range(args.batch)]
        batch["caption_tokens"] = text_encoder.tokenize(texts).to(args.device)
    return batch


def train_rows(arch: str, args) -> list:
    scgi = build("ClipSCGI", arch, args.device, args.opts).train()
    fly = build("ClipSCGI", arch, args.device, ["CAPTIONS.CACHE", "False"] + list(args.opts)).train()
    promptsg = build("PromptSG", arch, args.device).train()
    batch = _batch(args, fly.text_encoder)
    with torch.no_grad():
        embeds = fly.caption_features(batch)
    cached = {k: v for k, v in batch.items() if k != "caption_tokens"}
    cached["caption_embeds"] = embeds
    steps = {}
    for name, model, data in (("PromptSG step", promptsg, cached), ("CLIP-SCGI step (cached captions)", scgi, cached),
                              ("CLIP-SCGI step (captions on the fly)", fly, batch)):
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-6)

        def step(model=model, optimizer=optimizer, data=data):
            with autocast(args.device, args.amp):
                losses = model(data)
            optimizer.zero_grad(set_to_none=True)
            sum(v.float() for v in losses.values()).backward()
            optimizer.step()
        steps[name] = step
    seconds = best_seconds(steps, max(args.iters // 2, 1), args.rounds, args.device)
    base = seconds["PromptSG step"]
    return [[arch, name, args.batch, f"{s * 1000:.0f}", f"{s / base:.2f}x"] for name, s in seconds.items()]


def inference_rows(arch: str, args) -> list:
    model = build("ClipSCGI", arch, args.device, args.opts).eval()
    batch = _batch(args)

    def visual():
        return model.backbone(model.preprocess_image(batch)).proj

    with torch.no_grad(), autocast(args.device, args.amp):
        seconds = best_seconds({"visual encoder only": visual, "CLIP-SCGI (fixed prompt cached)": lambda: model(batch)},
                               args.iters, args.rounds, args.device)
    base = seconds["visual encoder only"]
    return [[arch, name, args.batch, f"{args.batch / s:.1f}", f"{base / s:.2f}x"] for name, s in seconds.items()]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", nargs="+", default=["ViT-Tiny-16"], help="open_clip architectures")
    parser.add_argument("--batch", type=int, default=32, help="images per batch")
    parser.add_argument("--iters", type=int, default=10, help="batches per timed round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the fastest is reported")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--amp", action="store_true", help="autocast (float16 on CUDA, bfloat16 on the CPU)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--no-train", action="store_true", help="inference only")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides of the CLIP-SCGI config")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    inference, train = [], []
    for arch in args.arch:
        inference += inference_rows(arch, args)
        if not args.no_train:
            train += train_rows(arch, args)
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"\nCLIP-SCGI ({where}, {'AMP' if args.amp else 'float32'}, random weights, best of {args.rounds} rounds "
          f"of {args.iters} batches{', ' + ' '.join(args.opts) if args.opts else ''})\n")
    print(tabulate(inference, headers=["arch", "inference", "batch", "images/s", "vs visual (target >= 0.85x)"],
                   tablefmt="github"))
    if train:
        print("\nTraining step (forward + backward + Adam), same PK batch\n")
        print(tabulate(train, headers=["arch", "step", "batch", "ms", "vs PromptSG (target <= 1.2x)"],
                       tablefmt="github"))


if __name__ == "__main__":
    main()
