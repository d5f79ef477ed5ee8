"""``ClipTrainer``: FastReID's ``DefaultTrainer`` with the CLIP methods' data, solver and device handling.

What differs from ``DefaultTrainer`` (everything else, hooks, checkpointer, evaluation, writers, is FastReID's):

* data: CLIP transforms on FastReID's datasets/samplers (:mod:`fastreid_clip.data.build`);
* solver: CLIP-ReID's parameter groups (bias lr x2) and per-epoch schedules (:mod:`fastreid_clip.solver`);
* device: runs on CPU or CUDA (``MODEL.DEVICE``); DDP with gloo on CPU; AMP through ``torch.autocast`` on either;
* ``MODEL.HEADS.NUM_CLASSES`` and ``MODEL.BACKBONE.NUM_CAMERAS`` (SIE) are set from the training set;
* hooks: optional evaluation before training (``TEST.EVAL_INIT``), a ranked-retrieval picture after training
  (``TEST.RANK_VIS``) and a configurable log period (``SOLVER.LOG_PERIOD``).
"""

from __future__ import annotations

import logging
import os
import time

import torch
from fastreid.engine import DefaultTrainer, hooks
from fastreid.engine.train_loop import SimpleTrainer, TrainerBase
from fastreid.evaluation import ReidEvaluator
from fastreid.utils import comm
from fastreid.utils.checkpoint import Checkpointer
from fastreid.utils.file_io import PathManager
from fastreid.utils.logger import setup_logger
from torch.nn.parallel import DistributedDataParallel

from ..data.build import build_clip_test_loader, build_clip_train_loader
from ..solver import build_clip_lr_scheduler, build_clip_optimizer
from .hooks import EvalBeforeTrain, RankVisualization

__all__ = ["ClipTrainer", "AutocastTrainLoop"]

logger = logging.getLogger(__name__)


class AutocastTrainLoop(SimpleTrainer):
    """FastReID's ``SimpleTrainer`` step under ``torch.autocast`` on the model's device.

    float16 on CUDA uses a ``GradScaler``; on the CPU autocast runs in bfloat16 (no scaler needed). FastReID's own
    ``AMPTrainer`` asserts CUDA.
    """

    def __init__(self, model, data_loader, optimizer, param_wrapper=None, device_type: str = "cpu",
                 dtype: str = "float16"):
        super().__init__(model, data_loader, optimizer, param_wrapper)
        if dtype not in ("float16", "bfloat16"):
            raise ValueError(f"SOLVER.AMP.DTYPE must be float16 or bfloat16, got '{dtype}'")
        if device_type == "cpu" and dtype == "float16":
            logger.info("AMP on the CPU runs in bfloat16 (float16 autocast is a CUDA feature)")
            dtype = "bfloat16"
        self.device_type = device_type
        self.dtype = getattr(torch, dtype)
        self.grad_scaler = torch.amp.GradScaler("cuda") if (device_type == "cuda" and dtype == "float16") else None

    def run_step(self):
        assert self.model.training, "[AutocastTrainLoop] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        with torch.autocast(self.device_type, dtype=self.dtype):
            loss_dict = self.model(data)
        losses = sum(v.float() for v in loss_dict.values())
        self.optimizer.zero_grad(set_to_none=True)
        if self.grad_scaler is not None:
            self.grad_scaler.scale(losses).backward()
            self._write_metrics(loss_dict, data_time)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            losses.backward()
            self._write_metrics(loss_dict, data_time)
            self.optimizer.step()


class ClipTrainer(DefaultTrainer):
    """Trainer for fastreid-clip's meta-architectures (``tools/train_net.py`` uses it)."""

    def __init__(self, cfg):  # noqa: D107  (mirrors DefaultTrainer.__init__ with our device/AMP/DDP choices)
        TrainerBase.__init__(self)
        if not logging.getLogger("fastreid").isEnabledFor(logging.INFO):
            setup_logger()
        data_loader = self.build_train_loader(cfg)
        cfg = self.auto_scale_for_dataset(cfg, data_loader.dataset)
        model = self.build_model(cfg)
        optimizer, param_wrapper = self.build_optimizer(cfg, model)
        device_type = torch.device(cfg.MODEL.DEVICE).type
        if comm.get_world_size() > 1:
            device_ids = [comm.get_local_rank()] if device_type == "cuda" else None
            model = DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)
        if cfg.SOLVER.AMP.ENABLED:
            self._trainer = AutocastTrainLoop(model, data_loader, optimizer, param_wrapper, device_type,
                                              cfg.SOLVER.AMP.DTYPE)
        else:
            self._trainer = SimpleTrainer(model, data_loader, optimizer, param_wrapper)
        self.iters_per_epoch = len(data_loader.dataset) // cfg.SOLVER.IMS_PER_BATCH
        if self.iters_per_epoch == 0:
            raise ValueError(f"the training set ({len(data_loader.dataset)} images) is smaller than one batch "
                             f"(SOLVER.IMS_PER_BATCH {cfg.SOLVER.IMS_PER_BATCH})")
        self.scheduler = self.build_lr_scheduler(cfg, optimizer, self.iters_per_epoch)
        self.checkpointer = Checkpointer(model, cfg.OUTPUT_DIR, save_to_disk=comm.is_main_process(),
                                         optimizer=optimizer, **self.scheduler)
        self.start_epoch = 0
        self.max_epoch = cfg.SOLVER.MAX_EPOCH
        self.max_iter = self.max_epoch * self.iters_per_epoch
        self.warmup_iters = cfg.SOLVER.WARMUP_ITERS
        self.delay_epochs = cfg.SOLVER.DELAY_EPOCHS
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    # ------------------------------------------------------------------ building blocks
    @classmethod
    def build_train_loader(cls, cfg):
        logger.info("Prepare training set")
        return build_clip_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_clip_test_loader(cfg, dataset_name)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_dir=None):
        data_loader, num_query = cls.build_test_loader(cfg, dataset_name)
        return data_loader, ReidEvaluator(cfg, num_query, output_dir)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_clip_optimizer(cfg, model), None

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer, iters_per_epoch):
        return build_clip_lr_scheduler(cfg, optimizer, iters_per_epoch)

    @classmethod
    def auto_scale_for_dataset(cls, cfg, train_set):
        """``NUM_CLASSES`` (FastReID's rule) and, when 0, the SIE camera count from the training set."""
        cfg = cls.auto_scale_hyperparams(cfg, train_set.num_classes)
        if cfg.MODEL.BACKBONE.NUM_CAMERAS == 0:
            frozen = cfg.is_frozen()
            cfg.defrost()
            cfg.MODEL.BACKBONE.NUM_CAMERAS = train_set.num_cameras
            if comm.is_main_process() and cfg.OUTPUT_DIR:
                with PathManager.open(os.path.join(cfg.OUTPUT_DIR, "config.yaml"), "w") as f:
                    f.write(cfg.dump())
            if frozen:
                cfg.freeze()
        return cfg

    def build_hooks(self):
        ret = super().build_hooks()
        for hook in ret:
            if isinstance(hook, hooks.PeriodicWriter):
                hook._period = self.cfg.SOLVER.LOG_PERIOD
        if self.cfg.TEST.EVAL_INIT:
            ret.insert(0, EvalBeforeTrain(lambda: self.test(self.cfg, self.model)))
        if self.cfg.TEST.RANK_VIS.ENABLED and comm.is_main_process():
            ret.append(RankVisualization(self.cfg, os.path.join(self.cfg.OUTPUT_DIR, "ranked_retrievals.jpg")))
        return ret
