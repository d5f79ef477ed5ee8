"""``ClipCheckpointer``: FastReID's ``Checkpointer`` with safe reads, atomic checksummed writes and damage-aware resume.

Differences to ``fastreid.utils.checkpoint.Checkpointer`` (its ``load``/``has_checkpoint`` API is kept):

* every file it reads goes through :func:`~fastreid_clip.checkpoint.files.read_checkpoint` (``weights_only=True``,
  named errors, checksum verified), so ``--resume`` never unpickles code from ``OUTPUT_DIR``;
* ``save`` and ``last_checkpoint`` are written atomically and each checkpoint records its content checksum;
* :meth:`ClipCheckpointer.newest_valid_checkpoint` finds what to resume from: the file ``last_checkpoint`` names,
  or, when that one is missing or damaged, the newest other checkpoint that reads and verifies, with a warning
  naming every damaged file.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional, Tuple

from fastreid.utils.checkpoint import Checkpointer

from .files import CheckpointError, atomic_torch_save, atomic_write_text, is_temporary_file, read_checkpoint

__all__ = ["ClipCheckpointer", "RESUME_KEYS"]

logger = logging.getLogger(__name__)

# What a checkpoint needs to continue training from it (StageCheckpointer writes these).
RESUME_KEYS = ("model", "optimizer", "lr_sched", "stage", "epoch")


class ClipCheckpointer(Checkpointer):
    """FastReID's checkpointer with ``weights_only`` reads, atomic checksummed writes and damage-aware resume."""

    def __init__(self, model, save_dir: str = "", *, save_to_disk: bool = True, **checkpointables: Any):
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.logger = logger

    def save(self, name: str, **kwargs: Any) -> Optional[str]:
        """Write ``<save_dir>/<name>.pth`` (model, checkpointables, ``kwargs``, checksum) and tag it as the last one."""
        if not self.save_dir or not self.save_to_disk:
            return None
        data: Dict[str, Any] = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        atomic_torch_save(data, path)
        self.tag_last_checkpoint(basename)
        logger.info("Saved checkpoint %s", path)
        return path

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        atomic_write_text(last_filename_basename, os.path.join(self.save_dir, "last_checkpoint"))

    def _load_file(self, f: str):
        return read_checkpoint(f)

    # ------------------------------------------------------------------ resume
    def _tagged_checkpoint(self) -> Optional[str]:
        tag = os.path.join(self.save_dir, "last_checkpoint")
        if not os.path.isfile(tag):
            return None
        with open(tag) as f:
            name = f.read().strip()
        return os.path.join(self.save_dir, name) if name else None

    def _candidates(self) -> List[str]:
        """The tagged checkpoint first, then every other ``.pth`` in ``save_dir``, newest first."""
        tagged = self._tagged_checkpoint()
        others = [os.path.join(self.save_dir, f) for f in os.listdir(self.save_dir)
                  if f.endswith(".pth") and not is_temporary_file(f)]
        others = sorted((p for p in others if p != tagged and os.path.isfile(p)), key=os.path.getmtime, reverse=True)
        return ([tagged] if tagged else []) + others

    def remove_temporary_files(self) -> None:
        """Delete the partial files a kill during :meth:`save` left behind."""
        for name in os.listdir(self.save_dir):
            if is_temporary_file(name):
                logger.info("Removing %s, a partial checkpoint left by an interrupted run", name)
                os.remove(os.path.join(self.save_dir, name))

    def newest_valid_checkpoint(self) -> Tuple[Optional[str], Optional[Dict[str, Any]]]:
        """``(path, content)`` of the checkpoint to resume from, or ``(None, None)`` when there is none.

        Damaged or unreadable files (and ``.pth`` files that are not resumable training checkpoints) are skipped
        with a warning that names them and says why.
        """
        if not self.save_dir or not os.path.isdir(self.save_dir):
            return None, None
        if self.save_to_disk:
            self.remove_temporary_files()
        tagged = self._tagged_checkpoint()
        skipped = []
        for path in self._candidates():
            try:
                data = read_checkpoint(path, what="checkpoint")
            except (CheckpointError, FileNotFoundError) as err:
                skipped.append(path)
                logger.warning("Cannot resume from %s: %s", path, err)
                continue
            missing = [k for k in RESUME_KEYS if not (isinstance(data, dict) and k in data)]
            if missing:
                skipped.append(path)
                logger.warning("Cannot resume from %s: it is not a training checkpoint of ClipTrainer (no %s)",
                               path, ", ".join(missing))
                continue
            if skipped:
                logger.warning("Falling back to %s, the newest valid checkpoint (%s %s)", path,
                               "last_checkpoint names" if tagged in skipped else "skipped",
                               ", ".join(os.path.basename(p) for p in skipped))
            elif path != tagged:
                logger.warning("%s has no valid last_checkpoint entry: resuming from the newest checkpoint %s",
                               self.save_dir, path)
            return path, data
        if skipped:
            logger.warning("No valid checkpoint in %s (damaged or not resumable: %s): training starts from the "
                           "beginning", self.save_dir, ", ".join(os.path.basename(p) for p in skipped))
        return None, None
