"""Config keys of SVLL-ReID (``SVLLReID``, Wang et al. 2025): CLIP-ReID plus language self-supervision in the
prompt stage (``MODEL.SVLL.LSS``) and vision self-supervision in the image stage (``MODEL.SVLL.VSS``).

Sources: docs/svll_reid.md and ../shared/notes/methods.md §3. The stages are CLIP-ReID's ``STAGES.PROMPT`` /
``STAGES.IMAGE`` (configs/SVLL-ReID add the projection heads to their ``TRAINABLE``); the extra image views are the
data keys ``INPUT.VIEWS`` (:mod:`fastreid_clip.data.multi_view`), added here too so that ``add_clip_config`` needs one
line for both.
"""

from __future__ import annotations

from fastreid.config import CfgNode as CN

from .validate import ConfigValueError

__all__ = ["add_svll_reid_config", "check_svll_config", "VSS_POSITIVES", "check_choice", "check_weight",
           "check_temperature", "check_head_dims", "check_mask_rate"]

VSS_POSITIVES = ("instance", "identity")


def add_svll_reid_config(cfg: CN) -> None:
    """Add ``MODEL.SVLL`` (SVLL-ReID ViT-B/16 values) and ``INPUT.VIEWS``."""
    from ..data.multi_view import add_multi_view_config

    add_multi_view_config(cfg)
    S = cfg.MODEL.SVLL = CN()

    S.LSS = CN()  # language self-supervision, stage "prompt": L = L_i2t + L_t2i + SCALE * L_lss (Eq. 8)
    S.LSS.SCALE = 0.8  # lambda_lss [both]
    # Prompt augmentation (Eq. 6): "token" = mask (zero) a proportion MASK_RATE of the learnable tokens [paper];
    # "element" = Bernoulli(MASK_RATE) zeroing of every element of the embedded prompt, fixed rows included [ref-code]
    S.LSS.MASK = "token"
    S.LSS.MASK_RATE = 0.5  # alpha [paper] / the Bernoulli probability [ref-code]
    S.LSS.TEMPERATURE = 0.1  # tau of the NT-Xent (Eq. 7) [ref-code; the paper gives no value]
    S.LSS.TRAIN_HEAD = False  # the text MLP is not in the reference optimizer: it stays at its random init [ref-code]
    S.LSS.HEAD = CN()  # text_mlp: text feature (512) -> 4096 -> 4096 -> 256, Linear-BN-ReLU x2 + Linear [ref-code]
    S.LSS.HEAD.HIDDEN_DIM = 4096
    S.LSS.HEAD.OUT_DIM = 256
    S.LSS.HEAD.INIT = "default"  # PyTorch's initialisation [ref-code]

    S.VSS = CN()  # vision self-supervision, stage "image": L = L_i2tce + L_id + L_tri + SCALE * L_vss (Eq. 11)
    S.VSS.SCALE = 0.8  # lambda_vss [both]; > 0 needs INPUT.VIEWS.NUM 2 (the two erased views, Eq. 9)
    S.VSS.TEMPERATURE = 0.1  # tau of the NT-Xent (Eq. 10) [ref-code]
    # Positives of L_vss: "instance" = the two views of one image (other images of the same identity are negatives)
    # [ref-code; the single-positive form of Eq. 10]; "identity" = every view of the same identity [paper prose]
    S.VSS.POSITIVES = "instance"
    S.VSS.TRAIN_HEAD = True  # image_mlp trains at the image stage's lr (5e-6, bias x2) [ref-code]
    S.VSS.HEAD = CN()  # image_mlp: ln_post class token (768, before the projection) -> 4096 -> 4096 -> 256 [ref-code]
    S.VSS.HEAD.HIDDEN_DIM = 4096
    S.VSS.HEAD.OUT_DIM = 256
    S.VSS.HEAD.INIT = "kaiming"  # Kaiming-normal linear weights, BN weight/bias U(0, 1) [ref-code]


def check_choice(key: str, value, choices) -> str:
    if value not in choices:
        raise ConfigValueError(key, value, f"one of {', '.join(repr(c) for c in choices)}")
    return value


