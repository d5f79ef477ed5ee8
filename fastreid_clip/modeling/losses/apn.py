"""CLIP-FGDI's apn loss family (Zhao, Qi, Geng, TIFS 2025, arXiv 2501.16065; paper Eq. 8, 10-13, Tab. VIII).

Anchor ``a`` = the image feature (``f_proj``), positive ``p`` = the text feature of the sample's identity prompt
without a domain token ("domain-invariant"), negative ``n`` = the prompt of the same identity with its source's
domain token ("domain-relevant"). The paper's stated intent: pull ``a`` towards ``p`` and push it away from ``n``.

**Direction problem** (../shared/notes/methods.md §4.2). Eq. 8 reads ``max(0, Sim(a, p) - Sim(a, n) + m)``: with
``Sim`` a *distance* (Euclidean, Eq. 10) minimising it does what the paper says; with ``Sim`` the cosine
*similarity* (Eq. 11) it lowers ``cos(a, p)`` and raises ``cos(a, n)``, the opposite. The reference code's live CS
variant, ``mean softplus(cos(a, p) - cos(a, n))``, has the same sign, and it produced the released numbers (with
``(1 - beta) L_i2tce`` still pulling ``a`` towards its identity prompt). Every form is available
(:data:`APN_MODES`); the one matching the intent for cosine is ``intent_cs``.

All functions compute in float32, take ``[B, D]`` tensors and return a scalar (batch mean).
"""

from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F

__all__ = ["APN_MODES", "apn_similarity", "apn_triplet_loss", "apn_contrastive_loss", "apnce_loss", "apn_loss"]

# MODEL.FGDI.APN.MODE -> what it computes. Triplet modes are (similarity, form, sign) of apn_triplet_loss.
APN_MODES: Dict[str, Optional[dict]] = {
    # Reference code's live CS variant (released log, P1 82.3 mAP at beta 0.1): mean softplus(cos_p - cos_n).
    "code_cs_softplus": {"similarity": "cosine", "form": "softplus", "sign": "as_printed"},
    # Eq. 8 as printed with Sim = cosine similarity (Eq. 11): mean max(0, cos_p - cos_n + m).
    "paper_eq8_cs_hinge": {"similarity": "cosine", "form": "hinge", "sign": "as_printed"},
    # Cosine with the sign that matches the stated intent: mean max(0, cos_n - cos_p + m).
    "intent_cs": {"similarity": "cosine", "form": "hinge", "sign": "flipped"},
    # Eq. 8 with Sim = Euclidean distance (Eq. 10), Tab. VIII "ED-based" (best: 82.7 mAP at beta 0.3).
    "ed_hinge": {"similarity": "euclidean", "form": "hinge", "sign": "as_printed"},
    # Eq. 12, Tab. VIII "Con-based": softmax of dot products over [positives of the batch; all domain prompts].
    "contrastive": None,
    # Eq. 13, Tab. VIII "L_apnCE": label-smoothed CE over [all ID prompts; all domain prompts]; replaces
    # (1 - beta) L_i2tce + beta L_apn.
    "apnce": None,
}
SIMILARITIES = ("cosine", "euclidean")
FORMS = ("hinge", "softplus")
SIGNS = ("as_printed", "flipped")


def _check_pair(name: str, x: torch.Tensor, y: torch.Tensor) -> None:
    if x.dim() != 2 or x.shape != y.shape:
        raise ValueError(f"{name}: expected two [B, D] tensors of one shape, got {list(x.shape)} and {list(y.shape)}")


def apn_similarity(x: torch.Tensor, y: torch.Tensor, similarity: str = "cosine") -> torch.Tensor:
    """Row-wise ``Sim(x_i, y_i)``: ``"cosine"`` = Eq. 11; ``"euclidean"`` = Eq. 10, ``sqrt(max(|x - y|², 1e-12))``
    (the clamp keeps the gradient finite at ``x = y``). ``[B, D], [B, D] -> [B]`` (float32)."""
    _check_pair("apn_similarity", x, y)
    x, y = x.float(), y.float()
    if similarity == "cosine":
        return F.cosine_similarity(x, y, dim=1, eps=1e-8)
    if similarity == "euclidean":
        return (x - y).pow(2).sum(dim=1).clamp(min=1e-12).sqrt()
    raise ValueError(f"apn similarity must be one of {SIMILARITIES}, got {similarity!r}")


