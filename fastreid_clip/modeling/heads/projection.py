"""MLP projection head for self-supervised contrastive losses (SimCLR-style, as SVLL-ReID's image / text MLPs)."""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["ProjectionHead", "HEAD_INITS"]

HEAD_INITS = ("default", "kaiming")


class ProjectionHead(nn.Module):
    """``(Linear, BatchNorm1d, ReLU) x (num_layers - 1)`` then ``Linear``.

    SVLL-ReID [ref-code ``model/make_model_svllreid.py``; the paper does not describe its heads]: 3 layers,
    ``image_mlp`` 768 -> 4096 -> 4096 -> 256 and ``text_mlp`` 512 -> 4096 -> 4096 -> 256.

    Args:
        in_dim: input feature dimension.
        hidden_dim: width of the hidden layers.
        out_dim: output dimension.
        num_layers: linear layers (>= 1; 1 = a single linear map).
        init: ``"default"`` (PyTorch's initialisation, the reference ``text_mlp``) or ``"kaiming"`` (the reference
            ``image_mlp``: linear weights Kaiming-normal (fan_in, ReLU gain), BN weights and biases U(0, 1); linear
            biases keep PyTorch's initialisation).
    """

    def __init__(self, in_dim: int, hidden_dim: int = 4096, out_dim: int = 256, num_layers: int = 3,
                 init: str = "default"):
        super().__init__()
        if init not in HEAD_INITS:
            raise ValueError(f"projection head init must be one of {HEAD_INITS}, got {init!r}")
        if num_layers < 1:
            raise ValueError(f"a projection head needs at least one layer, got {num_layers}")
        layers, dim = [], in_dim
        for _ in range(num_layers - 1):
            layers += [nn.Linear(dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True)]
            dim = hidden_dim
        layers.append(nn.Linear(dim, out_dim))
        self.mlp = nn.Sequential(*layers)
        if init == "kaiming":
            for module in self.mlp:
                if isinstance(module, nn.Linear):
                    nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                elif isinstance(module, nn.BatchNorm1d):
                    nn.init.uniform_(module.weight)
                    nn.init.uniform_(module.bias)

    @property
    def out_dim(self) -> int:
        return self.mlp[-1].out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, in_dim] -> [N, out_dim]`` (unnormalised; the loss normalises)."""
        return self.mlp(x)
