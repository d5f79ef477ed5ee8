"""PromptSG's inversion network f_theta: a global image feature -> one pseudo-word token s* (paper §4.1, §5.1)."""

from __future__ import annotations

from typing import Dict

import torch
import torch.nn as nn
from fastreid.config import configurable

from ...config.validate import ConfigValueError
from .batch_norm import GlobalBatchNorm1d

__all__ = ["InversionNet"]


class InversionNet(nn.Module):
    """``s* = f_theta(v)``: an MLP from the joint image-text space into the text tower's token-embedding space.

    PromptSG §5.1: "a three-layered MLP of 512-dimensional hidden state. A Batch Normalization (BN) layer is placed
    after the last state of the network" [paper]. Layout here, for ``num_layers = 3``::

        Linear(in, hidden) - ReLU - Linear(hidden, hidden) - ReLU - Linear(hidden, out) - BN(out)

    ReLU and no dropout are [unverified] (the paper names neither). The BN (:class:`GlobalBatchNorm1d`: global-batch
    statistics under DDP) keeps s* at a fixed scale per dimension; its affine parameters are trained. In eval mode
    it uses the running statistics, so s* of an image does not depend on the rest of its batch.

    Widths: ``in_dim`` is the global image feature (ViT-B/16 ``f_proj`` 512, RN50 attention-pool output 1024),
    ``out_dim`` the text tower's token width (512 for both CLIP models). CLIP-SCGI's ``f_Mg`` / ``f_Ml`` are the same
    "three-layer fully-connected networks" and can reuse this class.

    Args:
        in_dim: input feature width.
        out_dim: token-embedding width.
        hidden_dim: width of the hidden layers (paper: 512).
        num_layers: number of linear layers (paper: 3); 1 = a single linear map followed by the BN.
        final_bn: the BN after the last layer (paper: yes).
    """

    @configurable
    def __init__(self, *, in_dim: int, out_dim: int, hidden_dim: int = 512, num_layers: int = 3,
                 final_bn: bool = True):
        super().__init__()
        for key, value, low in (("HIDDEN_DIM", hidden_dim, 1), ("NUM_LAYERS", num_layers, 1),
                                ("in_dim", in_dim, 1), ("out_dim", out_dim, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                name = f"MODEL.PROMPTSG.INVERSION.{key}" if key.isupper() else key
                raise ConfigValueError(name, value, f"an integer >= {low}")
        widths = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        layers = []
        for i in range(num_layers):
            layers.append(nn.Linear(widths[i], widths[i + 1]))
            if i < num_layers - 1:
                layers.append(nn.ReLU(inplace=True))
        self.mlp = nn.Sequential(*layers)
        self.bn = GlobalBatchNorm1d(out_dim) if final_bn else nn.Identity()
        self.in_dim, self.out_dim = in_dim, out_dim

    @classmethod
    def from_config(cls, cfg, in_dim: int, out_dim: int) -> Dict:
        inv = cfg.MODEL.PROMPTSG.INVERSION
        return {"in_dim": in_dim, "out_dim": out_dim, "hidden_dim": inv.HIDDEN_DIM, "num_layers": inv.NUM_LAYERS,
                "final_bn": inv.FINAL_BN}

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, in_dim]`` global image features -> ``[B, out_dim]`` pseudo-word token embeddings."""
        return self.bn(self.mlp(features))
