"""CLIP-SCGI ("Synthesized Caption-Guided Inversion for person re-identification"): captions guide the pseudo-word
of a composed prompt; the prompt's tokens attend to the image in a contextual feature fusion."""

from __future__ import annotations

from typing import Dict, List, Optional

import torch
from fastreid.config import configurable
from fastreid.modeling.meta_arch import META_ARCH_REGISTRY

from ...config.clip_scgi import CFF_KV, CFF_POOLS, CFF_QUERIES, CFF_TOKENS
from ...config.validate import ConfigValueError
from ..backbones import CLIPTextEncoder, ClipViTBackbone, build_clip_towers
from ..backbones.features import ClipImageFeatures
from ..fusion import QueryState, TextQueryFusion
from ..inversion import CaptionGuidedInversion
from ..prompts import ComposedPrompt
from .promptsg import _LEVELS, PromptSG, _choice

__all__ = ["ClipSCGI", "check_scgi_settings"]



def check_scgi_settings(*, cgi: bool, cff: bool, cff_query: str, cff_kv: str, cff_tokens: str, cff_pool: str,
                        con_weight: float, con_i2t: bool, con_t2i: bool, tri_features, vit: bool) -> None:
    """CLIP-SCGI's switches and their combinations; a bad one raises :class:`ConfigValueError` naming its key."""
    key = "MODEL.SCGI"
    _choice(f"{key}.CFF.QUERY", cff_query, CFF_QUERIES)
    _choice(f"{key}.CFF.KV", cff_kv, CFF_KV)
    _choice(f"{key}.CFF.TOKENS", cff_tokens, CFF_TOKENS)
    _choice(f"{key}.CFF.POOL", cff_pool, CFF_POOLS)
    if isinstance(con_weight, bool) or not isinstance(con_weight, (int, float)) or con_weight < 0:
        raise ConfigValueError(f"{key}.CON.SCALE", con_weight, "a loss weight >= 0 (paper: 1)")
    if set(tri_features) - set(_LEVELS) - {"cff"}:
        raise ConfigValueError("MODEL.LOSSES.TRI.FEATURES", tuple(tri_features),
                               f"levels among cff, {', '.join(_LEVELS)}")
    if "cff" in tri_features and not cff:
        raise ConfigValueError("MODEL.LOSSES.TRI.FEATURES", tuple(tri_features),
                               f"levels among {', '.join(_LEVELS)} when MODEL.SCGI.CFF.ENABLED is False")
    con = cgi and bool(con_weight) and (con_i2t or con_t2i)
    if not cff and not con:
        raise ConfigValueError(f"{key}.CFF.ENABLED", cff, "True, or CGI with L_con (CGI.ENABLED and CON.SCALE > 0 "
                               "with I2T or T2I): without both CLIP-SCGI is ClipBaseline")
    if cff and cff_tokens == "proj" and not vit:
        raise ConfigValueError(f"{key}.CFF.TOKENS", cff_tokens, "'final' for a ModifiedResNet backbone (its layer4 "
                               "map has no projected tokens)")


