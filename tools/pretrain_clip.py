#!/usr/bin/env python
"""Contrastive pretraining of a small CLIP on the synthetic corpus (docs/pretraining.md).

    python tools/pretrain_clip.py --arch ViT-Tiny-16 --out pretrained/synthetic/ --steps 2000 --batch-size 64
    python tools/pretrain_clip.py ... --resume                 # continue from the newest valid checkpoint
    python tools/pretrain_clip.py --eval-only pretrained/synthetic/ViT-Tiny-16-synthetic.safetensors

Writes ``<out>/<arch>-synthetic.safetensors`` (open_clip state dict, loads with MODEL.BACKBONE.PRETRAIN_PATH),
``<arch>-synthetic.json`` (open_clip config at the pretraining size), ``<arch>-synthetic.report.json`` and
``<out>/checkpoints/``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastreid_clip  # noqa: E402,F401  (compat patches, offline hub)
import torch  # noqa: E402

logger = logging.getLogger("fastreid_clip.pretrain")


def parse_args(argv=None) -> argparse.Namespace:
    from fastreid_clip.pretrain.model import PRETRAIN_ARCHS
    from fastreid_clip.pretrain.sampler import SAMPLERS
    from fastreid_clip.pretrain.trainer import PRECISIONS
    from fastreid_clip.pretrain.transforms import RESIZE_MODES

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default=None,
                   help=f"open_clip architecture ({', '.join(PRETRAIN_ARCHS)}; default ViT-Tiny-16; with --eval-only read from the report)")
    p.add_argument("--out", default="pretrained/synthetic", help="output folder (weights, config, report, checkpoints)")
    p.add_argument("--name", default=None, help="file stem of the outputs (default <arch>-synthetic)")
    p.add_argument("--image-size", type=int, default=128, help="square pretraining input size")
    p.add_argument("--resize", choices=RESIZE_MODES, default="stretch", help="how the 2:1 renders become square")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--min-lr", type=float, default=0.0)
    p.add_argument("--warmup-steps", type=int, default=None, help="linear warm-up steps (default 5%% of --steps)")
    p.add_argument("--weight-decay", type=float, default=0.2)
    p.add_argument("--grad-clip", type=float, default=0.0, help="max gradient norm (0: off)")
    p.add_argument("--seed", type=int, default=0, help="model init, batch order and flips")
    p.add_argument("--precision", choices=PRECISIONS, default=None, help="autocast dtype (default bf16; CUDA fp16)")
    p.add_argument("--sampler", choices=SAMPLERS, default="distinct",
                   help="distinct: one image per identity per batch (default); random: plain shuffling")
    p.add_argument("--no-flip", action="store_true", help="no random horizontal flips")
    p.add_argument("--checkpoint-period", type=int, default=200)
    p.add_argument("--resume", action="store_true", help="continue from the newest valid checkpoint in --out")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers for the one-off corpus encoding")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--corpus-ids", type=int, default=2000, help="training identities of the corpus")
    p.add_argument("--images-per-id", type=int, default=8, help="images per training identity")
    p.add_argument("--corpus-seed", type=int, default=1000)
    p.add_argument("--heldout-ids", type=int, default=200, help="held-out identities for zero-shot evaluation")
    p.add_argument("--heldout-images-per-id", type=int, default=4)
    p.add_argument("--corpus-cache", default=None, help="folder caching the corpus renders (JPEG)")
    p.add_argument("--eval-only", metavar="FILE", default=None,
                   help="only evaluate a .safetensors file this tool wrote (zero-shot, held-out split)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--save-dtype", choices=("float32", "float16"), default="float32",
                   help="dtype of the floating-point tensors in the written .safetensors (float16 halves the file)")
    return p.parse_args(argv)


def fail(message: str) -> None:
    print(f"pretrain_clip: error: {message}", file=sys.stderr)
    sys.exit(2)


def build_corpus(args, split: str):
    try:
        from fastreid_clip.data.synthetic.pretrain_corpus import PretrainCorpus
    except ImportError as err:
        fail(f"the pretraining corpus (fastreid_clip.data.synthetic.pretrain_corpus) cannot be imported: {err}")
    if split == "train":
        return PretrainCorpus(split="train", num_identities=args.corpus_ids, images_per_identity=args.images_per_id,
                              seed=args.corpus_seed, cache_dir=args.corpus_cache)
    return PretrainCorpus(split="heldout", num_identities=args.heldout_ids,
                          images_per_identity=args.heldout_images_per_id, seed=args.corpus_seed,
                          cache_dir=args.corpus_cache)


def zero_shot_spec():
    from fastreid_clip.data.synthetic.pretrain_corpus import zero_shot_attributes

    return zero_shot_attributes()


def evaluate(pair, arch, image_size, resize, args, device, autocast_dtype):
    from fastreid_clip.pretrain import encode_corpus, evaluate_zero_shot, format_zero_shot

    heldout = encode_corpus(build_corpus(args, "heldout"), arch, image_size, resize, workers=args.workers,
                            progress=not args.no_progress, desc="encode held-out")
    report = evaluate_zero_shot(pair, heldout, zero_shot_spec(), arch, device=device, autocast_dtype=autocast_dtype)
    print(format_zero_shot(report))
    return report


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("fastreid_clip").setLevel(logging.INFO)  # ours; open_clip logs through the root logger
    from fastreid_clip.modeling.backbones.weights import WeightFileError
    from fastreid_clip.pretrain import (ClipPair, PretrainConfig, ResumeMismatch, encode_corpus, load_pretrained,
                                        pretrain, write_outputs)
    from fastreid_clip.pretrain.export import output_paths
    from fastreid_clip.pretrain.model import check_arch

    if args.threads is not None:
        if args.threads < 1:
            fail(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        fail(f"--device {args.device}: CUDA is not available here")
    device = torch.device(args.device)
    precision = args.precision or "bf16"
    autocast_dtype = None if precision == "fp32" else torch.bfloat16 if precision == "bf16" else torch.float16

    if args.eval_only:
        if not os.path.isfile(args.eval_only):
            fail(f"--eval-only: no such file '{args.eval_only}'")
        try:
            model, arch, image_size = load_pretrained(args.eval_only, args.arch)
        except (ValueError, WeightFileError) as err:
            fail(str(err))
        report_path = args.eval_only[: -len(".safetensors")] + ".report.json"
        resize = args.resize
        if os.path.isfile(report_path):
            with open(report_path) as f:
                resize = json.load(f).get("resize_mode", resize)
        evaluate(ClipPair(model.to(device), arch), arch, image_size, resize, args, device, autocast_dtype)
        return 0

    args.arch = args.arch or "ViT-Tiny-16"
    try:
        check_arch(args.arch, args.image_size)
    except ValueError as err:
        fail(str(err))
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        fail(f"--out '{args.out}' exists and is not a folder")
    name = args.name or f"{args.arch}-synthetic"
    paths = output_paths(args.out, name)
    checkpoints = os.path.join(args.out, "checkpoints")
    if not args.resume and os.path.isdir(checkpoints) and os.listdir(checkpoints):
        fail(f"'{checkpoints}' already holds checkpoints: pass --resume to continue that run, or choose another --out")
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as err:
        fail(f"cannot create --out '{args.out}': {err}")
    if not os.access(args.out, os.W_OK):
        fail(f"--out '{args.out}' is not writable")

    config = PretrainConfig(
        arch=args.arch, image_size=args.image_size, resize_mode=args.resize, steps=args.steps,
        batch_size=args.batch_size, lr=args.lr, min_lr=args.min_lr,
        warmup_steps=args.warmup_steps if args.warmup_steps is not None else max(1, args.steps // 20),
        weight_decay=args.weight_decay, grad_clip=args.grad_clip, seed=args.seed, precision=precision,
        sampler=args.sampler, flip=not args.no_flip, checkpoint_period=args.checkpoint_period, device=args.device)
    try:
        config.check()
    except ValueError as err:
        fail(str(err))

    wall = time.time()
    train = encode_corpus(build_corpus(args, "train"), args.arch, args.image_size, args.resize, workers=args.workers,
                          progress=not args.no_progress, desc="encode corpus")
    encode_seconds = time.time() - wall
    try:
        result = pretrain(config, train, args.out, resume=args.resume, progress=not args.no_progress)
    except (ValueError, ResumeMismatch) as err:
        fail(str(err))
    pair = ClipPair(result.model, args.arch)
    zero_shot = evaluate(pair, args.arch, args.image_size, args.resize, args, device, autocast_dtype)
    tail = result.losses[-min(50, len(result.losses)):]
    report = {
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "arch": args.arch, "image_size": args.image_size, "resize_mode": args.resize, "seed": args.seed,
        "settings": config.trajectory(),
        "corpus": {"train_identities": args.corpus_ids, "train_images_per_identity": args.images_per_id,
                   "train_images": len(train), "heldout_identities": args.heldout_ids,
                   "heldout_images_per_identity": args.heldout_images_per_id, "corpus_seed": args.corpus_seed},
        "steps": config.steps, "resumed_from_step": result.resumed_from, "threads": torch.get_num_threads(),
        "wall_seconds": round(time.time() - wall, 1), "encode_seconds": round(encode_seconds, 1),
        "train_seconds_this_process": round(result.wall_seconds, 1),
        "images_per_second": round(result.images_per_second, 1),
        "first_loss": result.losses[0], "final_loss": result.losses[-1],
        "final_loss_mean_last_50": sum(tail) / len(tail), "final_logit_scale": result.logit_scales[-1],
        "zero_shot": zero_shot,
    }
    from fastreid_clip.pretrain.export import SAVE_DTYPES

    write_outputs(result.model, args.arch, args.image_size, args.out, name, report, SAVE_DTYPES[args.save_dtype])
    print(f"wrote {paths['weights']}, {paths['config']} and {paths['report']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
