"""The open_clip model being pretrained, its text tower and the open_clip config written next to the weights.

The architecture is an open_clip ``CLIP`` created with ``pretrained=None`` from a registered config (this
package's ``model_configs/``: ``ViT-Tiny-16``, ``RN-Tiny``, ``ViT-Synth-16``, ``RN-Synth``; any other open_clip
CLIP name works too), at a square input size (``force_image_size``). Its ``logit_scale`` is learned, initialised
at ``log(1 / 0.07)`` and clamped to ``[0, log 100]`` after every step, as in CLIP and open_clip.
"""

from __future__ import annotations

import copy
import logging
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..modeling.backbones import CLIPTextEncoder, register_model_configs
from ..modeling.backbones.clip_model import _quiet_open_clip_random_init, is_vit

__all__ = ["PRETRAIN_ARCHS", "check_arch", "create_pretrain_model", "open_clip_config", "ClipPair",
           "LOGIT_SCALE_MAX"]

logger = logging.getLogger(__name__)

#: Architectures shipped for synthetic pretraining (others registered with open_clip work as well).
PRETRAIN_ARCHS = ("ViT-Tiny-16", "RN-Tiny", "ViT-Synth-16", "RN-Synth")
LOGIT_SCALE_MAX = 4.605170185988092  # log(100), CLIP's clamp


def check_arch(arch: str, image_size: int) -> dict:
    """The open_clip config of ``arch`` (a CLIP with CLIP's own text transformer), after checking that
    ``image_size`` suits its vision tower. Raises ValueError with the known names otherwise."""
    register_model_configs()
    import open_clip

    config = open_clip.get_model_config(arch)
    if config is None:
        raise ValueError(f"unknown open_clip architecture '{arch}'; synthetic pretraining ships "
                         f"{', '.join(PRETRAIN_ARCHS)} (fastreid_clip/modeling/backbones/model_configs/)")
    if "hf_model_name" in config.get("text_cfg", {}) or "timm_model_name" in config.get("vision_cfg", {}):
        raise ValueError(f"'{arch}' uses a Hugging Face / timm tower; only CLIP's own ViT / ModifiedResNet and "
                         f"text transformer are supported")
    vision = config["vision_cfg"]
    if isinstance(vision.get("layers"), (list, tuple)):
        if image_size % 32:
            raise ValueError(f"--image-size {image_size}: a ModifiedResNet needs a multiple of 32 (its total stride)")
    elif image_size % vision["patch_size"]:
        raise ValueError(f"--image-size {image_size}: '{arch}' needs a multiple of its patch size {vision['patch_size']}")
    return config


def open_clip_config(arch: str, image_size: int) -> dict:
    """The open_clip model config of ``arch`` with ``vision_cfg.image_size = image_size`` (the JSON written next
    to the weights: ``open_clip.add_model_config`` on it recreates the pretraining model)."""
    config = copy.deepcopy(check_arch(arch, image_size))
    config["vision_cfg"]["image_size"] = image_size
    return config


def create_pretrain_model(arch: str, image_size: int, seed: int, quick_gelu: bool = True) -> nn.Module:
    """A randomly initialised open_clip ``CLIP`` at ``image_size x image_size``; the initial weights are a function
    of ``seed`` (the global torch generator is seeded, then restored)."""
    check_arch(arch, image_size)
    import open_clip

    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        with _quiet_open_clip_random_init():
            model = open_clip.create_model(arch, pretrained=None, force_quick_gelu=quick_gelu,
                                           force_image_size=image_size)
    finally:
        torch.random.set_rng_state(state)
    return model


class ClipPair(nn.Module):
    """Normalised image and text embeddings of an open_clip ``CLIP`` and its logit scale ``exp(logit_scale)``.

    The text tower runs only up to the longest caption's EOT token (:class:`CLIPTextEncoder`; exact, the mask is
    causal), about 55 of 77 positions for the synthetic captions. ``model.state_dict()`` keeps open_clip's
    layout; nothing is copied.
    """

    def __init__(self, model: nn.Module, arch: str):
        super().__init__()
        self.model = model
        self.text = CLIPTextEncoder.from_open_clip(model, arch)
        self.is_vit = is_vit(model.visual)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.encode_image(images), dim=-1)

    def encode_text(self, tokens: torch.Tensor, max_eot: Optional[int] = None) -> torch.Tensor:
        eot = tokens.argmax(dim=-1)
        feats = self.text.encode_embeddings(self.text.embed_tokens(tokens), eot, max_eot=max_eot)
        return F.normalize(feats, dim=-1)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor, max_eot: Optional[int] = None):
        return self.encode_image(images), self.encode_text(tokens, max_eot), self.model.logit_scale.exp()

    @torch.no_grad()
    def clamp_logit_scale(self) -> None:
        self.model.logit_scale.clamp_(0, LOGIT_SCALE_MAX)
