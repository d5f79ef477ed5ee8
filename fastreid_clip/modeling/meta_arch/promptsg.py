"""PromptSG (Yang et al., "A Pedestrian is Worth One Prompt", CVPR 2024): one-stage prompt-driven semantic guidance."""

from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from fastreid.config import configurable
from fastreid.modeling.meta_arch import META_ARCH_REGISTRY

from ...config.promptsg import INFERENCE_MODES, MIM_KV, MIM_TOKENS, SUPCON_SIMS, TEST_FEATS, TRAIN_PROMPTS
from ...config.validate import ConfigValueError
from ...utils.distributed import all_gather_cat
from ..backbones import CLIPTextEncoder, ClipViTBackbone, build_clip_towers
from ..backbones.features import ClipImageFeatures
from ..fusion import QueryState, TextQueryFusion
from ..heads import BNNeckClassifier
from ..inversion import GlobalBatchNorm1d, InversionNet
from ..losses import batch_hard_triplet_loss, cross_entropy_label_smooth
from ..losses.contrastive import supcon_loss
from ..prompts import ComposedPrompt
from .clip_baseline import ClipBaseline

__all__ = ["PromptSG", "check_settings"]

_LEVELS = ("inter", "final", "proj")


def _choice(key: str, value, choices) -> str:
    if value not in choices:
        raise ConfigValueError(key, value, f"one of {', '.join(choices)}")
    return value


