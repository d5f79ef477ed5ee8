"""Training hooks fastreid-clip adds to FastReID's engine."""

from __future__ import annotations

import json
import logging
from typing import Callable

from fastreid.engine.hooks import PeriodicWriter
from fastreid.engine.train_loop import HookBase
from fastreid.utils import comm
from fastreid.utils.events import JSONWriter, get_event_storage
from torch.nn.parallel import DistributedDataParallel

__all__ = ["EvalBeforeTrain", "RankVisualization", "StageCheckpointer", "StagePeriodicWriter", "StageJSONWriter"]

logger = logging.getLogger(__name__)


class EvalBeforeTrain(HookBase):
    """Evaluate once before the first epoch of a fresh run (not when resuming), to show what training adds.

    The results are stored in ``trainer.init_eval_results``.
    """

    def __init__(self, eval_function: Callable[[], dict]):
        self._func = eval_function

    def before_train(self):
        if self.trainer.start_epoch != 0:
            return
        logger.info("Evaluation before training (TEST.EVAL_INIT)")
        self.trainer.init_eval_results = self._func()
        comm.synchronize()


class RankVisualization(HookBase):
    """After training, save a picture of ranked retrievals on the first test set (main process only)."""

    def __init__(self, cfg, output_path: str):
        self.cfg = cfg
        self.output_path = output_path

    def after_train(self):
        from ..utils.rank_vis import save_ranked_retrievals

        model = self.trainer.model
        if isinstance(model, DistributedDataParallel):
            model = model.module
        path = save_ranked_retrievals(model, self.cfg, self.cfg.DATASETS.TESTS[0], self.output_path,
                                      num_queries=self.cfg.TEST.RANK_VIS.NUM_QUERIES, top_k=self.cfg.TEST.RANK_VIS.TOP_K)
        logger.info("Ranked retrievals written to %s", path)


class StageCheckpointer(HookBase):
    """Save ``model_<stage>_<NNNN>.pth`` after every ``checkpoint_period``-th epoch and ``model_<stage>_final.pth`` at
    the end of the stage (plus ``model_final.pth`` after the last stage), recording the stage and epoch for resuming.

    ``NNNN`` is the number of epochs trained in the stage (1-based: ``model_image_0010.pth`` is saved after the
    stage's 10th epoch). Inside the file, ``epoch`` is the 0-based index of that last trained epoch (what resume
    continues after) and ``epochs_done`` the same count as the name. FastReID's ``PeriodicCheckpointer`` names files
    by epoch only, which collides across stages.
    """

    def __init__(self, checkpointer, stage, stage_index: int, is_last_stage: bool):
        self.checkpointer = checkpointer
        self.stage = stage
        self.stage_index = stage_index
        self.is_last_stage = is_last_stage

    def after_epoch(self):
        epoch = self.trainer.epoch
        done = epoch + 1
        extra = {"stage": self.stage.name, "stage_index": self.stage_index, "epoch": epoch, "epochs_done": done}
        if done >= self.stage.epochs:
            self.checkpointer.save(f"model_{self.stage.name}_final", **extra)
            if self.is_last_stage:
                self.checkpointer.save("model_final", **extra)
        elif self.stage.checkpoint_period > 0 and done % self.stage.checkpoint_period == 0:
            self.checkpointer.save(f"model_{self.stage.name}_{done:04d}", **extra)


class StagePeriodicWriter(PeriodicWriter):
    """FastReID's ``PeriodicWriter`` that writes once per iteration: its ``after_epoch`` wrote the epoch's last
    iteration a second time whenever ``after_step`` had just written it (the console showed that line twice)."""

    def __init__(self, writers, period=20):
        super().__init__(writers, period)
        self._written_iter = None

    def _write(self):
        iteration = get_event_storage().iter
        if iteration == self._written_iter:
            return
        self._written_iter = iteration
        for writer in self._writers:
            writer.write()

    def after_step(self):
        if (self.trainer.iter + 1) % self._period == 0 or self.trainer.iter == self.trainer.max_iter - 1:
            self._write()

    def after_epoch(self):
        self._write()


class _StageLines:
    """A file handle that adds ``{"stage": ..., "epoch": ...}`` to every JSON line written through it."""

    def __init__(self, handle, stage: str, epoch: Callable[[], int]):
        self._handle = handle
        self._stage = stage
        self._epoch = epoch

    def write(self, line: str):
        record = json.loads(line)
        record.update(stage=self._stage, epoch=self._epoch())
        return self._handle.write(json.dumps(record, sort_keys=True) + "\n")

    def __getattr__(self, name):  # flush, fileno, close
        return getattr(self._handle, name)


class StageJSONWriter(JSONWriter):
    """FastReID's ``metrics.json`` writer whose records also name the training stage and the 1-based epoch
    (``iteration`` counts from 0 in every stage, so without the stage the records of two stages collide)."""

    def __init__(self, json_file: str, stage: str, epoch: Callable[[], int], window_size: int = 20):
        super().__init__(json_file, window_size)
        self._file_handle = _StageLines(self._file_handle, stage, epoch)
