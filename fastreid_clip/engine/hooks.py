"""Training hooks fastreid-clip adds to FastReID's engine."""

from __future__ import annotations

import logging
from typing import Callable

from fastreid.engine.train_loop import HookBase
from fastreid.utils import comm
from torch.nn.parallel import DistributedDataParallel

__all__ = ["EvalBeforeTrain", "RankVisualization"]

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