def check_weight(key: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ConfigValueError(key, value, "a loss weight >= 0 (0 = the loss is off: CLIP-ReID's stage)")
    return float(value)


def check_temperature(key: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigValueError(key, value, "a temperature > 0 (SVLL-ReID: 0.1)")
    return float(value)


def check_head_dims(prefix: str, hidden_dim, out_dim) -> None:
    for name, value in (("HIDDEN_DIM", hidden_dim), ("OUT_DIM", out_dim)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigValueError(f"{prefix}.{name}", value, "a positive layer width (SVLL-ReID: 4096 hidden, "
                                                              "256 out)")


def check_mask_rate(key: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ConfigValueError(key, value, "a masking proportion in [0, 1) (SVLL-ReID: 0.5; 1 would mask every "
                                           "learnable token and leave L_lss without a gradient)")
    return float(value)


def check_svll_config(cfg) -> None:
    """Check ``MODEL.SVLL.*`` and, when ``L_vss`` is on, ``INPUT.VIEWS.NUM`` (raises :class:`ConfigValueError`).

    Run by ``validate_train_config`` (before any data) and by ``SVLLReID.from_config``.
    """
    from ..data.multi_view import check_view_config
    from ..modeling.heads.projection import HEAD_INITS
    from ..modeling.prompts.masking import PROMPT_MASKS

    lss, vss = cfg.MODEL.SVLL.LSS, cfg.MODEL.SVLL.VSS
    check_weight("MODEL.SVLL.LSS.SCALE", lss.SCALE)
    check_choice("MODEL.SVLL.LSS.MASK", lss.MASK, PROMPT_MASKS)
    check_mask_rate("MODEL.SVLL.LSS.MASK_RATE", lss.MASK_RATE)
    check_temperature("MODEL.SVLL.LSS.TEMPERATURE", lss.TEMPERATURE)
    check_head_dims("MODEL.SVLL.LSS.HEAD", lss.HEAD.HIDDEN_DIM, lss.HEAD.OUT_DIM)
    check_choice("MODEL.SVLL.LSS.HEAD.INIT", lss.HEAD.INIT, HEAD_INITS)
    check_weight("MODEL.SVLL.VSS.SCALE", vss.SCALE)
    check_temperature("MODEL.SVLL.VSS.TEMPERATURE", vss.TEMPERATURE)
    check_choice("MODEL.SVLL.VSS.POSITIVES", vss.POSITIVES, VSS_POSITIVES)
    check_head_dims("MODEL.SVLL.VSS.HEAD", vss.HEAD.HIDDEN_DIM, vss.HEAD.OUT_DIM)
    check_choice("MODEL.SVLL.VSS.HEAD.INIT", vss.HEAD.INIT, HEAD_INITS)
    _check_head_trains(cfg, "prompt", "text_mlp", lss.SCALE > 0 and lss.TRAIN_HEAD, "MODEL.SVLL.LSS.TRAIN_HEAD")
    _check_head_trains(cfg, "image", "image_mlp", vss.SCALE > 0 and vss.TRAIN_HEAD, "MODEL.SVLL.VSS.TRAIN_HEAD")
    views = check_view_config(cfg)
    if vss.SCALE > 0 and views != 2:
        raise ConfigValueError("INPUT.VIEWS.NUM", views, "2 when MODEL.SVLL.VSS.SCALE > 0: L_vss contrasts two "
                                                         "erased views of every training image (Eq. 9-10)",
                               "Set INPUT.VIEWS.NUM 2, or MODEL.SVLL.VSS.SCALE 0 to train without L_vss")


def _check_head_trains(cfg, stage: str, module: str, trains: bool, switch: str) -> None:
    """With ``switch`` True the stage's ``TRAINABLE`` prefixes must reach ``module`` (else it silently stays random)."""
    names = tuple(cfg.STAGES.NAMES) if "STAGES" in cfg else ()
    if not trains or stage not in names:
        return
    trainable = tuple(cfg.STAGES[stage.upper()].TRAINABLE)
    if trainable and not any(module.startswith(p) or p.startswith(module) for p in trainable):
        raise ConfigValueError(f"STAGES.{stage.upper()}.TRAINABLE", trainable,
                               f"a list that includes '{module}' when {switch} is True",
                               f"Add '{module}' to it, or set {switch} False to keep the head at its random "
                               f"initialisation")