def apn_triplet_loss(anchors: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor,
                     similarity: str = "cosine", form: str = "softplus", sign: str = "as_printed",
                     margin: float = 0.3) -> torch.Tensor:
    """Triplet apn loss (CLIP-FGDI Eq. 8 with Eq. 10 or 11), batch mean.

    With ``s_p = Sim(a, p)``, ``s_n = Sim(a, n)`` and ``x = s_p - s_n`` (``sign="as_printed"``, Eq. 8) or
    ``x = s_n - s_p`` (``"flipped"``): ``form="hinge"`` gives ``max(0, x + margin)``, ``"softplus"``
    ``log(1 + exp(x))`` (the reference code's form, no margin).

    Direction of a gradient step on the anchor (tested):

    * cosine, as printed (Eq. 8 + Eq. 11, and the reference's softplus form): ``cos(a, p) - cos(a, n)`` decreases,
      i.e. the image moves *away from* its domain-invariant prompt and *towards* the domain-relevant one: the
      opposite of the paper's stated intent;
    * cosine, flipped: ``cos(a, p) - cos(a, n)`` increases (towards ``p``, away from ``n``: the intent);
    * euclidean, as printed (Eq. 8 + Eq. 10): ``|a - p| - |a - n|`` decreases (towards ``p``, away from ``n``: the
      intent); flipped: the opposite.

    Args:
        anchors, positives, negatives: ``[B, D]`` image features, domain-invariant and domain-relevant prompt
            features (one per sample).
        similarity: ``"cosine"`` (Eq. 11) or ``"euclidean"`` (Eq. 10).
        form: ``"hinge"`` (Eq. 8) or ``"softplus"`` (reference code).
        sign: ``"as_printed"`` (Eq. 8) or ``"flipped"``.
        margin: ``m`` of the hinge (0.3, paper); unused by the softplus form.

    Returns:
        Scalar float32 loss.
    """
    _check_pair("apn_triplet_loss", anchors, positives)
    _check_pair("apn_triplet_loss", anchors, negatives)
    if form not in FORMS:
        raise ValueError(f"apn form must be one of {FORMS}, got {form!r}")
    if sign not in SIGNS:
        raise ValueError(f"apn sign must be one of {SIGNS}, got {sign!r}")
    s_p = apn_similarity(anchors, positives, similarity)
    s_n = apn_similarity(anchors, negatives, similarity)
    x = s_p - s_n if sign == "as_printed" else s_n - s_p
    return F.relu(x + margin).mean() if form == "hinge" else F.softplus(x).mean()


def apn_contrastive_loss(anchors: torch.Tensor, positives: torch.Tensor, negative_bank: torch.Tensor) -> torch.Tensor:
    """Contrastive apn loss (CLIP-FGDI Eq. 12, Tab. VIII "Con-based").

    ``F^pn = [positives (B rows); negative_bank (M rows)]`` and, with raw dot products ``s``,
    ``L = -(1/B) sum_i log( exp s(a_i, F^pn_i) / sum_k exp s(a_i, F^pn_k) )``: sample ``i``'s own positive is the
    target; the other samples' positives and every domain-relevant prompt are in the denominator. A gradient step
    raises ``a_i . p_i`` relative to ``a_i . n`` (towards ``p``, away from the domain prompts: the intent).

    Args:
        anchors: ``[B, D]`` image features.
        positives: ``[B, D]`` domain-invariant prompt features of the samples' identities.
        negative_bank: ``[M, D]`` domain-relevant prompt features of every identity (``F^{n*}``).

    Returns:
        Scalar float32 loss.
    """
    _check_pair("apn_contrastive_loss", anchors, positives)
    if negative_bank.dim() != 2 or negative_bank.shape[1] != anchors.shape[1]:
        raise ValueError(f"apn_contrastive_loss: negative_bank must be [M, {anchors.shape[1]}], got "
                         f"{list(negative_bank.shape)}")
    logits = anchors.float() @ torch.cat([positives.float(), negative_bank.float()]).t()
    target = torch.arange(anchors.shape[0], device=anchors.device)
    return F.cross_entropy(logits, target)


