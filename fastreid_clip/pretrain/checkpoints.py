"""Training checkpoints of a pretraining run: atomic, checksummed, weights_only-safe; newest valid one resumed.

``<out>/checkpoints/step_<step>.pth`` holds the model (open_clip state dict), optimizer and GradScaler state,
the step reached, the loss of every step so far, the run settings that fix the trajectory and a digest of the
encoded corpus. Nothing else is needed to continue identically: the batch order, flips and learning rate of a
step are functions of ``(seed, step)`` and no global random generator is used after initialisation.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from typing import Any, Dict, List, Optional, Tuple

from ..checkpoint.files import CheckpointError, atomic_torch_save, is_temporary_file, read_checkpoint

__all__ = ["checkpoint_dir", "checkpoint_path", "list_checkpoints", "save_checkpoint", "load_latest_checkpoint"]

logger = logging.getLogger(__name__)
_NAME = re.compile(r"step_(\d+)\.pth$")


def checkpoint_dir(out_dir: str) -> str:
    return os.path.join(out_dir, "checkpoints")


def checkpoint_path(out_dir: str, step: int) -> str:
    return os.path.join(checkpoint_dir(out_dir), f"step_{step:08d}.pth")


def list_checkpoints(out_dir: str) -> List[Tuple[int, str]]:
    """``[(step, path)]`` of the checkpoint files in ``out_dir``, newest first (temporary files left out)."""
    found = []
    for path in glob.glob(os.path.join(checkpoint_dir(out_dir), "step_*.pth")):
        match = _NAME.search(os.path.basename(path))
        if match and not is_temporary_file(path):
            found.append((int(match.group(1)), path))
    return sorted(found, reverse=True)


def save_checkpoint(out_dir: str, step: int, data: Dict[str, Any], keep: int = 2) -> str:
    """Write the checkpoint of ``step`` atomically and delete all but the ``keep`` newest."""
    os.makedirs(checkpoint_dir(out_dir), exist_ok=True)
    path = checkpoint_path(out_dir, step)
    atomic_torch_save(dict(data, step=step), path)
    for _, old in list_checkpoints(out_dir)[max(1, keep):]:
        try:
            os.remove(old)
        except OSError:
            pass
    return path


def load_latest_checkpoint(out_dir: str) -> Optional[Tuple[str, Dict[str, Any]]]:
    """``(path, data)`` of the newest checkpoint that reads and verifies, or None. Damaged ones are named in a
    warning and skipped."""
    for _, path in list_checkpoints(out_dir):
        try:
            data = read_checkpoint(path, what="pretraining checkpoint")
        except CheckpointError as err:
            logger.warning("skipping %s", err)
            continue
        if isinstance(data, dict) and "model" in data and "step" in data:
            return path, data
        logger.warning("skipping '%s': not a pretraining checkpoint", path)
    return None
