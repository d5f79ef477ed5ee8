"""Config keys of CLIP-FGDI (``ClipFGDI``, Zhao, Qi, Geng, TIFS 2025): ``MODEL.FGDI.*`` and its four stages
``STAGES.{PRIOR, ID_PROMPT, DOMAIN_PROMPT}`` (``STAGES.IMAGE`` is CLIP-ReID's node; the FGDI configs set it to share
``prior``'s optimizer).

Sources: docs/clip_fgdi.md and ../shared/notes/methods.md §4 ([paper], [ref-code], [both] as there). Defaults are
the values that produced the published numbers (notes §4.2): where paper and reference code differ, the reference.
"""

from __future__ import annotations

from fastreid.config import CfgNode as CN

from .stages import add_stage_config
from .validate import ConfigValueError

__all__ = ["add_clip_fgdi_config", "check_fgdi_config", "check_nominal_classes", "check_nominal_covers", "FGDI_STAGES"]

FGDI_STAGES = ("prior", "id_prompt", "domain_prompt", "image")
# Adversarial / monitor classifier lr 0.01 vs the tokens' 3.5e-4 [ref-code --lamda], as an LR_FACTORS multiplier.
_HEAD_LR_FACTOR = 0.01 / 3.5e-4


def add_clip_fgdi_config(cfg: CN) -> None:
    """Add ``MODEL.FGDI`` and ``STAGES.{PRIOR,ID_PROMPT,DOMAIN_PROMPT}`` (CLIP-FGDI ViT-B/16 values)."""
    F = cfg.MODEL.FGDI = CN()
    # Domains = sources: the index of each training image's dataset in DATASETS.NAMES; 0 = that count.
    F.NUM_DOMAINS = 0
    # Classes per source: () = the training identities (FastReID's relabelling, the default); else one int per
    # DATASETS.NAMES entry, each >= that source's training identities. The classifiers, ID prompts and text / domain
    # banks then have sum(NOMINAL_CLASSES) rows: the real identities keep labels 0..N-1, source k's unused classes
    # follow in source order with domain k (extra i2tce negatives). The reference's P2 sizes them by the datasets'
    # nominal class lists, e.g. MSMT17 4101, not its 1041 training ids [ref-code, notes §4.3].
    F.NOMINAL_CLASSES = ()
    F.DOMAIN_PROMPT = CN()
    F.DOMAIN_PROMPT.N_CTX = 1  # N domain tokens per source in "... person from [D] dataset." [paper: N = 1]
    F.DOMAIN_PROMPT.INIT_STD = 0.02  # domain-token init N(0, 0.02^2), as the ID tokens [ref-code]
    F.DOMAIN_HEAD = CN()
    F.DOMAIN_HEAD.HIDDEN_DIM = 128  # Linear(512->128), BN, ReLU, Linear(128->n_dom) [ref-code]
    # GRL: identity forward, gradient x (-GRL_STRENGTH) [ref-code 0.1; the paper names the GRL without a value]
    F.GRL_STRENGTH = 0.1
    F.DOMAIN_LOSS_SCALE = 0.01  # alpha of Eq. 7, L_i2t + L_t2i + alpha L_domain [both]
    F.MONITOR_LOSS_SCALE = 0.01  # CE of the monitor classifier on detached domain-prompt features [ref-code]
    # beta of Eq. 9: L_id + L_tri + (1 - beta) L_i2tce + beta L_apn. Paper: 0.3; the released log (P1 82.3 / 75.3,
    # the reported number) ran 0.1 [ref-code].
    F.BETA = 0.1
    F.APN = CN()
    # code_cs_softplus [ref-code, default: produced the released numbers] | paper_eq8_cs_hinge [paper Eq. 8 + 11] |
    # intent_cs (cosine, sign flipped to match the stated intent) | ed_hinge [paper Eq. 8 + 10, Tab. VIII best] |
    # contrastive [paper Eq. 12] | apnce [paper Eq. 13: replaces both i2tce and apn]. See docs/clip_fgdi.md.
    F.APN.MODE = "code_cs_softplus"
    F.APN.MARGIN = 0.3  # m of Eq. 8 [paper]; unused by the softplus form

    # CLIP-FGDI's input pipeline (fastreid_clip/data/transforms.py build_fgdi_transforms) [ref-code, notes §4.3];
    # used with INPUT.PIPELINE "fgdi" ("clip_reid" = CLIP-ReID's pipeline, the default) and PIXEL_MEAN 0 / STD 1.
    cfg.INPUT.PIPELINE = "clip_reid"
    I = cfg.INPUT.FGDI = CN()
    I.GRAY_PROB = 0.1  # RandomGrayscale
    I.PADDING = 10  # zero pad before the random crop
    I.FLIP_PROB = 0.4  # horizontal flip
    I.CJ = (0.15, 0.1, 0.05, 0.05)  # ColorJitter brightness, contrast, saturation, hue
    I.CJ_PROB = 0.1
    I.AUGMIX = CN()
    I.AUGMIX.PROB = 0.6
    I.AUGMIX.SEVERITY = 1
    I.AUGMIX.WIDTH = 3
    I.AUGMIX.DEPTH = 1
    I.AUGMIX.ALPHA = 0.1

    # Evaluation on several small DG targets (fastreid_clip/data/datasets/dg_small.py, evaluation/multi_target.py).
    cfg.DG = CN()
    # Splits of GRIDTest / VIPeRTest / PRIDTest / iLIDSTest: "single9" = split 9 only [ref-code]; "avg10" = the mean
    # over the 10 seeded splits (the usual DG protocol). The results table says which.
    cfg.DG.SPLITS = "single9"
    cfg.DG.SPLIT_ID = -1  # set per split by the multi-target evaluator; -1 = the first split of DG.SPLITS
    # Evaluate DATASETS.TESTS with the multi-target evaluator: one row per target (splits averaged) + an Average row
    cfg.DG.MULTI_TARGET = False

    # Stage 1 "prior": image encoder, ID + soft-margin triplet, no text; 3 epochs [both], Adam 5e-6, bias x2,
    # WarmupMultiStepLR([30, 50], x0.1 over 10 epochs), batch 128 = 32 x 4 [ref-code].
    add_stage_config(cfg, "prior", EPOCHS=3, TRAINABLE=("backbone", "head", "head_proj"), DATA="images",
                     IMS_PER_BATCH=128, OPT="Adam", BASE_LR=5e-6, WEIGHT_DECAY=1e-4, WEIGHT_DECAY_BIAS=1e-4,
                     BIAS_LR_FACTOR=2.0, SCHED="WarmupMultiStepEpochLR", STEPS=(30, 50), GAMMA=0.1,
                     WARMUP_FACTOR=0.1, WARMUP_EPOCHS=10, CHECKPOINT_PERIOD=3, EVAL_PERIOD=0)
    # Stage 2a "id_prompt": ID tokens on cached f_proj, L_i2t + L_t2i + alpha L_domain(GRL); 120 epochs [paper],
    # batch 128, Adam 3.5e-4 (adversarial head 0.01), wd 1e-4, cosine warm-up 5 from 1e-5 [ref-code]; minibatches in
    # training-set order, the same every epoch, remainder dropped (BATCH_ORDER fixed) [ref-code, notes §4.2].
    add_stage_config(cfg, "id_prompt", EPOCHS=120, TRAINABLE=("prompt_learner", "domain_head"), DATA="features",
                     IMS_PER_BATCH=128, OPT="Adam", BASE_LR=3.5e-4, WEIGHT_DECAY=1e-4, WEIGHT_DECAY_BIAS=1e-4,
                     BIAS_LR_FACTOR=1.0, LR_FACTORS=(("domain_head", _HEAD_LR_FACTOR),), SCHED="CosineEpochLR",
                     WARMUP_EPOCHS=5, WARMUP_LR_INIT=1e-5, ETA_MIN_LR=1e-6, CHECKPOINT_PERIOD=120, EVAL_PERIOD=0,
                     BATCH_ORDER="fixed")
    # Stage 2b "domain_prompt": domain tokens only (ID rows detached), SupCon both ways + monitor CE; 30 epochs
    # [paper], tokens 3.5e-4, monitor 0.01 [ref-code].
    add_stage_config(cfg, "domain_prompt", EPOCHS=30, TRAINABLE=("domain_prompt", "monitor_head"), DATA="features",
                     IMS_PER_BATCH=128, OPT="Adam", BASE_LR=3.5e-4, WEIGHT_DECAY=1e-4, WEIGHT_DECAY_BIAS=1e-4,
                     BIAS_LR_FACTOR=1.0, LR_FACTORS=(("monitor_head", _HEAD_LR_FACTOR),), SCHED="CosineEpochLR",
                     WARMUP_EPOCHS=5, WARMUP_LR_INIT=1e-5, ETA_MIN_LR=1e-6, CHECKPOINT_PERIOD=30, EVAL_PERIOD=0)


