"""Training hooks fastreid-clip adds to FastReID's engine."""

from __future__ import annotations

import logging
from typing import Callable

from fastreid.engine.train_loop import HookBase
from fastreid.utils import comm
from torch.nn.parallel import DistributedDataParallel

__all__ = ["EvalBeforeTrain", "RankVisualization", "StageCheckpointer"]

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
    """Save ``model_<stage>_<epoch>.pth`` every ``checkpoint_period`` epochs and ``model_<stage>_final.pth`` at the
    end of the stage (plus ``model_final.pth`` after the last stage), recording the stage and epoch for resuming.

    FastReID's ``PeriodicCheckpointer`` names files by epoch only, which collides across stages.
    """

    def __init__(self, checkpointer, stage, stage_index: int, is_last_stage: bool):
        self.checkpointer = checkpointer
        self.stage = stage
        self.stage_index = stage_index
        self.is_last_stage = is_last_stage

    def after_epoch(self):
        epoch = self.trainer.epoch
        extra = {"stage": self.stage.name, "stage_index": self.stage_index, "epoch": epoch}
        if epoch + 1 >= self.stage.epochs:
            self.checkpointer.save(f"model_{self.stage.name}_final", **extra)
            if self.is_last_stage:
                self.checkpointer.save("model_final", **extra)
        elif self.stage.checkpoint_period > 0 and (epoch + 1) % self.stage.checkpoint_period == 0:
            self.checkpointer.save(f"model_{self.stage.name}_{epoch:04d}", **extra)
