"""SVLL-ReID (Wang et al., "Image Re-Identification: Where Self-supervision Meets Vision-Language Learning", Image and
Vision Computing 2025, arXiv 2407.20647): CLIP-ReID plus one self-supervised loss per stage."""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import torch
from fastreid.config import configurable
from fastreid.modeling.meta_arch import META_ARCH_REGISTRY
from fastreid.utils import comm

from ...config.svll_reid import (VSS_POSITIVES, check_choice, check_head_dims, check_mask_rate, check_svll_config,
                                 check_temperature, check_weight)
from ...utils.distributed import all_gather_cat, world_size
from ..heads.projection import HEAD_INITS, ProjectionHead
from ..losses.contrastive import nt_xent_loss
from ..prompts.masking import PROMPT_MASKS, mask_prompts, token_mask
from .clip_reid import IMAGE_STAGE, ClipReID

__all__ = ["SVLLReID"]


def _global_views(local: torch.Tensor, count: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Two views of the global batch from every rank's ``[2n, D]`` block ``[view a (n rows); view b (n rows)]``.

    The blocks are all-gathered differentiably (the backward sums every rank's gradient into its slice, so with the
    loss computed identically on every rank DDP's gradient average is the single-process gradient) and regrouped
    into ``([count, D], [count, D])`` in rank order; rows beyond ``count`` (padding) are dropped.
    """
    world, n = world_size(), local.shape[0] // 2
    gathered = all_gather_cat(local, differentiable=True).reshape(world, 2, n, -1)
    both = gathered.transpose(0, 1).reshape(2, world * n, -1)[:, :count]
    return both[0], both[1]


@META_ARCH_REGISTRY.register()
class SVLLReID(ClipReID):
    """SVLL-ReID: :class:`ClipReID` with language self-supervision in stage ``prompt`` and vision self-supervision
    in stage ``image``. Inference is CLIP-ReID's (the projection heads are training-only).

    Stage ``prompt`` (paper §II-B, Eq. 6-8): besides CLIP-ReID's ``L_i2t + L_t2i`` on the cached image features, the
    prompt of every identity in the (global) minibatch is masked twice at random (``lss_mask``: ``"token"`` zeroes a
    proportion ``lss_mask_rate`` of the learnable rows, the paper; ``"element"`` zeroes every element with that
    probability, the reference code), both copies go through the frozen text encoder (EOT-truncated) and the text
    MLP, and ``L_lss`` = NT-Xent (cosine / tau) with the two copies of one prompt as positives and every other masked
    prompt as a negative (Eq. 7). ``L = L_i2t + L_t2i + lss_weight * L_lss`` (Eq. 8).

    Stage ``image`` (Eq. 9-11): the batch carries two extra views of every image (``"views"`` ``[B, 2, 3, H, W]``,
    the train pipeline with erasing of a fixed 1/3 area: ``INPUT.VIEWS``). They go through the image encoder
    without SIE (one pass of B images per view, with gradients); the ``ln_post`` class tokens (``final``) through the
    image MLP give ``L_vss`` = NT-Xent over the 2B views, positives the two views of one image (``"instance"``, the
    reference) or every view of the same identity (``"identity"``, the paper's prose). ``L = L_i2tce + L_id + L_tri +
    vss_weight * L_vss`` (Eq. 11), CLIP-ReID's terms unchanged.

    Under DDP, ``L_lss`` and ``L_vss`` see the global minibatch: the masked prompts of the global set of identities
    are encoded in shards, the view features are gathered, and each MLP (whose BatchNorms need the global batch)
    runs on the gathered rows on every rank. CLIP-ReID's own stage-2 terms stay per rank, as in ``ClipReID``.

    With ``lss_weight = vss_weight = 0`` the model trains exactly as ``ClipReID`` (the MLPs stay frozen and unused).

    Args:
        lss_weight: ``lambda_lss`` (0.8).
        lss_mask: ``"token"`` | ``"element"``. Reference code: ``element``.
        lss_mask_rate: ``alpha`` / Bernoulli probability (0.5).
        lss_temperature: tau of ``L_lss`` (0.1, reference code).
        lss_train_head: train the text MLP. Reference code: False (it stays at its random initialisation).
        lss_head_dims: ``(hidden, out)`` widths of the text MLP (4096, 256).
        lss_head_init: ``"default"`` | ``"kaiming"`` (reference: default).
        vss_weight: ``lambda_vss`` (0.8).
        vss_temperature: tau of ``L_vss`` (0.1, reference code).
        vss_positives: ``"instance"`` | ``"identity"``.
        vss_train_head: train the image MLP (reference: True, at the image stage's lr).
        vss_head_dims: ``(hidden, out)`` widths of the image MLP (4096, 256).
        vss_head_init: ``"kaiming"`` | ``"default"`` (reference: Kaiming-normal weights, BN U(0, 1)).
        **clip_reid: :class:`ClipReID` arguments.
    """

    @configurable
    def __init__(self, *, lss_weight: float = 0.8, lss_mask: str = "token", lss_mask_rate: float = 0.5,
                 lss_temperature: float = 0.1, lss_train_head: bool = False, lss_head_dims: Sequence[int] = (4096, 256),
                 lss_head_init: str = "default", vss_weight: float = 0.8, vss_temperature: float = 0.1,
                 vss_positives: str = "instance", vss_train_head: bool = True,
                 vss_head_dims: Sequence[int] = (4096, 256), vss_head_init: str = "kaiming", **clip_reid):
        super().__init__(**clip_reid)
        self.lss_weight = check_weight("MODEL.SVLL.LSS.SCALE", lss_weight)
        self.lss_mask = check_choice("MODEL.SVLL.LSS.MASK", lss_mask, PROMPT_MASKS)
        self.lss_mask_rate = check_mask_rate("MODEL.SVLL.LSS.MASK_RATE", lss_mask_rate)
        self.lss_temperature = check_temperature("MODEL.SVLL.LSS.TEMPERATURE", lss_temperature)
        self.vss_weight = check_weight("MODEL.SVLL.VSS.SCALE", vss_weight)
        self.vss_temperature = check_temperature("MODEL.SVLL.VSS.TEMPERATURE", vss_temperature)
        self.vss_positives = check_choice("MODEL.SVLL.VSS.POSITIVES", vss_positives, VSS_POSITIVES)
        check_head_dims("MODEL.SVLL.LSS.HEAD", *lss_head_dims)
        check_head_dims("MODEL.SVLL.VSS.HEAD", *vss_head_dims)
        check_choice("MODEL.SVLL.LSS.HEAD.INIT", lss_head_init, HEAD_INITS)
        check_choice("MODEL.SVLL.VSS.HEAD.INIT", vss_head_init, HEAD_INITS)
        # Built after everything ClipReID builds, so one seed gives both models the same shared weights.
        self.text_mlp = ProjectionHead(self.text_encoder.output_dim, *lss_head_dims, init=lss_head_init)
        self.image_mlp = ProjectionHead(self.backbone.final_dim, *vss_head_dims, init=vss_head_init)
        # A head that does not train is excluded from every stage's optimizer (ClipTrainer keeps parameters the model
        # froze frozen); one whose loss is off is also left out of DDP's gradient reduction this way.
        self.text_mlp.requires_grad_(bool(lss_train_head and self.lss_weight))
        self.image_mlp.requires_grad_(bool(vss_train_head and self.vss_weight))

    @classmethod
    def check_config(cls, cfg) -> None:
        """Checks ``MODEL.SVLL.*`` and ``INPUT.VIEWS`` (``validate_train_config`` calls it before any data)."""
        check_svll_config(cfg)

    @classmethod
    def from_config(cls, cfg) -> Dict:
        check_svll_config(cfg)
        lss, vss = cfg.MODEL.SVLL.LSS, cfg.MODEL.SVLL.VSS
        return {
            **super().from_config(cfg),
            "lss_weight": lss.SCALE,
            "lss_mask": lss.MASK,
            "lss_mask_rate": lss.MASK_RATE,
            "lss_temperature": lss.TEMPERATURE,
            "lss_train_head": lss.TRAIN_HEAD,
            "lss_head_dims": (lss.HEAD.HIDDEN_DIM, lss.HEAD.OUT_DIM),
            "lss_head_init": lss.HEAD.INIT,
            "vss_weight": vss.SCALE,
            "vss_temperature": vss.TEMPERATURE,
            "vss_positives": vss.POSITIVES,
            "vss_train_head": vss.TRAIN_HEAD,
            "vss_head_dims": (vss.HEAD.HIDDEN_DIM, vss.HEAD.OUT_DIM),
            "vss_head_init": vss.HEAD.INIT,
        }

    # ------------------------------------------------------------------ forward
    def forward(self, batched_inputs: Dict):
        losses = super().forward(batched_inputs)
        if self.training and self.stage == IMAGE_STAGE and self.vss_weight:
            losses["loss_vss"] = self.vss_weight * self.vision_ss_loss(batched_inputs)
        return losses

    def prompt_losses(self, image_feats: torch.Tensor, targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        """CLIP-ReID's stage-1 losses plus ``lss_weight * L_lss`` over the identities of the global minibatch.

        The minibatch's prompts (once per identity) and this rank's masked copies go through the text encoder in one
        call (larger products: faster than separate calls, clearly so for small text towers on a CPU).
        """
        if not self.lss_weight:
            return super().prompt_losses(image_feats, targets)
        unique, inverse = targets.unique(return_inverse=True)
        count, share = self._lss_share(all_gather_cat(targets))
        feats = self._encode_masked(torch.cat([unique, share, share]), unique.numel())
        losses = self.supcon_prompt_losses(image_feats, feats[:unique.numel()][inverse], targets)
        losses["loss_lss"] = self.lss_weight * self._lss_from_features(feats[unique.numel():], count)
        return losses

    def language_ss_loss(self, labels: torch.Tensor) -> torch.Tensor:
        """``L_lss`` (Eq. 7) for the identities in ``labels`` (the global minibatch; duplicates counted once)."""
        count, share = self._lss_share(labels)
        return self._lss_from_features(self._encode_masked(torch.cat([share, share]), 0), count)

    @staticmethod
    def _lss_share(labels: torch.Tensor) -> Tuple[int, torch.Tensor]:
        """``(V, this rank's identities)``: the ``V`` distinct identities of ``labels`` cut into equal shares, one per
        rank (the last padded with repeats, which are dropped after the gather)."""
        ids = labels.unique()
        world = world_size()
        size = -(-ids.numel() // world)
        padded = torch.cat([ids, ids[:1].expand(size * world - ids.numel())])
        return ids.numel(), padded[comm.get_rank() * size:(comm.get_rank() + 1) * size]

    def _encode_masked(self, labels: torch.Tensor, first_masked: int) -> torch.Tensor:
        """``[N, E]`` text features of the prompts of ``labels``, the rows from ``first_masked`` on randomly masked.

        Token masking draws few distinct patterns (6 for 2 of 4 tokens), so the two copies of a prompt are often
        identical: every distinct (identity, kept rows) sequence is encoded once and its feature reused, which is
        exact (the gradient of a shared row is the sum over its uses), as CLIP-ReID's once-per-identity encoding.
        """
        learner = self.prompt_learner
        rows = learner.ctx_rows
        length = learner.context_length if not self.truncate_at_eot else learner.eot_index + 1
        if self.lss_mask != "token":
            prompts, eot = learner(labels, full_context=not self.truncate_at_eot)
            masked = mask_prompts(prompts[first_masked:], self.lss_mask, self.lss_mask_rate, rows)
            prompts = torch.cat([prompts[:first_masked], masked]) if first_masked else masked
            return self.text_encoder.encode_embeddings(prompts, eot, truncate=self.truncate_at_eot,
                                                       max_eot=learner.eot_index)
        keep = torch.ones(labels.numel(), length, 1, device=labels.device)
        keep[first_masked:] = token_mask(labels.numel() - first_masked, length, rows, self.lss_mask_rate,
                                         labels.device)
        distinct, inverse = torch.cat([labels.unsqueeze(1), keep[:, rows, 0].long()], dim=1).unique(
            dim=0, return_inverse=True)
        prompts, eot = learner(distinct[:, 0], full_context=not self.truncate_at_eot)
        keep = torch.ones(distinct.shape[0], length, 1, device=labels.device)
        keep[:, rows, 0] = distinct[:, 1:].float()
        feats = self.text_encoder.encode_embeddings(prompts * keep.to(prompts.dtype), eot,
                                                    truncate=self.truncate_at_eot, max_eot=learner.eot_index)
        return feats[inverse]

    def _lss_from_features(self, local: torch.Tensor, count: int) -> torch.Tensor:
        """NT-Xent over the ``2V`` masked-prompt features (this rank's ``[2 share, E]`` block ``[copy a; copy b]``)."""
        view_a, view_b = _global_views(local.float(), count)
        z = self.text_mlp(torch.cat([view_a, view_b]))
        return nt_xent_loss(z[:count], z[count:], temperature=self.lss_temperature)

    def vision_ss_loss(self, batched_inputs: Dict) -> torch.Tensor:
        """``L_vss`` (Eq. 10) over the two extra views of every image of the global batch."""
        views = batched_inputs.get("views")
        if views is None or views.dim() != 5 or views.shape[1] != 2:
            shape = None if views is None else list(views.shape)
            raise ValueError(f"SVLL-ReID's image stage needs two extra views of every image, batch key 'views' "
                             f"[B, 2, 3, H, W] (got {shape}): train with INPUT.VIEWS.NUM 2")
        batch = views.shape[0]
        # One encoder pass per view, each the size of the main batch (on a CPU one pass of 2B images costs 2.3x one
        # of B: cache effects), rows [view a; view b].
        feats = torch.cat([self.backbone(self.preprocess_image(views[:, k]), use_sie=False).final for k in (0, 1)])
        view_a, view_b = _global_views(feats.float(), batch * world_size())
        z = self.image_mlp(torch.cat([view_a, view_b]))
        labels = None
        if self.vss_positives == "identity":
            labels = all_gather_cat(batched_inputs["targets"].to(self.device, non_blocking=True))
        return nt_xent_loss(z[:view_a.shape[0]], z[view_a.shape[0]:], labels, self.vss_temperature)
