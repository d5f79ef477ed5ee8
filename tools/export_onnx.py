#!/usr/bin/env python
"""Export a trained model's inference path to ONNX (dynamic batch axis) and check it with onnxruntime.

    python tools/export_onnx.py --run-dir output/demo --output output/demo/model.onnx
    python tools/export_onnx.py --config-file configs/Synthetic/promptsg_vit_tiny.yml \\
        --weights output/promptsg_tiny/model_final.pth --output promptsg.onnx --speed
    # trailing KEY VALUE pairs override the config

The graph: ``images`` [B, 3, H, W] float32 RGB 0-255 at INPUT.SIZE_TEST (+ ``camids`` [B] int64 for SIE models)
-> ``features`` [B, D]. Models with several inference modes export the one their class names for export
(PromptSG: ``simplified``, the cached fixed prompt; ``--inference-mode`` picks another). The check prints the max
abs difference of onnxruntime's and PyTorch's L2-normalised features; ``--speed`` also times both on the CPU.
Needs ``pip install onnx onnxruntime`` (``pip install -e .[onnx]``).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastreid_clip  # noqa: E402,F401  (must precede every fastreid import)
from fastreid.modeling.meta_arch import META_ARCH_REGISTRY  # noqa: E402

from fastreid_clip.config import get_cfg, merge_config_file  # noqa: E402
from fastreid_clip.inference import FeatureExtractor, find_run_checkpoint  # noqa: E402
from fastreid_clip.inference.onnx_export import (DEFAULT_OPSET, check_onnx, export_onnx, export_overrides,  # noqa: E402
                                                 images_per_second)


def mode_overrides(config_file: str, mode: Optional[str]) -> list:
    """The overrides of ``mode`` (or of the class's export mode) for the config's meta-architecture."""
    cfg = merge_config_file(get_cfg(), config_file)
    cls = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)
    if mode is None:
        return export_overrides(cls)
    modes = getattr(cls, "INFERENCE_MODE_OVERRIDES", None) or {}
    if mode not in modes:
        raise SystemExit(f"{cls.__name__} has no inference mode '{mode}' (modes: {', '.join(modes) or 'none'})")
    return list(modes[mode])


def main(argv: Optional[Sequence[str]] = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", help="a training run's OUTPUT_DIR (config.yaml + model_final.pth)")
    p.add_argument("--config-file")
    p.add_argument("--weights")
    p.add_argument("--output", required=True, help=".onnx file to write")
    p.add_argument("--inference-mode", default=None, help="inference mode to export (default: the class's export mode)")
    p.add_argument("--camids", choices=["auto", "yes", "no"], default="auto",
                   help="add the camids input (auto: when the model's feature depends on the camera)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime parity check")
    p.add_argument("--speed", action="store_true", help="time onnxruntime vs PyTorch on the CPU")
    p.add_argument("--speed-batch", type=int, default=32)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = p.parse_args(argv)

    config = os.path.join(args.run_dir, "config.yaml") if args.run_dir else args.config_file
    weights = args.weights or (find_run_checkpoint(args.run_dir) if args.run_dir else None)
    if not config or not weights:
        raise SystemExit("give --run-dir, or --config-file and --weights")
    opts = mode_overrides(config, args.inference_mode) + list(args.opts)
    extractor = FeatureExtractor.from_config(config, weights, opts, device="cpu")
    camids = {"auto": None, "yes": True, "no": False}[args.camids]
    path = export_onnx(extractor, args.output, camids=camids, opset=args.opset)
    result = {"path": path, "overrides": opts}
    print(f"exported {extractor.cfg.MODEL.META_ARCHITECTURE} ({' '.join(opts) or 'config as is'}) to {path}")
    if not args.no_check:
        result["max_abs_diff"] = check_onnx(extractor, path)
        print(f"onnxruntime vs PyTorch, L2-normalised features: max abs diff {result['max_abs_diff']:.2e}")
    if args.speed:
        ort_ips, torch_ips = images_per_second(extractor, path, args.speed_batch)
        result["images_per_second"] = {"onnxruntime": ort_ips, "pytorch": torch_ips}
        print(f"CPU, batch {args.speed_batch}: onnxruntime {ort_ips:.0f} images/s, PyTorch {torch_ips:.0f} images/s")
    return result


if __name__ == "__main__":
    main()
