"""Supervised image-text contrastive losses (CLIP-ReID paper Eq. 1-5; PromptSG Eq. 4-6 with cosine similarity)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["supcon_loss", "i2t_loss", "t2i_loss"]


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
