#!/usr/bin/env python
"""Benchmark our chunked evaluator against FastReID's ``ReidEvaluator`` on the same synthetic features.

Sizes: ``cpu`` (3,000 queries x 30,000 gallery) and ``msmt`` (MSMT17: 11,659 x 82,161), 1280-d features,
identities and cameras drawn like MSMT17's (about 27 gallery images per identity, 15 cameras). Features are
``signal * identity centre + camera offset + noise``, so the metrics land in a realistic range.

Each (size, method) runs in its own child process that draws the features (seeded: both methods see the
same ones), feeds them batch by batch to the evaluator's ``process`` and times ``evaluate``. Each evaluator is
built as its trainer builds it: FastReID's ``ReidEvaluator(cfg, num_query)``, ours with ``num_samples`` (as
``ClipTrainer.build_evaluator`` passes it). Reported:

* wall s: ``evaluate()`` wall time (fastest of ``--repeats`` runs);
* eval MB: peak resident memory during ``evaluate()`` minus the resident memory just before it
  (``VmHWM`` reset through ``/proc/self/clear_refs``, so the peak is ``evaluate``'s own);
* RSS MB: peak resident memory of the whole child (interpreter, torch, features included);
* GPU MB: peak CUDA memory allocated during ``evaluate()`` minus what was allocated before it;
* mAP, Rank-1, mINP in percent, as the evaluators return them.

Timings on a shared machine are noisy (torch's multi-threaded kernels suffer most from other loads), hence
``--repeats``; ``--threads`` fixes torch's CPU thread count in both children.

Examples::

    python tools/benchmark_eval.py                                  # CPU case, both evaluators
    python tools/benchmark_eval.py --sizes msmt --skip-fastreid      # MSMT17 size, ours only
    python tools/benchmark_eval.py --sizes cpu,msmt --device cuda --skip-fastreid msmt
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from typing import NamedTuple, Optional

METHODS = ("fastreid", "ours")


class Size(NamedTuple):
    num_query: int
    num_gallery: int
    num_ids: int


SIZES = {"cpu": Size(3000, 30000, 1117), "msmt": Size(11659, 82161, 3060)}
NUM_CAMERAS = 15
BATCH = 256


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def synthetic_test_set(size: Size, dim: int, device: str, seed: int):
    """Query-then-gallery features, identities and cameras.

    Args:
        size: numbers of queries, gallery items and identities.
        dim: feature dimension D.
        device: where the tensors are drawn.
        seed: random seed.

    Returns:
        ``([Q + G, D] float32 features, [Q + G] int64 identities, [Q + G] int64 cameras)``.
    """
    import torch

    generator = torch.Generator(device=device).manual_seed(seed)
    total = size.num_query + size.num_gallery
    pids = torch.randint(0, size.num_ids, (total,), generator=generator, device=device)
    camids = torch.randint(0, NUM_CAMERAS, (total,), generator=generator, device=device)
    centres = torch.randn(size.num_ids, dim, generator=generator, device=device) * 0.38
    camera_offsets = torch.randn(NUM_CAMERAS, dim, generator=generator, device=device) * 0.2
    feats = torch.empty(total, dim, device=device)
    for start in range(0, total, 8192):
        end = min(start + 8192, total)
        noise = torch.randn(end - start, dim, generator=generator, device=device)
        feats[start:end] = noise.add_(centres[pids[start:end]]).add_(camera_offsets[camids[start:end]])
    return feats, pids, camids


def run_child(method: str, size_name: str, args: argparse.Namespace) -> dict:
    """Evaluates one method on one size in this process.

    Args:
        method: ``"fastreid"`` (FastReID's ``ReidEvaluator``) or ``"ours"`` (``ChunkedReidEvaluator``).
        size_name: a key of :data:`SIZES`.
        args: the parsed command line (device, dim, chunk size, threads, seed).

    Returns:
        One table row: wall time, memory peaks and metrics.
    """
    import fastreid_clip  # noqa: F401  (before fastreid)
    import torch
    from fastreid.config import get_cfg

    from fastreid_clip.evaluation import ChunkedReidEvaluator, add_eval_config

    if args.threads:
        torch.set_num_threads(args.threads)
    size = SIZES[size_name]
    cfg = get_cfg()
    add_eval_config(cfg)
    cfg.TEST.METRIC = "cosine"
    cfg.TEST.CHUNK_SIZE = args.chunk_size
    if method == "fastreid":
        from fastreid.evaluation import ReidEvaluator

        evaluator = ReidEvaluator(cfg, size.num_query)
    else:
        # As ClipTrainer.build_evaluator builds it: with the test-set size, so storage is reserved once.
        evaluator = ChunkedReidEvaluator(cfg, size.num_query, num_samples=size.num_query + size.num_gallery)

    device = args.device
    feats, pids, camids = synthetic_test_set(size, args.dim, device, args.seed)
    evaluator.reset()
    for start in range(0, feats.shape[0], BATCH):  # separate tensors per batch, like model outputs
        batch = slice(start, start + BATCH)
        evaluator.process({"targets": pids[batch].clone(), "camids": camids[batch].clone()}, feats[batch].clone())
    del feats, pids, camids
    gc.collect()

    cuda = device == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        gpu_before = torch.cuda.memory_allocated()
    rss_before = _status_mb("VmRSS")
    _reset_peak_rss()
    start_time = time.perf_counter()
    results = evaluator.evaluate()
    if cuda:
        torch.cuda.synchronize()
    wall = time.perf_counter() - start_time
    return {
        "size": size_name,
        "method": method,
        "device": device,
        "wall_s": wall,
        "eval_mb": _status_mb("VmHWM") - rss_before,
        "rss_mb": _status_mb("VmHWM"),
        "gpu_mb": (torch.cuda.max_memory_allocated() - gpu_before) / 2**20 if cuda else None,
        "mAP": float(results["mAP"]),
        "R1": float(results["Rank-1"]),
        "mINP": float(results["mINP"]),
    }


def spawn_child(method: str, size_name: str, args: argparse.Namespace) -> dict:
    """Runs :func:`run_child` in a fresh interpreter, so that memory peaks of different runs never mix.

    Args:
        method: ``"fastreid"`` or ``"ours"``.
        size_name: a key of :data:`SIZES`.
        args: the parsed command line.

    Returns:
        The child's table row.
    """
    command = [
        sys.executable, os.path.abspath(__file__), "--child", method, "--sizes", size_name, "--dim", str(args.dim),
        "--device", args.device, "--chunk-size", str(args.chunk_size), "--seed", str(args.seed),
        "--threads", str(args.threads),
    ]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [_repo_root(), os.environ.get("PYTHONPATH")])))
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{method} on {size_name} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _repo_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _format_table(rows: list[dict]) -> str:
    header = ["size", "method", "device", "wall s", "eval MB", "RSS MB", "GPU MB", "mAP", "R1", "mINP"]
    lines = [header]
    for row in rows:
        gpu = "-" if row["gpu_mb"] is None else f"{row['gpu_mb']:.0f}"
        lines.append([
            row["size"], row["method"], row["device"], f"{row['wall_s']:.2f}", f"{row['eval_mb']:.0f}",
            f"{row['rss_mb']:.0f}", gpu, f"{row['mAP']:.4f}", f"{row['R1']:.4f}", f"{row['mINP']:.4f}",
        ])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(line, widths)) for line in lines)


def _comparisons(rows: list[dict]) -> list[str]:
    out = []
    for size_name in dict.fromkeys(row["size"] for row in rows):
        by_method = {row["method"]: row for row in rows if row["size"] == size_name}
        if set(by_method) != set(METHODS):
            continue
        theirs, ours = by_method["fastreid"], by_method["ours"]
        delta = max(abs(theirs[key] - ours[key]) for key in ("mAP", "R1", "mINP"))
        out.append(
            f"{size_name}: ours is {theirs['wall_s'] / ours['wall_s']:.1f}x faster, uses "
            f"{ours['eval_mb'] / max(theirs['eval_mb'], 1e-9):.3f}x FastReID's evaluation memory "
            f"({ours['rss_mb'] / theirs['rss_mb']:.3f}x its process peak); max |metric difference| {delta:.2e} %"
        )
    return out


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="cpu", help="comma-separated: " + ", ".join(SIZES))
    parser.add_argument("--skip-fastreid", nargs="?", const="all", default="",
                        help="skip FastReID's evaluator for these sizes (comma-separated; no value: all sizes)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="where the features live (auto: cuda when available)")
    parser.add_argument("--dim", type=int, default=1280, help="feature dimension")
    parser.add_argument("--chunk-size", type=int, default=0, help="TEST.CHUNK_SIZE of our evaluator (0: auto)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per (size, method); the fastest is reported")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.child:
        print(json.dumps(run_child(args.child, args.sizes, args)))
        return 0

    sizes = [name for name in args.sizes.split(",") if name]
    unknown = set(sizes) - set(SIZES)
    if unknown:
        raise SystemExit(f"unknown sizes {sorted(unknown)}; choose from {list(SIZES)}")
    skipped = set(SIZES) if args.skip_fastreid == "all" else set(filter(None, args.skip_fastreid.split(",")))
    rows = []
    for size_name in sizes:
        methods = [method for method in METHODS if not (method == "fastreid" and size_name in skipped)]
        best: dict[str, dict] = {}
        for _ in range(args.repeats):
            for method in methods:  # alternate methods so that machine load affects both alike
                row = spawn_child(method, size_name, args)
                print(f"  {size_name} {method}: {row['wall_s']:.2f} s", file=sys.stderr, flush=True)
                if method not in best or row["wall_s"] < best[method]["wall_s"]:
                    best[method] = row
        rows.extend(best[method] for method in methods)
    print(_format_table(rows))
    for line in _comparisons(rows):
        print(line)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(rows, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
