"""Config keys of PromptSG (``PromptSG``, Yang et al. CVPR 2024): inversion network, prompts, interaction module,
symmetric SupCon loss and the two inference modes. Sources: docs/promptsg.md and ../shared/notes/methods.md §5."""

from __future__ import annotations

from fastreid.config import CfgNode as CN

__all__ = ["add_promptsg_config", "INFERENCE_MODES", "TRAIN_PROMPTS", "SUPCON_SIMS", "MIM_KV", "MIM_TOKENS",
           "TEST_FEATS"]

INFERENCE_MODES = ("composed", "simplified")
TRAIN_PROMPTS = ("composed", "simplified")
SUPCON_SIMS = ("cosine", "dot")
MIM_KV = ("patches", "all")
MIM_TOKENS = ("proj", "final")
TEST_FEATS = ("mim", "cat")


def add_promptsg_config(cfg: CN) -> None:
    """Add ``MODEL.PROMPTSG`` (ViT-B/16 values). The class word and EOT truncation are CLIP-ReID's
    ``MODEL.PROMPT.CLASS_WORD`` / ``TRUNCATE_AT_EOT``; the lrs per module are ``SOLVER.LR_FACTORS``."""
    P = cfg.MODEL.PROMPTSG = CN()
    # Inference text (paper §4.3, Tab. 5): "composed" = per-image s* through the text encoder (Tab. 2 numbers,
    # 0.48x visual-only FPS); "simplified" = the fixed "A photo of a person", its text feature and MIM query computed
    # once (94.1 vs 94.6 Market mAP, 0.88x FPS). [paper]
    P.INFERENCE = "composed"
    # Training text: "composed" (the method) or "simplified" (Tab. 4 "training w/o composed": the fixed prompt as the
    # MIM query, no inversion network; needs SUPCON.SCALE 0 and INFERENCE simplified) [paper]
    P.TRAIN_PROMPT = "composed"
    # Retrieval feature: "mim" = the interaction output z (Fig. 3) [paper]; "cat" = concat(f, z) [ours]. BN on z with
    # MODEL.HEADS.NECK_FEAT after; L2-normalised with MODEL.HEADS.TEST_FEAT_NORM [unverified, notes §5.6].
    P.TEST_FEAT = "mim"

    P.PROMPT = CN()
    P.PROMPT.PERIOD = False  # "A photo of a s* person" has no trailing period in the paper [paper]
    P.PROMPT.PLACEHOLDER = "X"  # one-token word whose embedding row s* replaces [unverified mechanism]

    P.INVERSION = CN()  # f_theta: "three-layered MLP of 512-dimensional hidden state", BN after the last layer [paper]
    P.INVERSION.HIDDEN_DIM = 512  # [paper]
    P.INVERSION.NUM_LAYERS = 3  # [paper]; ReLU between the layers, no dropout [unverified]
    P.INVERSION.FINAL_BN = True  # [paper]

    P.MIM = CN()  # multimodal interaction module (Eq. 7, Tab. 5)
    P.MIM.ENABLED = True  # False = Tab. 3 row d (no MIM): baseline heads and retrieval feature + SupCon [paper]
    P.MIM.WIDTH = 0  # 0 = the text feature width (512 for ViT-B/16; ~94 M learnable params as Tab. 6) [unverified]
    P.MIM.HEADS = 8  # [unverified]
    P.MIM.DEPTH = 2  # transformer blocks after the cross-attention: "1 cross & 2 self-layer" [paper Tab. 5]
    P.MIM.MLP_RATIO = 4.0  # [unverified]
    # Keep the query in the cross-attention's residual stream (pre-LN decoder layer) or return the attention output
    # alone, Eq. 7 as printed (the prompt then only steers where the query attends) [unverified]
    P.MIM.QUERY_RESIDUAL = True
    P.MIM.KV = "patches"  # keys/values: the patch embeddings (§4.2) or "all" (with the global token) [paper text]
    # Token space of the keys/values: "proj" = ViT patch tokens after ln_post and the 768->512 projection (the
    # query's space) [unverified]; "final" = before the projection (ViT 768-d; the only choice for RN50: its 2048-d
    # layer4 map).
    P.MIM.TOKENS = "proj"

    P.SUPCON = CN()  # symmetric supervised contrastive loss, Eq. 4-6
    P.SUPCON.SCALE = 0.5  # lambda of Eq. 10, all datasets [paper]
    P.SUPCON.SIM = "cosine"  # Eq. 1's cosine / tau [paper]; "dot" = raw dot products / tau (CLIP-ReID: tau 1)
    P.SUPCON.TAU = 0.01  # never given in the paper; CLIP's logit scale 100 [unverified]
    P.SUPCON.I2T = True  # Tab. 3 row b switches it off [paper]
    P.SUPCON.T2I = True  # Tab. 3 row c switches it off [paper]
