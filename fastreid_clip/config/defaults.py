"""``add_clip_config(cfg)``: the config keys fastreid-clip adds to FastReID's defaults.

Only new keys are added here; FastReID keys we reuse keep their meaning unless the comment says
otherwise (see docs/config.md for the full reference, with the source of every default).
"""

from __future__ import annotations

from fastreid.config import CfgNode as CN

__all__ = ["add_clip_config"]


def add_clip_config(cfg: CN) -> CN:
    """Add fastreid-clip's keys to a FastReID config in place (idempotent) and return it."""
    if "CLIP_NAME" in cfg.MODEL.BACKBONE:
        return cfg
    _C = cfg
    _C.defrost()

    # ---------------------------------------------------------------- CLIP backbone
    # Reused FastReID keys: PRETRAIN (load a weight file), PRETRAIN_PATH (the local file), STRIDE_SIZE (ViT patch
    # stride; (12, 12) = CLIP-ReID's overlapping patches), LAST_STRIDE (ModifiedResNet layer4 stride), SIE_COE (SIE λ;
    # FastReID/CLIP-ReID defaults.py say 3.0, CLIP-ReID's released SIE+OLP runs use 1.0, which our configs set).
    bb = _C.MODEL.BACKBONE
    bb.CLIP_NAME = "ViT-B-16"  # open_clip architecture: ViT-B-16, ViT-B-32, ViT-L-14, RN50, RN101, ViT-Tiny-16, RN-Tiny
    bb.QUICK_GELU = True  # OpenAI CLIP weights were trained with QuickGELU (x * sigmoid(1.702 x)) [both]
    bb.TRUST_TORCHSCRIPT = False  # allow OpenAI TorchScript archives (they unpickle code) as PRETRAIN_PATH
    bb.SIE_CAMERA = False  # SIE camera embedding added to the class token (CLIP-ReID "SIE-cla") [paper]
    bb.SIE_VIEW = False  # SIE view embedding (vehicle datasets with view labels) [ref-code]
    bb.NUM_CAMERAS = 0  # rows of the SIE camera table; 0 = set from the training set by the trainer
    bb.NUM_VIEWS = 0  # number of views for SIE_VIEW

    # ---------------------------------------------------------------- trained weights
    # MODEL.WEIGHTS (FastReID's key) initialises training from a fastreid-clip checkpoint. It must fit the model
    # exactly (every key, every shape); True = load only the tensors whose name and shape fit and log a summary
    # (e.g. fine-tuning a model trained on another dataset, whose classifier has another size).
    _C.MODEL.WEIGHTS_PARTIAL = False

    # ---------------------------------------------------------------- heads and losses
    _C.MODEL.HEADS.TEST_FEAT_NORM = True  # L2-normalise the retrieval feature (CLIP-ReID TEST.FEAT_NORM yes)
    # MODEL.LOSSES.CE.EPSILON is label smoothing in CLIP-ReID's form here: (1-eps) on the target plus eps/K on every
    # class (FastReID's own form puts eps/(K-1) on the others). MODEL.LOSSES.{CE,TRI}.SCALE are the loss weights.
    _C.MODEL.LOSSES.TRI.FEATURES = ("inter", "final", "proj")  # triplet on these backbone levels (CLIP-ReID: all 3)

    # ---------------------------------------------------------------- input pipeline
    _C.INPUT.INTERPOLATION_TRAIN = "bicubic"  # CLIP-ReID resizes train images bicubic [ref-code]
    _C.INPUT.INTERPOLATION_TEST = "bilinear"  # ... and test images bilinear (torchvision default) [ref-code]
    # INPUT.REA.MODE: "normal" = timm-style erasing filled with N(0,1) per pixel AFTER normalisation, i.e.
    # PIXEL_MEAN + PIXEL_STD * N(0,1) on FastReID's 0-255 scale (CLIP-ReID, SVLL); "constant" = FastReID's fill
    # with INPUT.REA.VALUE.
    _C.INPUT.REA.MODE = "normal"
    _C.INPUT.REA.AREA = (0.02, 1.0 / 3.0)  # erased area fraction range (timm: 0.02-1/3)
    _C.INPUT.REA.ASPECT = 0.3  # aspect ratio drawn log-uniformly from [ASPECT, 1/ASPECT]
    _C.INPUT.REA.ATTEMPTS = 10  # tries to place a rectangle that fits

    # ---------------------------------------------------------------- solver
    # SOLVER.SCHED must be "WarmupMultiStepEpochLR" (or "CosineEpochLR") for ClipTrainer: CLIP-ReID's schedule, stepped once per epoch at
    # its start (lr constant within an epoch, epoch 1 at WARMUP_FACTOR + (1 - WARMUP_FACTOR)/WARMUP_EPOCHS),
    # milestones SOLVER.STEPS counted in absolute epochs. With it, SOLVER.WARMUP_ITERS must be 0.
    _C.SOLVER.WARMUP_EPOCHS = 10  # CLIP-ReID ViT stage 2 [ref-code]
    _C.SOLVER.BIAS_LR_MATCH = "substring"  # "substring": every parameter whose name contains "bias" (CLIP-ReID,
    # includes attention in_proj_bias) gets BIAS_LR_FACTOR / WEIGHT_DECAY_BIAS; "exact": FastReID's rule (name == bias)
    # Per-module lr multipliers [[prefix, factor], ...]: the longest prefix matching a parameter name by whole
    # components wins, the bias factor multiplies on top; [] = every parameter at BASE_LR (STAGES.<NAME>.LR_FACTORS
    # for staged runs). PromptSG: [["inversion", 10.0], ["mim", 10.0], ["head", 10.0]] = 5e-5 for the new modules.
    _C.SOLVER.LR_FACTORS = []
    # How torch.optim applies the update: "fused" (one kernel; Adam step on ViT-B/16 ~20x faster than "for_loop"
    # on a 2-core CPU), "foreach" (torch's default), "for_loop" (the reference code's). Same update up to rounding.
    _C.SOLVER.OPT_IMPL = "fused"
    _C.SOLVER.LOG_PERIOD = 20  # iterations between training-log lines (FastReID hard-codes 200)
    _C.SOLVER.AMP.DTYPE = "float16"  # autocast dtype: float16 (+GradScaler) on CUDA; bfloat16 also works on CPU

    # ---------------------------------------------------------------- test
    _C.TEST.EVAL_INIT = False  # evaluate once before training starts (shows what training adds)
    _C.TEST.RANK_VIS = CN({"ENABLED": False})  # after training, save a picture of ranked retrievals
    _C.TEST.RANK_VIS.NUM_QUERIES = 6
    _C.TEST.RANK_VIS.TOP_K = 8

    # ---------------------------------------------------------------- datasets
    # DATASETS.COMBINEALL (FastReID's key: train + query + gallery of a source as training data) per source: () =
    # DATASETS.COMBINEALL for every DATASETS.NAMES entry (default); else one bool per entry, in order [ours; lets a
    # protocol mix combined and train-only sources].
    _C.DATASETS.COMBINEALL_PER_SOURCE = ()
    # A source trained with combineall whose dataset lists pid 0 in its _junk_pids (Market-1501's background) keeps
    # its query/gallery pid-0 images as ONE extra identity ("<dataset_name>_test_0"); pid -1 stays dropped. True is
    # the CLIP-FGDI reference's P1 (Market 1502 classes) [ref-code]; default False = FastReID's combine_all.
    _C.DATASETS.COMBINEALL_KEEP_PID0 = False

    # ---------------------------------------------------------------- reproducibility
    _C.SEED = -1  # >= 0: seed python/numpy/torch with SEED + rank after default_setup (FastReID seeds randomly)

    # ---------------------------------------------------------------- training stages
    # STAGES.NAMES lists the stages of a multi-stage method in order (each a STAGES.<NAME> node, see
    # fastreid_clip/config/stages.py); empty = one stage from SOLVER.* (the baseline).
    _C.STAGES = CN()
    _C.STAGES.NAMES = ()

    from fastreid_clip.config.clip_reid import add_clip_reid_config
    from fastreid_clip.config.clip_fgdi import add_clip_fgdi_config
    from fastreid_clip.config.promptsg import add_promptsg_config
    from fastreid_clip.config.clip_scgi import add_clip_scgi_config
    from fastreid_clip.config.svll_reid import add_svll_reid_config
    from fastreid_clip.data.synthetic import add_synthetic_config
    from fastreid_clip.evaluation.config import add_eval_config

    add_clip_reid_config(_C)
    add_svll_reid_config(_C)
    add_promptsg_config(_C)
    add_clip_fgdi_config(_C)
    add_clip_scgi_config(_C)
    add_synthetic_config(_C)
    add_eval_config(_C)
    return _C
