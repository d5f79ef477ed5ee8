#!/usr/bin/env python
"""Seconds per optimizer step of the three ``SOLVER.OPT_IMPL`` kernels (fused, foreach, for_loop).

The parameters are those of an open_clip visual tower (random init, no weight file) with CLIP-ReID's parameter
groups (:func:`~fastreid_clip.solver.build_stage_optimizer`: bias x2, weight decay 1e-4); every parameter gets a
random gradient once, then ``step()`` is timed (median of ``--steps`` steps after two warm-up steps). The update
itself is the same up to float rounding (tests/solver/test_opt_impl.py); only the time differs.

Example::

    python tools/benchmark_optimizer.py --archs ViT-Tiny-16,ViT-B-16 --opts Adam,SGD
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import fastreid_clip  # noqa: E402,F401  (compat before fastreid)
import torch  # noqa: E402

from fastreid_clip.config.stages import StageSpec  # noqa: E402
from fastreid_clip.modeling.backbones.clip_model import ClipGeometry, build_clip_model  # noqa: E402
from fastreid_clip.solver.build import OPT_IMPLS, build_stage_optimizer  # noqa: E402


def time_steps(visual: torch.nn.Module, opt: str, impl: str, steps: int, device: torch.device) -> float:
    stage = StageSpec(name="image", epochs=1, opt=opt, base_lr=5e-6)
    optimizer = build_stage_optimizer(visual, stage, impl=impl)
    gen = torch.Generator(device="cpu").manual_seed(0)
    for param in visual.parameters():
        param.grad = torch.randn(param.shape, generator=gen).to(device)
    times = []
    for i in range(steps + 2):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", default="ViT-Tiny-16,ViT-B-16", help="open_clip architectures (comma-separated)")
    parser.add_argument("--opts", default="Adam", help="torch.optim optimizers (comma-separated)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"| arch | params | optimizer | {' | '.join(OPT_IMPLS)} | for_loop / fused |")
    print("|---|---|---|" + "---|" * len(OPT_IMPLS) + "---|")
    for arch in args.archs.split(","):
        visual = build_clip_model(arch, None, ClipGeometry()).visual.to(device)
        count = sum(p.numel() for p in visual.parameters())
        for opt in args.opts.split(","):
            secs = {impl: time_steps(visual, opt, impl, args.steps, device) for impl in OPT_IMPLS}
            cells = " | ".join(f"{secs[impl] * 1000:.1f} ms" for impl in OPT_IMPLS)
            print(f"| {arch} | {count / 1e6:.1f} M | {opt} | {cells} | {secs['for_loop'] / secs['fused']:.1f}x |",
                  flush=True)


if __name__ == "__main__":
    main()