def _number(key: str, value, ok, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
        raise ConfigValueError(key, value, what)
    return float(value)


def _positive_int(key: str, value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigValueError(key, value, what)
    return value


def check_nominal_classes(cfg, train_ids_per_source=None):
    """``MODEL.FGDI.NOMINAL_CLASSES`` as a tuple: () (= the training identities) or one int >= 1 per
    ``DATASETS.NAMES`` entry. With ``train_ids_per_source`` (the number of training identities of each source, known
    once the training set is built) each entry must also be >= its source's count. Raises :class:`ConfigValueError`
    naming the key (and the source with both numbers)."""
    key = "MODEL.FGDI.NOMINAL_CLASSES"
    nominal = tuple(cfg.MODEL.FGDI.NOMINAL_CLASSES)
    if not nominal:
        return nominal
    names = tuple(cfg.DATASETS.NAMES)
    if len(nominal) != len(names) or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in nominal):
        raise ConfigValueError(key, nominal, f"() (= the training identities) or one positive number of classes per "
                                             f"DATASETS.NAMES entry, len(DATASETS.NAMES) = {len(names)} {names}")
    if train_ids_per_source is not None:
        check_nominal_covers(nominal, train_ids_per_source, names)
    return nominal


def check_nominal_covers(nominal, train_ids_per_source, names=None) -> None:
    """Every ``MODEL.FGDI.NOMINAL_CLASSES`` entry must be >= its source's number of training identities; else a
    :class:`ConfigValueError` naming the key, the source (``names[k]`` when given) and both numbers."""
    counts = tuple(int(c) for c in train_ids_per_source)
    if len(counts) != len(nominal):
        raise ValueError(f"{len(counts)} per-source identity counts for {len(nominal)} sources")
    for k, (want, have) in enumerate(zip(nominal, counts)):
        if want < have:
            source = f"source {k} '{names[k]}'" if names else f"source {k}"
            raise ConfigValueError("MODEL.FGDI.NOMINAL_CLASSES", tuple(nominal),
                                   f"each entry >= its source's training identities: {source} has {have} training "
                                   f"identities, NOMINAL_CLASSES[{k}] = {want}")


def check_fgdi_config(cfg) -> None:
    """Check ``MODEL.FGDI.*`` and the stage names (raises :class:`ConfigValueError` naming the key).

    Run by ``validate_train_config`` (before any data) and by ``ClipFGDI.from_config``. The per-source counts of
    ``MODEL.FGDI.NOMINAL_CLASSES`` are checked against the training set by ``ClipFGDI.num_train_classes``.
    """
    from ..modeling.losses.apn import APN_MODES

    f = cfg.MODEL.FGDI
    if isinstance(f.NUM_DOMAINS, bool) or not isinstance(f.NUM_DOMAINS, int) or f.NUM_DOMAINS < 0:
        raise ConfigValueError("MODEL.FGDI.NUM_DOMAINS", f.NUM_DOMAINS,
                               "the number of source domains (>= 1), or 0 = one per DATASETS.NAMES entry")
    _positive_int("MODEL.FGDI.DOMAIN_PROMPT.N_CTX", f.DOMAIN_PROMPT.N_CTX, "a positive number of domain tokens "
                                                                         "(CLIP-FGDI: 1)")
    _number("MODEL.FGDI.DOMAIN_PROMPT.INIT_STD", f.DOMAIN_PROMPT.INIT_STD, lambda v: v > 0, "a std > 0 (0.02)")
    _positive_int("MODEL.FGDI.DOMAIN_HEAD.HIDDEN_DIM", f.DOMAIN_HEAD.HIDDEN_DIM, "a positive width (128)")
    _number("MODEL.FGDI.GRL_STRENGTH", f.GRL_STRENGTH, lambda v: v >= 0, "a gradient reversal strength >= 0 (0.1)")
    _number("MODEL.FGDI.DOMAIN_LOSS_SCALE", f.DOMAIN_LOSS_SCALE, lambda v: v >= 0, "a loss weight >= 0 (alpha 0.01)")
    _number("MODEL.FGDI.MONITOR_LOSS_SCALE", f.MONITOR_LOSS_SCALE, lambda v: v >= 0, "a loss weight >= 0 (0.01)")
    _number("MODEL.FGDI.BETA", f.BETA, lambda v: 0 <= v <= 1, "beta in [0, 1] of Eq. 9 (reference 0.1, paper 0.3)")
    if f.APN.MODE not in APN_MODES:
        raise ConfigValueError("MODEL.FGDI.APN.MODE", f.APN.MODE, f"one of {list(APN_MODES)}")
    _number("MODEL.FGDI.APN.MARGIN", f.APN.MARGIN, lambda v: v >= 0, "a margin >= 0 (0.3)")
    names = tuple(cfg.STAGES.NAMES) if "STAGES" in cfg else ()
    unknown = [n for n in names if n not in FGDI_STAGES]
    if unknown:
        raise ConfigValueError("STAGES.NAMES", names, f"stages of ClipFGDI, a subsequence of {FGDI_STAGES}",
                               f"'{unknown[0]}' is not one")
    if names and [n for n in FGDI_STAGES if n in names] != list(names):
        raise ConfigValueError("STAGES.NAMES", names, f"ClipFGDI's stages in their order {FGDI_STAGES}")
    from ..data.datasets.dg_small import DG_SPLIT_MODES, NUM_SPLITS

    if cfg.DG.SPLITS not in DG_SPLIT_MODES:
        raise ConfigValueError("DG.SPLITS", cfg.DG.SPLITS, f"one of {DG_SPLIT_MODES} (single9: split 9, the "
                                                           f"reference; avg10: the mean of the 10 seeded splits)")
    split = cfg.DG.SPLIT_ID
    if isinstance(split, bool) or not isinstance(split, int) or not -1 <= split < NUM_SPLITS:
        raise ConfigValueError("DG.SPLIT_ID", split, f"-1 (the splits of DG.SPLITS) or a split in 0..{NUM_SPLITS - 1}")
    if cfg.INPUT.PIPELINE not in ("clip_reid", "fgdi"):
        raise ConfigValueError("INPUT.PIPELINE", cfg.INPUT.PIPELINE, "'clip_reid' or 'fgdi' (CLIP-FGDI's AugMix + "
                                                                     "InstanceNorm pipeline)")
    check_nominal_classes(cfg)
    if f.NUM_DOMAINS and f.NUM_DOMAINS != len(cfg.DATASETS.NAMES):
        raise ConfigValueError("MODEL.FGDI.NUM_DOMAINS", f.NUM_DOMAINS,
                               f"0 or the number of training sources, len(DATASETS.NAMES) = {len(cfg.DATASETS.NAMES)} "
                               f"(each source is one domain)")