@META_ARCH_REGISTRY.register()
class ClipSCGI(PromptSG):
    """CLIP visual encoder + caption-guided inversion (CGI) + contextual feature fusion (CFF), one stage.

    CLIP-SCGI shares PromptSG's pieces: the frozen text encoder, the composed prompt "a photo of a S* person", the
    BN-neck on the fused feature, the interaction module (here the CFF, module ``mim``, with its query / key-value
    roles configured) and the symmetric supervised contrastive loss with raw dot products. Training, for a batch
    with projected tokens ``v = {v_cls, v_1..v_M}`` and caption embeddings ``t`` (cached, delivered with each
    sample, see :mod:`fastreid_clip.engine.caption_cache`):

    1. CGI (module ``inversion``): ``S* = f_Mg(v_cls (.) t) + f_Ml(mean_k P_k)`` (Eq. 2-5);
    2. the frozen text encoder encodes "a photo of a S* person" into the pooled ``T`` and the token sequence
       ``t_sos..t_eos`` (gradients flow through it into CGI and the visual encoder);
    3. CFF (Eq. 9-10): the token sequence is the query, the image representation (``cff_kv``: v_cls as the paper
       writes, patches, or all) the keys/values; one cross-attention and two transformer blocks; the EOT position
       (``cff_pool``) is the fused feature ``h``;
    4. ``L = L_id(h) + L_tri(h, levels) + L_t2i + L_i2t`` (Eq. 13; ``s(T, I) = T . I`` with ``I = v_cls``).

    Inference: "a photo of a person" replaces the composed prompt; its token sequence and its CFF query state are
    computed once and cached (dropped on ``train()`` / weight loads), so no caption and no text-encoder pass is
    needed per image; the retrieval feature is ``h`` (before the BN-neck unless ``neck_feat="after"``), normalised.

    Ablations: ``cgi=None`` (Tab. III "CFF only": the fixed prompt is the CFF query in training too, no L_con),
    ``cff=None`` (Tab. III "CGI only": the baseline's heads and retrieval feature, plus L_con), ``cff_query="image"``
    (Tab. IV: the image tokens ``cff_kv`` are the queries over the prompt's tokens; the first query token, the class
    token, is ``h``).

    Args:
        text_encoder: CLIP text tower (frozen).
        prompt: the composed and fixed templates.
        cgi: :class:`CaptionGuidedInversion` or None.
        cff: :class:`TextQueryFusion` or None.
        cff_query: ``text`` or ``image``.
        cff_kv: ``cls``, ``patches`` or ``all``.
        cff_tokens: image token space ``proj`` (ViT) or ``final``.
        cff_pool: ``eos`` or ``mean``.
        con_weight, con_i2t, con_t2i: L_con's weight and directions.
        cff_triplet: the triplet loss on ``h`` too.
        truncate_at_eot: run the text encoder only up to EOT (exact; the CFF query is t_sos..t_eos either way).
        **baseline: :class:`ClipBaseline` arguments (``tri_features``: the backbone levels only).
    """

    INFERENCE_MODE_OVERRIDES = {}  # one inference mode: the fixed prompt

    @configurable
    def __init__(self, *, text_encoder: CLIPTextEncoder, prompt: ComposedPrompt,
                 cgi: Optional[CaptionGuidedInversion], cff: Optional[TextQueryFusion], cff_query: str = "text",
                 cff_kv: str = "cls", cff_tokens: str = "proj", cff_pool: str = "eos", con_weight: float = 1.0,
                 con_i2t: bool = True, con_t2i: bool = True, cff_triplet: bool = True, truncate_at_eot: bool = True,
                 **baseline):
        vit = isinstance(baseline.get("backbone"), ClipViTBackbone)
        check_scgi_settings(cgi=cgi is not None, cff=cff is not None, cff_query=cff_query, cff_kv=cff_kv,
                            cff_tokens=cff_tokens, cff_pool=cff_pool, con_weight=con_weight, con_i2t=con_i2t,
                            con_t2i=con_t2i, tri_features=tuple(baseline.get("tri_features", ())), vit=vit)
        # PromptSG's switches that CLIP-SCGI fixes: inference with the fixed prompt, L_con = SupCon with raw dot
        # products (tau 1), keys/values chosen by key_values below (PromptSG's MIM.KV is only consulted there).
        super().__init__(text_encoder=text_encoder, prompt=prompt, inversion=cgi, mim=cff, inference_mode="simplified",
                         train_prompt="composed" if cgi is not None else "simplified",
                         supcon_weight=con_weight if cgi is not None else 0.0, supcon_i2t=con_i2t,
                         supcon_t2i=con_t2i, supcon_sim="dot", supcon_tau=1.0,
                         mim_kv="all" if cff_kv == "all" else "patches", mim_tokens=cff_tokens, test_feat="mim",
                         mim_triplet=cff_triplet, truncate_at_eot=truncate_at_eot, **baseline)
        self.cff_query, self.cff_kv, self.cff_pool = cff_query, cff_kv, cff_pool

    @classmethod
    def check_config(cls, cfg) -> None:
        """Check the CLIP-SCGI keys before any data is built or read (``validate_train_config`` calls this)."""
        from ..backbones.clip_model import vit_patch_size

        s = cfg.MODEL.SCGI
        _choice("CAPTIONS.MISSING", cfg.CAPTIONS.MISSING, ("error", "fallback"))
        check_scgi_settings(cgi=s.CGI.ENABLED, cff=s.CFF.ENABLED, cff_query=s.CFF.QUERY, cff_kv=s.CFF.KV,
                            cff_tokens=s.CFF.TOKENS, cff_pool=s.CFF.POOL, con_weight=s.CON.SCALE, con_i2t=s.CON.I2T,
                            con_t2i=s.CON.T2I, tri_features=tuple(cfg.MODEL.LOSSES.TRI.FEATURES),
                            vit=vit_patch_size(cfg.MODEL.BACKBONE.CLIP_NAME) is not None)

    @classmethod
    def train_sample_fields(cls, cfg, img_items: List[tuple]) -> Dict[str, torch.Tensor]:
        """Caption embeddings (or token ids) of every training item (:mod:`fastreid_clip.engine.caption_cache`);
        none without CGI (the captions only guide the inversion)."""
        if not cfg.MODEL.SCGI.CGI.ENABLED:
            return {}
        from ...engine.caption_cache import caption_sample_fields

        return caption_sample_fields(cfg, img_items)

    @classmethod
    def from_config(cls, cfg) -> Dict:
        towers = build_clip_towers(cfg)
        text, image = towers.text, towers.image
        s = cfg.MODEL.SCGI
        prompt = ComposedPrompt(text.token_embedding, text.tokenize, cfg.MODEL.PROMPT.CLASS_WORD, s.PROMPT.PERIOD,
                                s.PROMPT.PLACEHOLDER, placeholder_key="MODEL.SCGI.PROMPT.PLACEHOLDER")
        if cfg.CAPTIONS.CACHE or not s.CGI.ENABLED:
            text.token_embedding = None  # the prompt holds its rows; captions come embedded
        vit = isinstance(image, ClipViTBackbone)
        cgi = None
        if s.CGI.ENABLED:
            if text.output_dim != image.proj_dim:
                raise ConfigValueError("MODEL.BACKBONE.CLIP_NAME", cfg.MODEL.BACKBONE.CLIP_NAME,
                                       f"a CLIP model whose text and image features have one width (text "
                                       f"{text.output_dim}, image {image.proj_dim}): CGI multiplies them")
            c = s.CGI
            cgi = CaptionGuidedInversion(image.proj_dim, text.width, image.proj_dim if vit else image.final_dim,
                                         c.NUM_QUERIES, c.DEPTH, c.HEADS, c.MLP_RATIO, c.HIDDEN_DIM, c.NUM_LAYERS,
                                         c.FINAL_BN)
        cff = None
        if s.CFF.ENABLED:
            f = s.CFF
            _choice("MODEL.SCGI.CFF.QUERY", f.QUERY, CFF_QUERIES)
            image_dim = image.proj_dim if f.TOKENS == "proj" else image.final_dim
            query_dim, kv_dim = (text.width, image_dim) if f.QUERY == "text" else (image_dim, text.width)
            cff = TextQueryFusion(query_dim, kv_dim, f.WIDTH, f.HEADS, f.DEPTH, f.MLP_RATIO,
                                  query_residual=f.QUERY_RESIDUAL, key_prefix="MODEL.SCGI.CFF")
        features = tuple(cfg.MODEL.LOSSES.TRI.FEATURES)
        args = cls.baseline_args(cfg, image)
        args["tri_features"] = tuple(x for x in features if x != "cff")
        return {
            **args,
            "text_encoder": text,
            "prompt": prompt,
            "cgi": cgi,
            "cff": cff,
            "cff_query": s.CFF.QUERY,
            "cff_kv": s.CFF.KV,
            "cff_tokens": s.CFF.TOKENS,
            "cff_pool": s.CFF.POOL,
            "con_weight": s.CON.SCALE,
            "con_i2t": s.CON.I2T,
            "con_t2i": s.CON.T2I,
            "cff_triplet": "cff" in features,
            "truncate_at_eot": cfg.MODEL.PROMPT.TRUNCATE_AT_EOT,
        }

    # ------------------------------------------------------------------ text side
    def caption_features(self, batched_inputs: Dict) -> torch.Tensor:
        """``[B, E]`` float32 caption embeddings ``t`` of a training batch: the cached ``caption_embeds`` or, with
        ``CAPTIONS.CACHE False``, the frozen text encoder on ``caption_tokens``."""
        if "caption_embeds" in batched_inputs:
            return batched_inputs["caption_embeds"].to(self.device, non_blocking=True).float()
        if "caption_tokens" in batched_inputs:
            if self.text_encoder.token_embedding is None:
                raise ValueError("batch has caption_tokens but the model was built with CAPTIONS.CACHE True (no "
                                 "token table); build both with the same CAPTIONS.CACHE")
            with torch.no_grad(), torch.autocast(self.device.type, enabled=False):
                return self.text_encoder(batched_inputs["caption_tokens"].to(self.device)).float()
        raise KeyError("ClipSCGI training batches need per-image captions: 'caption_embeds' (CAPTIONS.CACHE True) or "
                       "'caption_tokens', added by ClipSCGI.train_sample_fields through build_clip_train_set")

    def encode_composed(self, feats: ClipImageFeatures, captions: torch.Tensor):
        """CGI + frozen text encoder: ``(T [B, E] pooled, [B, L, D] tokens t_sos..t_eos)`` of "a photo of a S*
        person" (``L = 8``; 77 without EOT truncation)."""
        patches = feats.tokens_proj[:, 1:] if self._vit else feats.tokens
        pseudo = self.inversion(feats.proj, patches, captions)
        embeddings, eot = self.prompt.composed(pseudo, full_context=not self.truncate_at_eot)
        return self.text_encoder.encode_embeddings(embeddings, eot, return_tokens=True,
                                                   truncate=self.truncate_at_eot, max_eot=self.prompt.composed_eot)

    def encode_simplified(self, batch: int = 1) -> torch.Tensor:
        """``[batch, L, D]`` float32 token sequence of "a photo of a person" (no gradient; autocast off)."""
        with torch.no_grad(), torch.autocast(self.device.type, enabled=False):
            embeddings, eot = self.prompt.simplified(batch, full_context=not self.truncate_at_eot)
            _, tokens = self.text_encoder.encode_embeddings(embeddings.float(), eot, return_tokens=True,
                                                            truncate=self.truncate_at_eot,
                                                            max_eot=self.prompt.simplified_eot)
            return tokens.float()

    def fixed_query(self) -> torch.Tensor:
        """``[1, L, D]`` the fixed prompt's token sequence (the CFF query)."""
        return self.simplified_text()

    def simplified_query(self) -> Optional[QueryState]:
        """The fixed prompt's CFF query state (cached in eval); None when the image is the query."""
        return super().simplified_query() if self.cff_query == "text" else None

    # ------------------------------------------------------------------ image side
    def extract(self, batched_inputs: Dict, **backbone_kwargs) -> ClipImageFeatures:
        project = self._vit and (self.inversion is not None or (self.mim is not None and self.mim_tokens == "proj"))
        return super(PromptSG, self).extract(batched_inputs, project_tokens=project, **backbone_kwargs)

    def key_values(self, feats: ClipImageFeatures) -> torch.Tensor:
        """``[B, M', C]`` image representation of the CFF: ``cls`` (one token), ``patches`` or ``all``."""
        tokens = feats.tokens_proj if self.mim_tokens == "proj" else feats.tokens
        if self.cff_kv != "cls":
            return super().key_values(feats)
        if self._vit:
            return tokens[:, :1]
        return feats.final.unsqueeze(1).to(tokens.dtype)  # ModifiedResNet: GAP(layer4), the layer4 map's global token

    def interact(self, feats: ClipImageFeatures, text: Optional[torch.Tensor] = None,
                 state: Optional[QueryState] = None) -> torch.Tensor:
        """``[B, D]`` CFF output ``h`` for per-image prompt tokens ``text [B, L, D]`` (None: the fixed prompt)."""
        image = self.key_values(feats)
        if self.cff_query == "image":
            tokens = text if text is not None else self.simplified_text()
            h = self.mim(image, tokens.to(image.dtype).expand(image.shape[0], -1, -1))
            return h[:, 0] if self.cff_pool == "eos" else h.mean(dim=1)
        eot = self.prompt.composed_eot if text is not None else self.prompt.simplified_eot
        h = self.mim(text, image, state=state)
        return h[:, eot] if self.cff_pool == "eos" else h[:, :eot + 1].mean(dim=1)

    # ------------------------------------------------------------------ forward
    def forward(self, batched_inputs: Dict):
        feats = self.extract(batched_inputs)
        if not self.training:
            return self.inference_feature(feats)
        targets = batched_inputs["targets"].to(self.device, non_blocking=True)
        captions = self.caption_features(batched_inputs) if self.inversion is not None else None
        return self.losses(feats, targets, captions)

    def losses(self, feats: ClipImageFeatures, targets: torch.Tensor,
               captions: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """Eq. 13 over the (global) batch: ``loss_id``, ``loss_triplet``, ``loss_t2i`` / ``loss_i2t``."""
        pooled = tokens = None
        if self.inversion is not None:
            if captions is None:
                raise ValueError("CGI needs the caption embeddings of the batch")
            pooled, tokens = self.encode_composed(feats, captions)
        h = None
        if self.mim is not None:
            h = self.interact(feats, text=tokens, state=None if tokens is not None else self.simplified_query())
        return self.reid_losses(feats, targets, h, pooled)
