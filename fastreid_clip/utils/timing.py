"""Timing helpers shared by the speed benchmarks in ``tools/`` (best-of-N, interleaved, CUDA-synchronised)."""

from __future__ import annotations

import time
from typing import Callable, Dict, Iterable, Mapping

import torch

__all__ = ["sync", "clock", "best_times", "train_steps"]


def sync(device: str) -> None:
    """Wait for queued CUDA work (no-op on the CPU)."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def clock(device: str) -> Callable[[], float]:
    """CPU time of the process on a one-thread CPU run (it does not count the time spent waiting for a core on a
    shared machine, which wall time does), wall time otherwise."""
    if str(device) == "cpu" and torch.get_num_threads() == 1:
        return time.process_time
    return time.perf_counter


def best_times(runs: Mapping[str, Callable[[], None]], repeats: int, device: str,
               warmup: bool = True) -> Dict[str, float]:
    """Fastest of ``repeats`` calls of each function, the functions interleaved (run A, run B, run A, ...) so that a
    change of the machine's load affects all of them alike; one warm-up call each first."""
    if warmup:
        for run in runs.values():
            run()
    now = clock(device)
    best = {name: float("inf") for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            sync(device)
            start = now()
            run()
            sync(device)
            best[name] = min(best[name], now() - start)
    return best


def train_steps(loss_fn: Callable[[Dict], Dict[str, torch.Tensor]], batches: Callable[[], Iterable[Dict]],
                optimizer: torch.optim.Optimizer) -> Callable[[], None]:
    """A function that runs one optimizer step (sum of ``loss_fn(batch)``'s losses) for every batch of
    ``batches()``: one training step (``lambda: [batch]``) or one epoch of minibatches."""

    def run():
        for batch in batches():
            losses = loss_fn(batch)
            optimizer.zero_grad(set_to_none=True)
            sum(losses.values()).backward()
            optimizer.step()
    return run
