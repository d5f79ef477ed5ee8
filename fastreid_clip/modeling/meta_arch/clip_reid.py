"""CLIP-ReID (Li, Sun, Li, AAAI 2023): two-stage identity prompt learning for the CLIP image encoder."""

from __future__ import annotations

from typing import Dict

import torch
from fastreid.config import configurable
from fastreid.modeling.meta_arch import META_ARCH_REGISTRY

from ...config.validate import check_label_smoothing
from ...utils.distributed import all_gather_cat
from ..backbones import CLIPTextEncoder, build_clip_towers
from ..losses import cross_entropy_label_smooth
from ..losses.contrastive import i2t_loss, t2i_loss
from ..prompts import IDPromptLearner
from .clip_baseline import ClipBaseline

__all__ = ["ClipReID"]

PROMPT_STAGE, IMAGE_STAGE = "prompt", "image"


@META_ARCH_REGISTRY.register()
class ClipReID(ClipBaseline):
    """CLIP-ReID: the baseline's image encoder and heads plus a frozen text encoder and identity prompts.

    Stage ``prompt`` (paper §3.2, Eq. 2-5): image and text encoders frozen; on cached image features ``f_proj``
    (test transform, no SIE) the prompt tokens learn ``L = L_i2t + L_t2i`` (supervised contrastive, raw dot
    products). Under DDP the loss sees the whole global minibatch (differentiable all-gather of text features).

    Stage ``image`` (Eq. 8-9): the text features of every identity are computed once into a fixed bank ``T``;
    the image encoder trains with the baseline losses plus ``L_i2tce = CE_ls(f_proj · Tᵀ, y)``.
    ViT weights ID 0.25 / triplet 1 / i2tce 1; RN50 1 / 1 / 1 (``MODEL.LOSSES.{CE,TRI,I2T}.SCALE``).

    Inference is the baseline's (text unused).

    Args:
        text_encoder: CLIP text tower (frozen here; its token embedding is not kept, as in the reference).
        prompt_learner: identity prompt learner.
        i2t_weight, i2t_epsilon: weight and label smoothing of ``L_i2tce``.
        supcon_temperature: temperature of the stage-1 losses (1 = CLIP-ReID's raw dot products).
        truncate_at_eot: run the text encoder only up to EOT (exact; False = the full 77-token context).
        **baseline: :class:`ClipBaseline` arguments.
    """

    @configurable
    def __init__(self, *, text_encoder: CLIPTextEncoder, prompt_learner: IDPromptLearner, i2t_weight: float = 1.0,
                 i2t_epsilon: float = 0.1, supcon_temperature: float = 1.0, truncate_at_eot: bool = True,
                 **baseline):
        super().__init__(**baseline)
        check_label_smoothing("MODEL.LOSSES.I2T.EPSILON", i2t_epsilon)
        self.text_encoder = text_encoder.freeze()
        self.prompt_learner = prompt_learner
        self.i2t_weight = i2t_weight
        self.i2t_epsilon = i2t_epsilon
        self.supcon_temperature = supcon_temperature
        self.truncate_at_eot = truncate_at_eot
        self.register_buffer("text_bank", torch.empty(0), persistent=False)
        self.stage = IMAGE_STAGE

    @classmethod
    def from_config(cls, cfg) -> Dict:
        towers = build_clip_towers(cfg)
        text = towers.text
        prompt = cfg.MODEL.PROMPT
        learner = IDPromptLearner(cfg.MODEL.HEADS.NUM_CLASSES, text.token_embedding, text.tokenize, prompt.N_CTX,
                                  prompt.CLASS_WORD, prompt.INIT_STD)
        text.token_embedding = None  # the prompt learner holds the embedded template rows
        return {
            **cls.baseline_args(cfg, towers.image),
            "text_encoder": text,
            "prompt_learner": learner,
            "i2t_weight": cfg.MODEL.LOSSES.I2T.SCALE,
            "i2t_epsilon": cfg.MODEL.LOSSES.I2T.EPSILON,
            "supcon_temperature": cfg.MODEL.LOSSES.SUPCON.TEMPERATURE,
            "truncate_at_eot": cfg.MODEL.PROMPT.TRUNCATE_AT_EOT,
        }

    # ------------------------------------------------------------------ stages
    def set_stage(self, name: str) -> None:
        if name not in (PROMPT_STAGE, IMAGE_STAGE):
            raise ValueError(f"ClipReID has stages '{PROMPT_STAGE}' and '{IMAGE_STAGE}', not '{name}' (STAGES.NAMES)")
        self.stage = name

    def on_stage_start(self, name: str) -> None:
        if name == IMAGE_STAGE:
            self.text_bank = self.compute_text_bank()

    @torch.no_grad()
    def cache_features(self, batched_inputs: Dict) -> torch.Tensor:
        """``[B, E]`` projected image features without SIE, the stage-1 cache entries."""
        return self.backbone(self.preprocess_image(batched_inputs), use_sie=False).proj

    def encode_prompts(self, labels: torch.Tensor) -> torch.Tensor:
        """``[B, E]`` text features of the identity prompts of ``labels`` (EOT-truncated context by default)."""
        embeddings, eot = self.prompt_learner(labels, full_context=not self.truncate_at_eot)
        return self.text_encoder.encode_embeddings(embeddings, eot, truncate=self.truncate_at_eot,
                                                   max_eot=self.prompt_learner.eot_index)

    @torch.no_grad()
    def compute_text_bank(self, chunk: int = 64) -> torch.Tensor:
        """``[C, E]`` text features of every identity (fixed during the image stage)."""
        labels = torch.arange(self.prompt_learner.num_ids, device=self.device)
        return torch.cat([self.encode_prompts(labels[i:i + chunk]).float() for i in range(0, len(labels), chunk)])

    # ------------------------------------------------------------------ forward
    def forward(self, batched_inputs: Dict):
        if self.training and self.stage == PROMPT_STAGE:
            targets = batched_inputs["targets"].to(self.device, non_blocking=True)
            return self.prompt_losses(batched_inputs["features"].to(self.device), targets)
        return super().forward(batched_inputs)

    def losses(self, feats, targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Image-stage losses: the baseline's plus ``L_i2tce`` against the fixed text bank (Eq. 8-9)."""
        losses = super().losses(feats, targets)
        if self.i2t_weight:
            if self.text_bank.numel() == 0:
                raise RuntimeError("the image stage needs the text bank: call on_stage_start('image') first")
            logits = feats.proj.float() @ self.text_bank.t()
            losses["loss_i2tce"] = self.i2t_weight * cross_entropy_label_smooth(logits, targets, self.i2t_epsilon)
        return losses

    def prompt_losses(self, image_feats: torch.Tensor, targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Stage-1 losses over the global minibatch. Each identity's prompt is encoded once per minibatch."""
        unique, inverse = targets.unique(return_inverse=True)
        return self.supcon_prompt_losses(image_feats, self.encode_prompts(unique)[inverse], targets)

    def supcon_prompt_losses(self, image_feats: torch.Tensor, text_feats: torch.Tensor,
                             targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``L_i2t`` and ``L_t2i`` (Eq. 2-5) of per-sample ``[b, E]`` image and text features, over the global
        minibatch (text features gathered differentiably)."""
        images = all_gather_cat(image_feats.float())
        texts = all_gather_cat(text_feats.float(), differentiable=True)
        labels = all_gather_cat(targets)
        return {
            "loss_i2t": i2t_loss(images, texts, labels, self.supcon_temperature),
            "loss_t2i": t2i_loss(texts, images, labels, self.supcon_temperature),
        }
