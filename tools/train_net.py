#!/usr/bin/env python
"""Train or evaluate a fastreid-clip model with FastReID's engine (same command line as FastReID's train_net.py).

    python tools/train_net.py --config-file configs/CLIP-Baseline/market_vit.yml MODEL.DEVICE cuda
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS logs/.../model_final.pth
                                                  # writes into OUTPUT_DIR/eval/<time>, not over the run's files
    python tools/train_net.py --config-file ... --resume          # continue from OUTPUT_DIR/last_checkpoint
    python tools/train_net.py --config-file ... --num-gpus 2      # DDP through FastReID's launch (gloo on CPU)
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastreid_clip  # noqa: E402,F401  (must precede every fastreid import)
from fastreid.engine import default_argument_parser, launch  # noqa: E402

from fastreid_clip.checkpoint import fill_shapes_from_checkpoint, load_model_weights, read_training_checkpoint  # noqa: E402,E501
from fastreid_clip.config import get_cfg, merge_config_file  # noqa: E402
from fastreid_clip.engine import ClipTrainer, default_setup, eval_output_dir  # noqa: E402


def setup(args):
    """The frozen config, and for --eval-only the MODEL.WEIGHTS state dict (read once)."""
    cfg = get_cfg()
    merge_config_file(cfg, args.config_file, args.opts)
    checkpoint = None
    if args.eval_only:
        checkpoint = read_training_checkpoint(cfg.MODEL.WEIGHTS)
        fill_shapes_from_checkpoint(cfg, checkpoint)
        cfg.OUTPUT_DIR = eval_output_dir(cfg.OUTPUT_DIR)  # the training run's config.yaml and log.txt stay as they are
    cfg.freeze()
    default_setup(cfg, args)  # seeds with SEED + rank when SEED >= 0
    return cfg, checkpoint


def main(args):
    cfg, checkpoint = setup(args)
    if args.eval_only:
        model = ClipTrainer.build_model(cfg)
        load_model_weights(model, cfg.MODEL.WEIGHTS, state=checkpoint)
        return ClipTrainer.test(cfg, model)
    trainer = ClipTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
