"""``ClipTrainer``: FastReID's ``DefaultTrainer`` running a model's training stages in order.

A stage (:class:`~fastreid_clip.config.stages.StageSpec`) names what trains, on which data, with which
optimizer and per-epoch schedule. Single-stage models (the baseline) get one stage from ``SOLVER.*``.
A model with an ``on_train_set(train_set)`` method gets the training set once, after it is built (e.g. to read a
per-sample field such as each identity's source domain).
For every stage the trainer

1. freezes everything outside the stage's ``TRAINABLE`` prefixes (parameters the model froze itself, such as
   the BN-neck biases or the text encoder, stay frozen) and calls ``model.set_stage(name)``;
2. builds the stage's data: PK batches of augmented images, or features of every training image cached once
   with the test transform (sharded over ranks and gathered; consecutive ``features`` stages share one cache) for
   prompt learning, in shuffled or fixed order (``BATCH_ORDER``); both carry the train set's per-sample fields
   (``batch[name]``, e.g. CLIP-FGDI's ``"domains"``);
3. calls ``model.on_stage_start(name)`` (e.g. CLIP-ReID computes its text-feature bank);
4. builds the stage's optimizer and scheduler (or, with ``STAGES.<NAME>.SHARE_OPTIMIZER_WITH``, continues those of
   an earlier stage from their state at its end), wraps the model in DDP (gloo on CPU, NCCL on CUDA), and
   registers FastReID's hooks (timer, ``LRScheduler``, ``EvalHook``, writers) plus a stage-aware checkpointer;
5. runs the epochs. Checkpoints record the stage and epoch, so ``--resume`` continues inside the right stage
   with its optimizer and scheduler state; with ``SEED >= 0`` every epoch's batches and augmentations are a
   function of ``(SEED, stage, epoch)``, so a resumed run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import logging
import os
import copy
import random
import time
from typing import Optional

import numpy as np
import torch
from fastreid.engine import DefaultTrainer, hooks
from fastreid.engine.train_loop import SimpleTrainer, TrainerBase
from fastreid.utils import comm
from fastreid.utils.env import seed_all_rng
from fastreid.utils.events import EventStorage
from fastreid.utils.file_io import PathManager
from fastreid.utils.logger import setup_logger
from torch.nn.parallel import DistributedDataParallel

from ..checkpoint import ClipCheckpointer, atomic_torch_save, load_model_weights, read_checkpoint
from ..checkpoint.files import CheckpointError
from ..config.stages import StageSpec, shared_stage, stage_specs
from ..data.build import build_clip_test_loader, build_clip_train_set
from ..data.epoch_data import FeatureEpochs, ImageEpochs
from ..evaluation import ChunkedReidEvaluator, inference_shard_sizes
from ..solver import build_stage_optimizer, build_stage_scheduler
from ..utils.distributed import broadcast_module
from .feature_cache import cache_train_features
from .hooks import EvalBeforeTrain, RankVisualization, StageCheckpointer, StagePeriodicWriter, StageJSONWriter

__all__ = ["ClipTrainer", "AutocastTrainLoop"]

logger = logging.getLogger(__name__)


class AutocastTrainLoop(SimpleTrainer):
    """FastReID's ``SimpleTrainer`` step under ``torch.autocast`` on the model's device.

    float16 on CUDA uses a ``GradScaler``; on the CPU autocast runs in bfloat16 (no scaler needed). FastReID's own
    ``AMPTrainer`` asserts CUDA.
    """

    def __init__(self, model, data_loader, optimizer, device_type: str = "cpu", dtype: str = "float16"):
        super().__init__(model, data_loader, optimizer, None)
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

    def __init__(self, cfg):  # noqa: D107  (replaces DefaultTrainer.__init__: stages are built in ``train``)
        TrainerBase.__init__(self)
        if not logging.getLogger("fastreid").isEnabledFor(logging.INFO):
            setup_logger()
        if comm.is_main_process() and cfg.OUTPUT_DIR:
            PathManager.mkdirs(cfg.OUTPUT_DIR)
        if cfg.SEED >= 0:
            seed_all_rng(cfg.SEED + comm.get_rank())  # model initialisation and data generation are reproducible
        logger.info("Prepare training set")
        self.train_set = build_clip_train_set(cfg)
        cfg = self.auto_scale_for_dataset(cfg, self.train_set)
        self.cfg = cfg
        self.device = torch.device(cfg.MODEL.DEVICE)
        self.raw_model = self.build_model(cfg)
        if hasattr(self.raw_model, "on_train_set"):  # e.g. CLIP-FGDI reads each identity's source domain
            self.raw_model.on_train_set(self.train_set)
        broadcast_module(self.raw_model)  # every rank starts from rank 0's weights (feature caching precedes DDP)
        self.stages = stage_specs(cfg)
        self._always_frozen = {id(p) for p in self.raw_model.parameters() if not p.requires_grad}
        self.seed = cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()
        self.stage_index, self.start_epoch = 0, 0
        self._resume_checkpoint: Optional[dict] = None
        self._finished_checkpoint: Optional[dict] = None  # set when --resume finds every stage already trained
        self._trainer: Optional[SimpleTrainer] = None  # built per stage
        self.checkpointer = ClipCheckpointer(self.raw_model, cfg.OUTPUT_DIR, save_to_disk=comm.is_main_process())
        self.warmup_iters, self.delay_epochs = 0, 0
        self._stage_end_states = {}  # stage name -> optimizer / scheduler state at its end (SHARE_OPTIMIZER_WITH)
        self._feature_cache = None  # (features, labels) of the last features stage (_train_features)

    @property
    def model(self) -> torch.nn.Module:
        """The model being trained (DDP-wrapped in a distributed stage)."""
        return self._trainer.model if self._trainer is not None else self.raw_model

    # ------------------------------------------------------------------ building blocks
    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_clip_test_loader(cfg, dataset_name)

    @classmethod
    def test(cls, cfg, model):
        """FastReID's per-dataset evaluation, or with ``DG.MULTI_TARGET`` one row per target (splits of the small DG
        targets averaged, ``DG.SPLITS``) plus the average row (:mod:`fastreid_clip.evaluation.multi_target`)."""
        if "DG" not in cfg or not cfg.DG.MULTI_TARGET:
            return super().test(cfg, model)
        from fastreid.evaluation import inference_on_dataset

        from ..evaluation.multi_target import evaluate_targets

        def evaluate_one(sub_cfg, name):
            data_loader, evaluator = cls.build_evaluator(sub_cfg, name)
            return inference_on_dataset(model, data_loader, evaluator, flip_test=sub_cfg.TEST.FLIP.ENABLED)

        return evaluate_targets(cfg, evaluate_one)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_dir=None):
        data_loader, num_query = cls.build_test_loader(cfg, dataset_name)
        # This process's share of the test set (InferenceSampler's contiguous shard), so its features are stored
        # in one block; with another sampler the evaluator only adds blocks.
        shard = inference_shard_sizes(len(data_loader.dataset), comm.get_world_size())[comm.get_rank()]
        return data_loader, ChunkedReidEvaluator(cfg, num_query, output_dir, num_samples=shard)

    @classmethod
    def auto_scale_for_dataset(cls, cfg, train_set):
        """``NUM_CLASSES`` (FastReID's rule: set only when 0) and, when 0, the SIE camera count from the training set.

        The class count is ``train_set.num_classes``, unless ``MODEL.META_ARCHITECTURE`` has a classmethod
        ``num_train_classes(cfg, train_set)``: then its value (e.g. CLIP-FGDI's ``MODEL.FGDI.NOMINAL_CLASSES``)."""
        from fastreid.modeling.meta_arch import META_ARCH_REGISTRY

        sizer = getattr(META_ARCH_REGISTRY._obj_map.get(cfg.MODEL.META_ARCHITECTURE), "num_train_classes", None)
        num_classes = sizer(cfg, train_set) if sizer is not None else train_set.num_classes
        cfg = cls.auto_scale_hyperparams(cfg, num_classes)
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

    # ------------------------------------------------------------------ resume
    def resume_or_load(self, resume=True):
        """Resume from the newest valid checkpoint in ``OUTPUT_DIR`` (stage, epoch, optimizer and scheduler), or
        load ``MODEL.WEIGHTS`` as initial weights.

        Resuming starts at the file ``last_checkpoint`` names; a damaged one (empty, truncated, checksum mismatch) is
        named in a warning and the newest other valid checkpoint is used. Checkpoints load with
        ``weights_only=True``. ``MODEL.WEIGHTS`` must fit the model exactly unless ``MODEL.WEIGHTS_PARTIAL``.
        """
        if resume:
            path, checkpoint = self.checkpointer.newest_valid_checkpoint()
            if path is not None:
                self._resume_from(path, checkpoint)
                return
            logger.info("--resume: no checkpoint in %s, training from the start", self.cfg.OUTPUT_DIR)
        if self.cfg.MODEL.WEIGHTS:
            load_model_weights(self.raw_model, self.cfg.MODEL.WEIGHTS, partial=self.cfg.MODEL.WEIGHTS_PARTIAL)

    def _resume_from(self, path: str, checkpoint: dict) -> None:
        load_model_weights(self.raw_model, path, state=checkpoint["model"])
        names = [s.name for s in self.stages]
        stage = checkpoint["stage"]
        if stage not in names:
            raise ValueError(f"checkpoint '{path}' was saved in stage {stage!r}, which is not one of this config's "
                             f"stages {names} (STAGES.NAMES)")
        self.stage_index, self.start_epoch = names.index(stage), checkpoint["epoch"] + 1
        if self.start_epoch >= self.stages[self.stage_index].epochs:
            self.stage_index, self.start_epoch = self.stage_index + 1, 0
        else:
            self._resume_checkpoint = checkpoint
        if self.stage_index >= len(self.stages):
            self._finished_checkpoint = checkpoint
            logger.info("Resuming from %s: all %d stages are already trained", path, len(self.stages))
        else:
            logger.info("Resuming from %s: stage %d/%d '%s', epoch %d of %d (1-based)", path, self.stage_index + 1,
                        len(self.stages), self.stages[self.stage_index].name, self.start_epoch + 1,
                        self.stages[self.stage_index].epochs)

    # ------------------------------------------------------------------ training
    def train(self):
        """Run the remaining stages; return the last evaluation results (main process)."""
        first = self.stage_index
        for index in range(first, len(self.stages)):
            self.stage_index = index
            self._run_stage(self.stages[index], self.start_epoch if index == first else 0)
        self.start_epoch = 0
        if self._finished_checkpoint is not None:
            self._ensure_final_checkpoint(self._finished_checkpoint)
        if comm.is_main_process():
            return getattr(self, "_last_eval_results", None)

    def _ensure_final_checkpoint(self, checkpoint: dict) -> None:
        """A resumed run whose stages were all trained still leaves a loadable ``model_final.pth``: a kill while it
        was written (or a damaged copy) is repaired from the last stage's final checkpoint, which has the same
        content."""
        if not (comm.is_main_process() and self.cfg.OUTPUT_DIR):
            return
        path = os.path.join(self.cfg.OUTPUT_DIR, "model_final.pth")
        try:
            read_checkpoint(path)
            logger.info("Training had already finished; %s is valid, nothing to train", path)
            return
        except (CheckpointError, FileNotFoundError) as err:
            logger.warning("Training had already finished but %s; writing it again from the last checkpoint", err)
        atomic_torch_save(checkpoint, path)  # a new checksum replaces the recorded one (same content)
        self.checkpointer.tag_last_checkpoint("model_final.pth")

    def _set_trainable(self, stage: StageSpec) -> None:
        from ..config.validate import check_trainable_prefixes

        for spec in self.stages:  # every stage's TRAINABLE prefixes, so a typo fails before the first stage trains
            check_trainable_prefixes(self.raw_model, spec)
        for name, param in self.raw_model.named_parameters():
            allowed = not stage.trainable or any(name.startswith(p) for p in stage.trainable)
            param.requires_grad_(allowed and id(param) not in self._always_frozen)

    def _stage_data(self, stage: StageSpec):
        rank, world = comm.get_rank(), comm.get_world_size()
        seed = self.seed + 7919 * self.stage_index
        if stage.data == "features":
            feats, labels = self._train_features()
            return FeatureEpochs(feats, labels, stage.ims_per_batch, seed, rank, world,
                                 fields=getattr(self.train_set, "sample_fields", None), order=stage.batch_order)
        self._feature_cache = None  # an image stage may change the encoder: a later features stage re-caches
        instances = ImageEpochs.instances_for(self.cfg, stage)  # 0 = random batches (TrainingSampler); checked
        return ImageEpochs(self.train_set, stage.ims_per_batch, instances, self.cfg.DATALOADER.NUM_WORKERS, seed,
                           rank, world)

    def _train_features(self):
        """The cached training features of a ``features`` stage. Consecutive ``features`` stages (CLIP-FGDI's
        ``id_prompt`` then ``domain_prompt``) share one cache: a stage on cached features cannot change the image
        encoder that produced them (it gets no gradient), so encoding the training set again would give the same
        features."""
        previous = self.stages[self.stage_index - 1] if self.stage_index > 0 else None
        if self._feature_cache is not None and previous is not None and previous.data == "features":
            logger.info("Stage '%s' reuses the training features cached for stage '%s'",
                        self.stages[self.stage_index].name, previous.name)
            return self._feature_cache
        self._feature_cache = cache_train_features(self.cfg, self.train_set, self.raw_model.cache_features,
                                                   self.raw_model, self.device)
        return self._feature_cache

    def _seed_epoch(self, epoch: int) -> None:
        """Make the epoch's augmentations a function of (SEED, stage, epoch, rank) when SEED is set."""
        if self.cfg.SEED < 0:
            return
        seed = (self.seed + 7919 * self.stage_index + 104729 * epoch + comm.get_rank()) % (2 ** 31)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def _run_stage(self, stage: StageSpec, start_epoch: int) -> None:
        cfg, model = self.cfg, self.raw_model
        logger.info("Stage %d/%d '%s': %d epochs, trainable %s, data %s", self.stage_index + 1, len(self.stages),
                    stage.name, stage.epochs, list(stage.trainable) or "all", stage.data)
        self._set_trainable(stage)
        if hasattr(model, "set_stage"):
            model.set_stage(stage.name)
        data = self._stage_data(stage)
        if hasattr(model, "on_stage_start"):
            model.on_stage_start(stage.name)
        shared = shared_stage(self.stages, self.stage_index)  # STAGES.<NAME>.SHARE_OPTIMIZER_WITH
        opt_stage = shared or stage
        optimizer = build_stage_optimizer(model, opt_stage, cfg.SOLVER.BIAS_LR_MATCH, cfg.SOLVER.MOMENTUM,
                                          cfg.SOLVER.NESTEROV, cfg.SOLVER.OPT_IMPL)
        self.scheduler = {"lr_sched": build_stage_scheduler(optimizer, opt_stage)}
        if self._resume_checkpoint is not None:
            optimizer.load_state_dict(self._resume_checkpoint["optimizer"])
            self.scheduler["lr_sched"].load_state_dict(self._resume_checkpoint["lr_sched"])
            self._resume_checkpoint = None
        elif shared is not None:
            state = self._stage_end_state(shared.name)
            optimizer.load_state_dict(state["optimizer"])
            self.scheduler["lr_sched"].load_state_dict(state["lr_sched"])
            logger.info("Stage '%s' continues the optimizer and scheduler of stage '%s' (scheduler epoch %d)",
                        stage.name, shared.name, self.scheduler["lr_sched"].last_epoch)
        wrapped = model
        if comm.get_world_size() > 1:
            device_ids = [comm.get_local_rank()] if self.device.type == "cuda" else None
            wrapped = DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)
        if cfg.SOLVER.AMP.ENABLED:
            self._trainer = AutocastTrainLoop(wrapped, [], optimizer, self.device.type, cfg.SOLVER.AMP.DTYPE)
        else:
            self._trainer = SimpleTrainer(wrapped, [], optimizer, None)
        self.checkpointer = ClipCheckpointer(model, cfg.OUTPUT_DIR, save_to_disk=comm.is_main_process(),
                                             optimizer=optimizer, **self.scheduler)
        self.iters_per_epoch = data.nominal_iters()
        self.max_epoch = stage.epochs
        self.max_iter = stage.epochs * self.iters_per_epoch
        self._hooks = []
        self.register_hooks(self._stage_hooks(stage, fresh=start_epoch == 0))
        self._epoch_loop(data, start_epoch, stage.epochs)
        if any(s.share_optimizer_with.upper() == stage.name.upper() for s in self.stages):
            self._stage_end_states[stage.name] = copy.deepcopy(
                {"optimizer": optimizer.state_dict(), "lr_sched": self.scheduler["lr_sched"].state_dict()})

    def _stage_end_state(self, name: str) -> dict:
        """Optimizer and scheduler state at the end of stage ``name``: kept in memory when it ran in this process,
        else read from its ``model_<name>_final.pth`` (a run resumed in a later stage)."""
        if name in self._stage_end_states:
            return self._stage_end_states[name]
        path = os.path.join(self.cfg.OUTPUT_DIR, f"model_{name}_final.pth")
        try:
            checkpoint = read_checkpoint(path)
        except (CheckpointError, FileNotFoundError) as err:
            raise RuntimeError(f"stage '{self.stages[self.stage_index].name}' continues the optimizer of stage "
                               f"'{name}' (STAGES.{self.stages[self.stage_index].name.upper()}.SHARE_OPTIMIZER_WITH), "
                               f"but {path} cannot be read: {err}") from err
        return {"optimizer": checkpoint["optimizer"], "lr_sched": checkpoint["lr_sched"]}

    def _epoch_loop(self, data, start_epoch: int, max_epoch: int) -> None:
        """TrainerBase.train with a per-epoch batch plan (epochs may differ slightly in length)."""
        self.iter = self.start_iter = start_epoch * self.iters_per_epoch
        with EventStorage(self.start_iter) as self.storage:
            try:
                self.before_train()
                for self.epoch in range(start_epoch, max_epoch):
                    self.before_epoch()
                    self._seed_epoch(self.epoch)
                    batches = data.epoch(self.epoch)
                    self._trainer._data_loader_iter = iter(batches)
                    for _ in range(len(batches)):
                        self.before_step()
                        self.run_step()
                        self.after_step()
                        self.iter += 1
                    self.after_epoch()
            except Exception:
                logger.exception("Exception during training:")
                raise
            finally:
                self.after_train()

    def _stage_hooks(self, stage: StageSpec, fresh: bool):
        cfg = self.cfg
        first, last = self.stage_index == 0, self.stage_index == len(self.stages) - 1
        ret = [hooks.IterationTimer(), hooks.LRScheduler(self.optimizer, self.scheduler)]
        if cfg.TEST.EVAL_INIT and first and fresh:
            ret.insert(0, EvalBeforeTrain(lambda: self.test(self.cfg, self.raw_model)))
        if stage.eval_period > 0:
            def test_and_save_results():
                self._last_eval_results = self.test(self.cfg, self.model)
                return self._last_eval_results

            ret.append(hooks.EvalHook(stage.eval_period, test_and_save_results))
        if comm.is_main_process():
            ret.append(StageCheckpointer(self.checkpointer, stage, self.stage_index, is_last_stage=last))
            ret.append(StagePeriodicWriter(self.build_stage_writers(stage), cfg.SOLVER.LOG_PERIOD))
        if last and cfg.TEST.RANK_VIS.ENABLED and comm.is_main_process():
            ret.append(RankVisualization(cfg, os.path.join(cfg.OUTPUT_DIR, "ranked_retrievals.jpg")))
        return ret

    def build_stage_writers(self, stage: StageSpec):
        """FastReID's writers (console, ``metrics.json``, TensorBoard) for one stage: every ``metrics.json`` record
        names its stage and 1-based epoch (iterations count from 0 in each stage), and each stage's TensorBoard
        events go to ``OUTPUT_DIR/tensorboard/<stage>`` (``OUTPUT_DIR`` itself for a single-stage run)."""
        from fastreid.utils.events import CommonMetricPrinter, TensorboardXWriter

        tb_dir = self.cfg.OUTPUT_DIR if len(self.stages) == 1 else os.path.join(self.cfg.OUTPUT_DIR, "tensorboard",
                                                                                 stage.name)
        return [CommonMetricPrinter(self.max_iter),
                StageJSONWriter(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json"), stage.name,
                                lambda: self.epoch + 1),
                TensorboardXWriter(tb_dir)]