def apnce_loss(anchors: torch.Tensor, targets: torch.Tensor, positive_bank: torch.Tensor,
               negative_bank: torch.Tensor, epsilon: float = 0.1) -> torch.Tensor:
    """``L_apnCE`` (CLIP-FGDI Eq. 13, Tab. VIII last row): i2tce over the ``2M`` prompts ``[ID prompts; domain
    prompts]``.

    With ``z_ij = a_i . F^{pn*}_j`` (raw dot products, ``j < 2M``) and CLIP-ReID's label smoothing over the ``N = M``
    identities only, ``q_k = (1 - eps) [k = y_i] + eps / N`` for ``k < M`` and 0 for the domain prompts:
    ``L = mean_i -sum_k q_k log softmax(z_i)_k``. A gradient step raises ``a_i . T_{y_i}`` relative to every domain
    prompt (towards the identity prompt, away from the domain-relevant ones).

    Args:
        anchors: ``[B, D]`` image features.
        targets: ``[B]`` identity labels in ``[0, M)``.
        positive_bank: ``[M, D]`` ID prompt features of every identity (CLIP-ReID's text bank).
        negative_bank: ``[M, D]`` domain prompt features of every identity.
        epsilon: label smoothing (0.1).

    Returns:
        Scalar float32 loss.
    """
    if positive_bank.shape != negative_bank.shape or positive_bank.dim() != 2:
        raise ValueError(f"apnce_loss: the banks must both be [M, D], got {list(positive_bank.shape)} and "
                         f"{list(negative_bank.shape)}")
    if not 0 <= epsilon < 1:
        raise ValueError(f"apnce_loss: epsilon must be in [0, 1), got {epsilon}")
    num_ids = positive_bank.shape[0]
    logits = anchors.float() @ torch.cat([positive_bank.float(), negative_bank.float()]).t()
    log_prob = F.log_softmax(logits, dim=1)
    onehot = F.one_hot(targets.long(), num_ids).float()
    smoothed = (1 - epsilon) * onehot + epsilon / num_ids
    return -(smoothed * log_prob[:, :num_ids]).sum(dim=1).mean()


def apn_loss(mode: str, anchors: torch.Tensor, targets: torch.Tensor, positives: torch.Tensor,
             negatives: torch.Tensor, positive_bank: Optional[torch.Tensor] = None,
             negative_bank: Optional[torch.Tensor] = None, margin: float = 0.3,
             epsilon: float = 0.1) -> torch.Tensor:
    """The apn loss named by ``mode`` (``MODEL.FGDI.APN.MODE``, one of :data:`APN_MODES`).

    Triplet modes use ``positives`` / ``negatives`` (``[B, D]``); ``contrastive`` uses ``positives`` and
    ``negative_bank``; ``apnce`` uses ``targets`` and both banks (``[M, D]``).
    """
    if mode not in APN_MODES:
        raise ValueError(f"MODEL.FGDI.APN.MODE must be one of {list(APN_MODES)}, got {mode!r}")
    triplet = APN_MODES[mode]
    if triplet is not None:
        return apn_triplet_loss(anchors, positives, negatives, margin=margin, **triplet)
    if negative_bank is None:
        raise ValueError(f"apn mode {mode!r} needs the bank of every identity's domain-prompt feature")
    if mode == "contrastive":
        return apn_contrastive_loss(anchors, positives, negative_bank)
    if positive_bank is None:
        raise ValueError("apn mode 'apnce' needs the bank of every identity's ID-prompt feature")
    return apnce_loss(anchors, targets, positive_bank, negative_bank, epsilon)
