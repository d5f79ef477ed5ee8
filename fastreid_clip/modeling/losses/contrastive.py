"""Contrastive losses: supervised image-text (CLIP-ReID paper Eq. 1-5; PromptSG Eq. 4-6 with cosine similarity) and
NT-Xent over two views (SVLL-ReID Eq. 7 and 10)."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

__all__ = ["supcon_loss", "i2t_loss", "t2i_loss", "nt_xent_loss"]


def supcon_loss(anchors: torch.Tensor, contrasts: torch.Tensor, anchor_labels: torch.Tensor,
                contrast_labels: torch.Tensor, temperature: float = 1.0, normalize: bool = False) -> torch.Tensor:
    """Supervised contrastive loss of each anchor against a set of contrasts (CLIP-ReID Eq. 2-4).

    With ``s_ij = a_i . c_j / temperature`` (CLIP-ReID Eq. 1: a raw dot product, ``temperature = 1``; with
    ``normalize=True`` the cosine ``a_i . c_j / (|a_i| |c_j|)`` is used instead, as PromptSG's Eq. 1 defines it),

        ``log p_ij = s_ij - log sum_j' exp(s_ij')``  (the softmax over all contrasts, Eq. 2/3 denominators)

        ``L = -(1/B') sum_i (1/|P(i)|) sum_{j in P(i)} log p_ij``  (Eq. 4)

    where ``P(i) = {j : contrast_labels[j] == anchor_labels[i]}``. Duplicated contrasts of one identity (CLIP-ReID
    stage 1 feeds one text per sample) all stay in the denominator. The row maximum is subtracted (detached)
    before the log-sum-exp for numerical stability; it cancels exactly. The computation is done in float32 even
    for fp16/bf16 inputs.

    Anchors without any positive contrast are excluded from the mean (``B'`` counts the anchors with at least one
    positive). In CLIP-ReID every anchor has one by construction. If no anchor has a positive, the result is
    ``0 * sum(logits)``: zero, but still attached to the graph of both inputs.

    Args:
        anchors: ``[B, D]`` anchor features (images for i2t, texts for t2i).
        contrasts: ``[N, D]`` contrast features.
        anchor_labels: ``[B]`` identity labels of the anchors.
        contrast_labels: ``[N]`` identity labels of the contrasts.
        temperature: ``tau > 0`` dividing the similarities (CLIP-ReID: 1).
        normalize: L2-normalise both sides first (cosine similarity; PromptSG).

    Returns:
        Scalar float32 loss.
    """
    if anchors.dim() != 2 or contrasts.dim() != 2 or anchors.shape[1] != contrasts.shape[1]:
        raise ValueError(f"supcon_loss expects [B, D] anchors and [N, D] contrasts, got {list(anchors.shape)} "
                         f"and {list(contrasts.shape)}")
    anchor_labels = anchor_labels.reshape(-1)
    contrast_labels = contrast_labels.reshape(-1)
    if anchor_labels.numel() != anchors.shape[0] or contrast_labels.numel() != contrasts.shape[0]:
        raise ValueError(f"label counts ({anchor_labels.numel()}, {contrast_labels.numel()}) do not match the "
                         f"feature counts ({anchors.shape[0]}, {contrasts.shape[0]})")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")

    a = anchors.float()
    c = contrasts.float()
    if normalize:
        a = F.normalize(a, dim=1)
        c = F.normalize(c, dim=1)
    logits = a @ c.t()
    if temperature != 1.0:
        logits = logits / temperature
    shifted = logits - logits.max(dim=1, keepdim=True).values.detach()
    log_prob = shifted - torch.logsumexp(shifted, dim=1, keepdim=True)

    positive = (anchor_labels.to(contrast_labels.device).unsqueeze(1) == contrast_labels.unsqueeze(0)).float()
    num_pos = positive.sum(dim=1)
    has_pos = (num_pos > 0).float()
    mean_log_prob_pos = (positive * log_prob).sum(dim=1) / num_pos.clamp(min=1.0)
    # Mean over anchors with a positive, without a host sync; 0 (still attached to the graph) if there are none.
    return -(mean_log_prob_pos * has_pos).sum() / has_pos.sum().clamp(min=1.0)


def i2t_loss(image_feats: torch.Tensor, text_feats: torch.Tensor, labels: torch.Tensor,
             temperature: float = 1.0, normalize: bool = False) -> torch.Tensor:
    """Image-to-text loss of an in-batch pairing (CLIP-ReID Eq. 2 with the positives of Eq. 4).

    Image ``i`` and text ``i`` carry ``labels[i]``; each image is contrasted with all ``B`` texts of the batch
    and every same-identity text is a positive.

    Args:
        image_feats: ``[B, D]`` projected image features (anchors).
        text_feats: ``[B, D]`` text features, one per sample (contrasts).
        labels: ``[B]`` identity labels shared by both sides.
        temperature: see :func:`supcon_loss`.
        normalize: see :func:`supcon_loss`.

    Returns:
        Scalar float32 loss.
    """
    return supcon_loss(image_feats, text_feats, labels, labels, temperature=temperature, normalize=normalize)


def t2i_loss(text_feats: torch.Tensor, image_feats: torch.Tensor, labels: torch.Tensor,
             temperature: float = 1.0, normalize: bool = False) -> torch.Tensor:
    """Text-to-image loss of an in-batch pairing (CLIP-ReID Eq. 3/4).

    Text ``i`` (the prompt of ``labels[i]``) is contrasted with all ``B`` images; the positives ``P(y_i)`` are the
    images of the same identity. CLIP-ReID's stage-1 objective is ``i2t_loss + t2i_loss`` (Eq. 5).

    Args:
        text_feats: ``[B, D]`` text features, one per sample (anchors).
        image_feats: ``[B, D]`` projected image features (contrasts).
        labels: ``[B]`` identity labels shared by both sides.
        temperature: see :func:`supcon_loss`.
        normalize: see :func:`supcon_loss`.

    Returns:
        Scalar float32 loss.
    """
    return supcon_loss(text_feats, image_feats, labels, labels, temperature=temperature, normalize=normalize)


def nt_xent_loss(view_a: torch.Tensor, view_b: torch.Tensor, labels: Optional[torch.Tensor] = None,
                 temperature: float = 0.1) -> torch.Tensor:
    """NT-Xent (InfoNCE) over two views of N samples (SimCLR; SVLL-ReID Eq. 7 for prompts, Eq. 10 for images).

    The ``2N`` embeddings ``z = normalize([view_a; view_b])`` are compared by cosine similarity over a temperature,
    ``s_ik = z_i . z_k / temperature``; every anchor is excluded from its own denominator (the ``1[k != i]`` of
    Eq. 7/10):

        ``L = -(1/2N) sum_i (1/|P(i)|) sum_{p in P(i)} log( exp(s_ip) / sum_{k != i} exp(s_ik) )``

    Positives ``P(i)``: with ``labels=None`` the other view of the same sample (``i +- N``; the reference's
    ``1/2 [CE([ab | aa], diag) + CE([ba | bb], diag)]``); with ``labels``, every other view whose label equals
    ``i``'s (its own other view included; SupCon's "L_out" average over the positives). With all labels distinct
    both are the same loss. Computed in float32 for any input dtype.

    Args:
        view_a: ``[N, D]`` embeddings of the first view (row ``n`` is sample ``n``).
        view_b: ``[N, D]`` embeddings of the second view, in the same sample order.
        labels: ``[N]`` identity labels of the samples, or None for instance positives.
        temperature: ``tau > 0`` (SVLL-ReID reference: 0.1).

    Returns:
        Scalar float32 loss.
    """
    if view_a.dim() != 2 or view_a.shape != view_b.shape:
        raise ValueError(f"nt_xent_loss expects two [N, D] views of equal shape, got {list(view_a.shape)} and "
                         f"{list(view_b.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    n = view_a.shape[0]
    z = F.normalize(torch.cat([view_a, view_b]).float(), dim=1)
    self_pair = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = (z @ z.t() / temperature).masked_fill(self_pair, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    if labels is None:
        rows = torch.arange(2 * n, device=z.device)
        return -log_prob[rows, (rows + n) % (2 * n)].mean()
    labels = labels.reshape(-1).to(z.device)
    if labels.numel() != n:
        raise ValueError(f"{labels.numel()} labels for {n} samples")
    both = torch.cat([labels, labels])
    positive = (both.unsqueeze(0) == both.unsqueeze(1)) & ~self_pair
    mean_log_prob_pos = log_prob.masked_fill(~positive, 0.0).sum(dim=1) / positive.sum(dim=1)
    return -mean_log_prob_pos.mean()
