"""Config keys of CLIP-SCGI (``ClipSCGI``, "Synthesized Caption-Guided Inversion"): captions as training data
(``CAPTIONS``), caption-guided inversion (``MODEL.SCGI.CGI``), contextual feature fusion (``MODEL.SCGI.CFF``) and
the contrastive loss (``MODEL.SCGI.CON``). Sources: docs/clip_scgi.md and ../shared/notes/methods.md §6."""

from __future__ import annotations

from fastreid.config import CfgNode as CN

__all__ = ["add_clip_scgi_config", "CFF_QUERIES", "CFF_KV", "CFF_TOKENS", "CFF_POOLS"]

CFF_QUERIES = ("text", "image")
CFF_KV = ("cls", "patches", "all")
CFF_TOKENS = ("proj", "final")
CFF_POOLS = ("eos", "mean")


def add_clip_scgi_config(cfg: CN) -> None:
    """Add ``CAPTIONS`` (any method may use captions) and ``MODEL.SCGI`` (ViT-B/16 values). The class word and EOT
    truncation are ``MODEL.PROMPT.CLASS_WORD`` / ``TRUNCATE_AT_EOT``; lrs per module are ``SOLVER.LR_FACTORS``."""
    C = cfg.CAPTIONS = CN()
    # One caption file per DATASETS.NAMES entry; () = <dataset dir>/FILE_NAME for each (fastreid_clip/data/captions.py)
    C.FILES = ()
    C.FILE_NAME = "captions.jsonl"
    # Training images without a caption: "error" (count and name them) or "fallback" (use FALLBACK_TEXT, log the
    # count) [ours]
    C.MISSING = "error"
    C.FALLBACK_TEXT = "a photo of a person"  # the paper's inference prompt [ours as fallback]
    # "attributes" = write a missing caption file from the dataset's attribute annotations first (the synthetic
    # data's meta.json; tools/caption.py attributes mode); "" = the files must exist [ours]
    C.GENERATE = ""
    # With a frozen text encoder the caption embedding is a per-image constant: True = encode every caption once
    # before training (deduplicated, batched, sharded over ranks) and deliver it with each sample (notes §8.3);
    # False = deliver token ids and encode them every iteration (same losses, slower) [ours]
    C.CACHE = True
    C.BATCH_SIZE = 256  # captions per text-encoder batch while building the cache

    S = cfg.MODEL.SCGI = CN()
    S.PROMPT = CN()
    S.PROMPT.PERIOD = False  # "a photo of a S* person" without a trailing period [paper]
    S.PROMPT.PLACEHOLDER = "X"  # one-token word whose embedding row S* replaces [unverified mechanism]

    S.CGI = CN()  # caption-guided inversion (Eq. 2-5)
    S.CGI.ENABLED = True  # False = Tab. III "CFF only": "a photo of a person" into CFF, no L_con [paper]
    S.CGI.NUM_QUERIES = 2  # K learnable local queries; best of {1, 2, 4, 8} [paper Fig. 4]
    S.CGI.DEPTH = 1  # query layers (LN, cross-attention, FFN); 1 chosen for efficiency [paper Fig. 4]
    S.CGI.HEADS = 8  # [unverified]
    S.CGI.MLP_RATIO = 4.0  # FFN width / d [unverified]
    S.CGI.HIDDEN_DIM = 512  # f_Mg / f_Ml hidden width ("three-layer fully-connected networks") [unverified width]
    S.CGI.NUM_LAYERS = 3  # [paper]
    S.CGI.FINAL_BN = False  # BN after f_Mg / f_Ml: not described (PromptSG's f_theta has one) [unverified]

    S.CFF = CN()  # contextual feature fusion (Eq. 9-10): 1 cross-attention + transformer blocks
    S.CFF.ENABLED = True  # False = Tab. III "CGI only": baseline heads and retrieval feature + L_con [paper]
    # Query side: "text" = the prompt's token sequence t_sos..t_eos [paper]; "image" = Tab. IV's ablation, the
    # image tokens (CFF.KV) as queries over the prompt's tokens [paper]
    S.CFF.QUERY = "text"
    # Image key/value set: "cls" = v_cls (the paper's literal text; one key, so every attention weight is 1),
    # "patches", "all" (class token + patches) [paper / notes §6.4]
    S.CFF.KV = "cls"
    S.CFF.TOKENS = "proj"  # image tokens in the joint space (ViT only) or "final" (ViT 768-d, RN50 layer4) [unverified]
    S.CFF.WIDTH = 0  # 0 = the query width (text token width 512 for ViT-B/16) [unverified]
    S.CFF.HEADS = 8  # [unverified]
    S.CFF.DEPTH = 2  # transformer blocks after the cross-attention [paper]
    S.CFF.MLP_RATIO = 4.0  # [unverified]
    # Query in the cross-attention's residual stream: False = h = Transformer(CrossAttn(LN(Q), K, V)), Eq. 9 as
    # printed [paper]; True = a pre-LN decoder layer, Q + CrossAttn(...). The query is the composed prompt in
    # training and the fixed one at test time; kept in the residual it makes the two disagree (benchmark, docs).
    S.CFF.QUERY_RESIDUAL = False
    # Embedding position of the CFF output: "eos" = the EOT token (image query: the first query token), "mean" =
    # the mean over the query tokens [unverified, notes §6.4]
    S.CFF.POOL = "eos"

    S.CON = CN()  # L_con = L_t2i + L_i2t, raw dot products, same-identity positives (Eq. 6-8)
    S.CON.SCALE = 1.0  # weight in L = L_id + L_tri + L_con (Eq. 13) [paper]
    S.CON.I2T = True  # [paper]
    S.CON.T2I = True  # [paper]