def _number(key: str, value, ok, expected: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
        raise ConfigValueError(key, value, expected)


def _check_tri_features(features) -> None:
    if set(features) - set(_LEVELS) - {"mim"}:
        raise ConfigValueError("MODEL.LOSSES.TRI.FEATURES", tuple(features), f"levels among mim, {', '.join(_LEVELS)}")


def check_settings(*, inference_mode: str, train_prompt: str, supcon_weight: float, supcon_i2t: bool,
                   supcon_t2i: bool, supcon_sim: str, supcon_tau: float, mim_enabled: bool, mim_kv: str,
                   mim_tokens: str, test_feat: str, mim_triplet: bool, vit: bool) -> None:
    """PromptSG's switches and their combinations; a bad one raises :class:`ConfigValueError` naming its key."""
    key = "MODEL.PROMPTSG"
    _choice(f"{key}.INFERENCE", inference_mode, INFERENCE_MODES)
    _choice(f"{key}.TRAIN_PROMPT", train_prompt, TRAIN_PROMPTS)
    _choice(f"{key}.SUPCON.SIM", supcon_sim, SUPCON_SIMS)
    _choice(f"{key}.MIM.KV", mim_kv, MIM_KV)
    _choice(f"{key}.MIM.TOKENS", mim_tokens, MIM_TOKENS)
    _choice(f"{key}.TEST_FEAT", test_feat, TEST_FEATS)
    _number(f"{key}.SUPCON.TAU", supcon_tau, lambda v: v > 0, "a temperature > 0 (0.01 = CLIP's logit scale)")
    _number(f"{key}.SUPCON.SCALE", supcon_weight, lambda v: v >= 0, "a loss weight >= 0 (paper: 0.5)")
    supcon = bool(supcon_weight) and (supcon_i2t or supcon_t2i)
    if train_prompt == "simplified":
        if not mim_enabled:
            raise ConfigValueError(f"{key}.TRAIN_PROMPT", train_prompt, "'composed' when MODEL.PROMPTSG.MIM.ENABLED "
                                   "is False (the simplified prompt only feeds the MIM)")
        if supcon:
            raise ConfigValueError(f"{key}.SUPCON.SCALE", supcon_weight, "0 with TRAIN_PROMPT simplified (paper "
                                   "Tab. 4: no SupCon without s*; the prompt is the same for every image)")
        if inference_mode == "composed":
            raise ConfigValueError(f"{key}.INFERENCE", inference_mode, "'simplified' with TRAIN_PROMPT simplified "
                                   "(no inversion network is trained)")
    if not mim_enabled and not supcon:
        raise ConfigValueError(f"{key}.MIM.ENABLED", mim_enabled, "True, or a SupCon loss (SUPCON.SCALE > 0 with "
                               "I2T or T2I): without both PromptSG is ClipBaseline")
    if mim_triplet and not mim_enabled:
        raise ConfigValueError("MODEL.LOSSES.TRI.FEATURES", "mim", f"levels among {', '.join(_LEVELS)} when "
                               f"MODEL.PROMPTSG.MIM.ENABLED is False")
    if mim_enabled and mim_tokens == "proj" and not vit:
        raise ConfigValueError(f"{key}.MIM.TOKENS", mim_tokens, "'final' for a ModifiedResNet backbone (its layer4 "
                               "map has no projected tokens)")


def _global_bnneck(dim: int, num_classes: int) -> BNNeckClassifier:
    """CLIP-ReID's BN-neck + bias-free classifier whose BN uses global-batch statistics under DDP."""
    head = BNNeckClassifier(dim, num_classes)
    bn = GlobalBatchNorm1d(dim)
    nn.init.ones_(bn.weight)
    nn.init.zeros_(bn.bias)
    bn.bias.requires_grad_(False)
    head.bn = bn
    return head


@META_ARCH_REGISTRY.register()
class PromptSG(ClipBaseline):
    """CLIP visual encoder guided by a per-image language prompt through a multimodal interaction module.

    Training (one stage, paper Fig. 3, Eq. 4-10), for a batch of images with global features ``v = f_proj``:

    1. the inversion network maps ``v`` to a pseudo-word ``s* = f_theta(v)`` in the token-embedding space (§4.1);
    2. ``s*`` is spliced into "A photo of a s* person" and the **frozen** text encoder gives ``l_p`` (gradients
       flow through it into ``f_theta`` and, via ``v``, into the visual encoder);
    3. the interaction module (MIM, §4.2) attends from ``l_p`` (one query token) over the patch tokens and refines
       it with transformer blocks into ``z``;
    4. ``L = w_id L_ID(z) + w_tri sum_{x in TRI.FEATURES} L_tri(x) + lambda (L_i2t + L_t2i)`` (Eq. 10): label-smoothed
       CE through a BN-neck on ``z``; batch-hard triplet on ``z`` ("mim") and the backbone levels; the symmetric
       SupCon loss between ``v`` and ``l_p`` with same-identity positives (Eq. 4-6, cosine / tau).

    Under DDP every batch-dependent term sees the global batch: the SupCon and triplet losses gather features from
    all ranks (differentiably), and the BNs of the inversion network and of the BN-neck on ``z`` normalise with
    global statistics (:class:`~fastreid_clip.modeling.inversion.GlobalBatchNorm1d`), so an N-process run trains the
    model of the single-process one.

    Inference (§4.3, ``inference_mode``): ``composed`` runs steps 1-3 per image (the paper's headline numbers);
    ``simplified`` uses "A photo of a person" instead, whose text feature and MIM query projection are computed once
    and cached, so only the visual encoder and the MIM run per image. The cache is rebuilt after any ``train()`` /
    ``eval()`` switch or weight load. The retrieval feature is ``z`` (``test_feat="mim"``) or ``concat(f, z)``
    (``"cat"``), before or after the BN-neck (``neck_feat``), L2-normalised (``test_feat_norm``).

    Ablations: ``mim=None`` (Tab. 3 d: the baseline's two heads and retrieval feature, plus SupCon); ``train_prompt=
    "simplified"`` (Tab. 4: the fixed prompt as the query, no inversion network, no SupCon); ``supcon_i2t`` /
    ``supcon_t2i`` (Tab. 3 b, c).

    Args:
        text_encoder: CLIP text tower (frozen here).
        prompt: the two templates' fixed rows.
        inversion: ``f_theta`` (None when training with the simplified prompt).
        mim: the interaction module (None = no MIM).
        inference_mode: ``composed`` or ``simplified``.
        train_prompt: ``composed`` or ``simplified``.
        supcon_weight: lambda of Eq. 10.
        supcon_i2t, supcon_t2i: use each direction.
        supcon_sim: ``cosine`` (Eq. 1) or ``dot``.
        supcon_tau: the temperature tau.
        mim_kv: keys/values ``patches`` or ``all`` (global token + patches).
        mim_tokens: token space of the keys/values, ``proj`` (ViT only) or ``final``.
        test_feat: ``mim`` or ``cat``.
        mim_triplet: apply the triplet loss to ``z`` too.
        truncate_at_eot: run the text encoder only up to EOT (exact).
        **baseline: :class:`ClipBaseline` arguments (``tri_features``: the backbone levels only).
    """

    #: The config overrides that select each inference mode, for tools that evaluate every mode of one trained
    #: model (``tools/benchmark_methods.py``).
    INFERENCE_MODE_OVERRIDES = {mode: ["MODEL.PROMPTSG.INFERENCE", mode] for mode in INFERENCE_MODES}

    @configurable
    def __init__(self, *, text_encoder: CLIPTextEncoder, prompt: ComposedPrompt, inversion: Optional[InversionNet],
                 mim: Optional[TextQueryFusion], inference_mode: str = "composed", train_prompt: str = "composed",
                 supcon_weight: float = 0.5, supcon_i2t: bool = True, supcon_t2i: bool = True,
                 supcon_sim: str = "cosine", supcon_tau: float = 0.01, mim_kv: str = "patches",
                 mim_tokens: str = "proj", test_feat: str = "mim", mim_triplet: bool = True,
                 truncate_at_eot: bool = True, **baseline):
        super().__init__(**baseline)
        self._vit = isinstance(self.backbone, ClipViTBackbone)
        check_settings(inference_mode=inference_mode, train_prompt=train_prompt, supcon_weight=supcon_weight,
                       supcon_i2t=supcon_i2t, supcon_t2i=supcon_t2i, supcon_sim=supcon_sim, supcon_tau=supcon_tau,
                       mim_enabled=mim is not None, mim_kv=mim_kv, mim_tokens=mim_tokens, test_feat=test_feat,
                       mim_triplet=mim_triplet, vit=self._vit)
        if (train_prompt == "composed") != (inversion is not None):
            raise ValueError("the inversion network is built exactly when TRAIN_PROMPT is composed")
        self.inference_mode, self.train_prompt, self.test_feat = inference_mode, train_prompt, test_feat
        self.supcon_weight = float(supcon_weight) if (supcon_i2t or supcon_t2i) else 0.0
        self.supcon_i2t, self.supcon_t2i = bool(supcon_i2t), bool(supcon_t2i)
        self.supcon_sim, self.supcon_tau = supcon_sim, float(supcon_tau)
        self.mim_kv, self.mim_tokens = mim_kv, mim_tokens
        self.text_encoder = text_encoder.freeze()
        self.prompt = prompt
        self.inversion = inversion
        self.mim = mim
        self.mim_triplet = bool(mim_triplet) and mim is not None
        self.truncate_at_eot = truncate_at_eot
        if mim is not None:
            # The ID loss is on z only: one BN-neck classifier named `head` (tools/train_net.py --eval-only reads the
            # class count from head.classifier.weight); the baseline's second head is not used.
            self.head = _global_bnneck(mim.width, self.head.classifier.out_features)
            self.head_proj = None
        self._text_cache: Optional[torch.Tensor] = None  # [1, E] simplified-prompt text feature
        self._query_cache: Optional[QueryState] = None  # its MIM query (eval only)
        self.register_load_state_dict_post_hook(lambda module, _keys: module.clear_prompt_cache())

    @classmethod
    def check_config(cls, cfg) -> None:
        """Check the PromptSG keys before any data is built or read (``validate_train_config`` calls this)."""
        from ..backbones.clip_model import vit_patch_size

        p = cfg.MODEL.PROMPTSG
        features = tuple(cfg.MODEL.LOSSES.TRI.FEATURES)
        _check_tri_features(features)
        check_settings(inference_mode=p.INFERENCE, train_prompt=p.TRAIN_PROMPT, supcon_weight=p.SUPCON.SCALE,
                       supcon_i2t=p.SUPCON.I2T, supcon_t2i=p.SUPCON.T2I, supcon_sim=p.SUPCON.SIM,
                       supcon_tau=p.SUPCON.TAU, mim_enabled=p.MIM.ENABLED, mim_kv=p.MIM.KV, mim_tokens=p.MIM.TOKENS,
                       test_feat=p.TEST_FEAT, mim_triplet="mim" in features,
                       vit=vit_patch_size(cfg.MODEL.BACKBONE.CLIP_NAME) is not None)

    @classmethod
    def from_config(cls, cfg) -> Dict:
        towers = build_clip_towers(cfg)
        text, image = towers.text, towers.image
        p = cfg.MODEL.PROMPTSG
        prompt = ComposedPrompt(text.token_embedding, text.tokenize, cfg.MODEL.PROMPT.CLASS_WORD, p.PROMPT.PERIOD,
                                p.PROMPT.PLACEHOLDER)
        text.token_embedding = None  # the prompt holds the embedded template rows
        features = tuple(cfg.MODEL.LOSSES.TRI.FEATURES)
        _check_tri_features(features)
        inversion = None
        if p.TRAIN_PROMPT == "composed":
            inversion = InversionNet(cfg, in_dim=image.proj_dim, out_dim=text.width)
        mim = None
        if p.MIM.ENABLED:
            kv_dim = image.proj_dim if p.MIM.TOKENS == "proj" else image.final_dim
            mim = TextQueryFusion(text.output_dim, kv_dim, p.MIM.WIDTH, p.MIM.HEADS, p.MIM.DEPTH, p.MIM.MLP_RATIO,
                                  query_residual=p.MIM.QUERY_RESIDUAL)
        args = cls.baseline_args(cfg, image)
        args["tri_features"] = tuple(f for f in features if f != "mim")
        return {
            **args,
            "text_encoder": text,
            "prompt": prompt,
            "inversion": inversion,
            "mim": mim,
            "inference_mode": p.INFERENCE,
            "train_prompt": p.TRAIN_PROMPT,
            "supcon_weight": p.SUPCON.SCALE,
            "supcon_i2t": p.SUPCON.I2T,
            "supcon_t2i": p.SUPCON.T2I,
            "supcon_sim": p.SUPCON.SIM,
            "supcon_tau": p.SUPCON.TAU,
            "mim_kv": p.MIM.KV,
            "mim_tokens": p.MIM.TOKENS,
            "test_feat": p.TEST_FEAT,
            "mim_triplet": "mim" in features,
            "truncate_at_eot": cfg.MODEL.PROMPT.TRUNCATE_AT_EOT,
        }

    # ------------------------------------------------------------------ caches
    def clear_prompt_cache(self) -> None:
        """Forget the cached simplified-prompt text feature and MIM query (rebuilt on next use)."""
        self._text_cache = None
        self._query_cache = None

    def train(self, mode: bool = True):
        self._query_cache = None  # the MIM weights may change (train) or have changed (eval after training)
        return super().train(mode)

    # ------------------------------------------------------------------ text side
    def encode_composed(self, image_feats: torch.Tensor) -> torch.Tensor:
        """``[B, E]`` global image features ``v`` -> ``[B, E]`` text features ``l_p`` of "A photo of a s* person"."""
        pseudo = self.inversion(image_feats)
        embeddings, eot = self.prompt.composed(pseudo, full_context=not self.truncate_at_eot)
        return self.text_encoder.encode_embeddings(embeddings, eot, truncate=self.truncate_at_eot,
                                                   max_eot=self.prompt.composed_eot)

    def encode_simplified(self, batch: int = 1) -> torch.Tensor:
        """``[batch, E]`` float32 text features of "A photo of a person" (no gradient; autocast off)."""
        with torch.no_grad(), torch.autocast(self.device.type, enabled=False):
            embeddings, eot = self.prompt.simplified(batch, full_context=not self.truncate_at_eot)
            return self.text_encoder.encode_embeddings(embeddings.float(), eot, truncate=self.truncate_at_eot,
                                                       max_eot=self.prompt.simplified_eot).float()

    def simplified_text(self) -> torch.Tensor:
        """The cached ``[1, E]`` simplified-prompt feature (the text encoder runs once per device / weight load)."""
        if self._text_cache is None or self._text_cache.device != self.device:
            self._text_cache = self.encode_simplified(1)
        return self._text_cache

    def simplified_query(self) -> QueryState:
        """The simplified prompt's MIM query state: cached in eval mode, recomputed (with gradients) in training."""
        if self.training:
            return self.mim.encode_query(self.fixed_query())
        if self._query_cache is None or self._query_cache.q.device != self.device:
            with torch.no_grad(), torch.autocast(self.device.type, enabled=False):
                self._query_cache = self.mim.encode_query(self.fixed_query())
        return self._query_cache

    def fixed_query(self) -> torch.Tensor:
        """``[1, Lq, E]`` MIM query of the simplified prompt: its text feature as one token (CLIP-SCGI: the
        prompt's token sequence)."""
        return self.simplified_text().unsqueeze(1)

    # ------------------------------------------------------------------ image side
    def extract(self, batched_inputs: Dict, **backbone_kwargs) -> ClipImageFeatures:
        project = self.mim is not None and self.mim_tokens == "proj"
        return super().extract(batched_inputs, project_tokens=project, **backbone_kwargs)

    def key_values(self, feats: ClipImageFeatures) -> torch.Tensor:
        """``[B, M(+1), C]`` MIM keys/values: the patch tokens (``mim_kv="all"``: the global token first)."""
        tokens = feats.tokens_proj if self.mim_tokens == "proj" else feats.tokens
        if self._vit:  # the class token is row 0
            return tokens[:, 1:] if self.mim_kv == "patches" else tokens
        if self.mim_kv == "all":  # ModifiedResNet: GAP(layer4) as the global token of the layer4 map
            return torch.cat([feats.final.unsqueeze(1).to(tokens.dtype), tokens], dim=1)
        return tokens

    def interact(self, feats: ClipImageFeatures, text: Optional[torch.Tensor] = None,
                 state: Optional[QueryState] = None) -> torch.Tensor:
        """``[B, D]`` MIM output ``z`` for per-image text features ``text [B, E]`` or a query ``state``."""
        query = text.unsqueeze(1) if text is not None else None
        return self.mim(query, self.key_values(feats), state=state)[:, 0]

    # ------------------------------------------------------------------ forward
    def inference_feature(self, feats: ClipImageFeatures) -> torch.Tensor:
        """``[B, D]`` retrieval feature (``[B, C + D]`` with ``test_feat="cat"``; the baseline's without MIM)."""
        if self.mim is None:
            return super().inference_feature(feats)
        if self.inference_mode == "composed":
            z = self.interact(feats, text=self.encode_composed(feats.proj))
        else:
            z = self.interact(feats, state=self.simplified_query())
        if self.neck_feat == "after":
            z = self.head.bn(z)
        out = torch.cat([feats.final, z.to(feats.final.dtype)], dim=1) if self.test_feat == "cat" else z
        out = out.float()
        return F.normalize(out, dim=1) if self.test_feat_norm else out

    def losses(self, feats: ClipImageFeatures, targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Eq. 10 over the (global) batch: ``loss_id``, ``loss_triplet``, ``loss_i2t`` / ``loss_t2i`` (x lambda)."""
        image = feats.proj
        text = self.encode_composed(image) if self.train_prompt == "composed" else None
        z = None
        if self.mim is not None:
            state = None if text is not None else self.simplified_query()
            z = self.interact(feats, text=text, state=state)
        return self.reid_losses(feats, targets, z, text)

    def reid_losses(self, feats: ClipImageFeatures, targets: torch.Tensor, z: Optional[torch.Tensor],
                    text: Optional[torch.Tensor]) -> Dict[str, torch.Tensor]:
        """The loss terms given the MIM output ``z [B, D]`` (None without a MIM: the baseline's two heads) and the
        per-image text features ``text [B, E]`` (None: no SupCon)."""
        image = feats.proj
        if z is not None:
            _, logits = self.head(z)
            loss_id = cross_entropy_label_smooth(logits, targets, self.label_smooth)
        else:
            _, logits = self.head(feats.final)
            _, logits_proj = self.head_proj(feats.proj)
            loss_id = cross_entropy_label_smooth(logits, targets, self.label_smooth) + \
                cross_entropy_label_smooth(logits_proj, targets, self.label_smooth)
        labels = all_gather_cat(targets)
        levels = [getattr(feats, name) for name in self.tri_features] + ([z] if self.mim_triplet else [])
        loss_tri = sum(batch_hard_triplet_loss(all_gather_cat(x, differentiable=True), labels, self.tri_margin)
                       for x in levels) if levels else image.sum() * 0.0
        losses = {"loss_id": self.id_weight * loss_id, "loss_triplet": self.tri_weight * loss_tri}
        if self.supcon_weight and text is not None:
            losses.update(self.supcon_losses(all_gather_cat(image.float(), differentiable=True),
                                             all_gather_cat(text.float(), differentiable=True), labels))
        return losses

    def supcon_losses(self, image_feats: torch.Tensor, text_feats: torch.Tensor,
                      labels: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``lambda * L^Sup_i2t`` and ``lambda * L^Sup_t2i`` (Eq. 5, 6) of paired ``[N, E]`` image / text features."""
        cosine = self.supcon_sim == "cosine"
        out = {}
        if self.supcon_i2t:
            out["loss_i2t"] = self.supcon_weight * supcon_loss(image_feats, text_feats, labels, labels,
                                                               self.supcon_tau, normalize=cosine)
        if self.supcon_t2i:
            out["loss_t2i"] = self.supcon_weight * supcon_loss(text_feats, image_feats, labels, labels,
                                                               self.supcon_tau, normalize=cosine)
        return out
