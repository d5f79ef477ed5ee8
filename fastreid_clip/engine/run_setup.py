"""Start-of-run set-up for ``tools/train_net.py``: FastReID's ``default_setup`` steps with three differences.

* ``SEED >= 0`` seeds python/numpy/torch with ``SEED + rank`` (FastReID's ``default_setup`` always draws and logs
  "Using a generated random seed", even when the config sets one); ``SEED < 0`` draws one, as FastReID does.
* ``--eval-only`` never touches a training run's files: it writes its ``config.yaml`` and ``log.txt`` into
  ``OUTPUT_DIR/eval/<YYYYmmdd-HHMMSS>`` (:func:`eval_output_dir`), so evaluating a run's checkpoint with the run's
  ``OUTPUT_DIR`` keeps that run's config and log as they were.
* The ``fastreid_clip`` loggers write to the same console and ``log.txt`` (:mod:`fastreid_clip.utils.logger`).
"""

from __future__ import annotations

import os
import time

import torch
from fastreid.utils import comm
from fastreid.utils.collect_env import collect_env_info
from fastreid.utils.env import seed_all_rng
from fastreid.utils.file_io import PathManager
from fastreid.utils.logger import setup_logger

__all__ = ["default_setup", "eval_output_dir"]


def eval_output_dir(output_dir: str) -> str:
    """``<output_dir>/eval/<timestamp>``: where an ``--eval-only`` run writes (the same on every rank)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if comm.get_world_size() > 1:
        stamp = comm.all_gather(stamp)[0]  # rank 0's clock names the folder for every rank
    return os.path.join(output_dir or ".", "eval", stamp)


def default_setup(cfg, args) -> None:
    """Logger, environment and config logging, ``config.yaml`` in ``OUTPUT_DIR``, seeding, cuDNN benchmark."""
    output_dir = cfg.OUTPUT_DIR
    rank = comm.get_rank()
    if comm.is_main_process() and output_dir:
        PathManager.mkdirs(output_dir)
    logger = setup_logger(output_dir, distributed_rank=rank)
    logger.info("Rank of current process: %d. World size: %d", rank, comm.get_world_size())
    logger.info("Environment info:\n%s", collect_env_info())
    logger.info("Command line arguments: %s", args)
    config_file = getattr(args, "config_file", "")
    if config_file:
        with PathManager.open(config_file, "r") as f:
            logger.info("Contents of args.config_file=%s:\n%s", config_file, f.read())
    logger.info("Running with full config:\n%s", cfg)
    if comm.is_main_process() and output_dir:
        path = os.path.join(output_dir, "config.yaml")
        with PathManager.open(path, "w") as f:
            f.write(cfg.dump())
        logger.info("Full config saved to %s", os.path.abspath(path))
    if cfg.SEED >= 0:
        seed_all_rng(cfg.SEED + rank)
        logger.info("Seeded python, numpy and torch with SEED %d + rank %d", cfg.SEED, rank)
    else:
        seed_all_rng()  # logs the generated seed
    if not getattr(args, "eval_only", False):
        torch.backends.cudnn.benchmark = cfg.CUDNN_BENCHMARK
