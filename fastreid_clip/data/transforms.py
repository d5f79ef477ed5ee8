"""Image transforms of the CLIP ReID papers on FastReID's 0-255 tensor scale.

The model normalises with ``MODEL.PIXEL_MEAN/STD`` (0-255 units), so transforms produce float tensors in
[0, 255]. Random erasing is written to match CLIP-ReID/SVLL: timm-style rectangles filled with N(0, 1) noise
per pixel and channel *after* normalisation, i.e. ``mean + std * N(0, 1)`` in 0-255 units.
"""

from __future__ import annotations

import math
import random
from typing import Sequence, Tuple

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image

__all__ = ["PILToTensor255", "NormalNoiseErasing", "build_clip_transforms"]

_INTERPOLATION = {
    "bicubic": T.InterpolationMode.BICUBIC,
    "bilinear": T.InterpolationMode.BILINEAR,
    "nearest": T.InterpolationMode.NEAREST,
}


class PILToTensor255:
    """PIL RGB image -> ``[3, H, W]`` float32 tensor in [0, 255] (FastReID's scale)."""

    def __call__(self, image: Image.Image) -> torch.Tensor:
        array = np.asarray(image.convert("RGB"), dtype=np.uint8)
        return torch.from_numpy(array.copy()).permute(2, 0, 1).float()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class NormalNoiseErasing:
    """Random erasing with noise fill (timm ``RandomErasing(mode='pixel')`` semantics, one rectangle).

    With probability ``p``, up to ``attempts`` tries draw an area fraction ``U(area[0], area[1])`` and an aspect
    ratio log-uniform in ``[aspect, 1/aspect]``; the first rectangle that fits is filled with
    ``mean + std * N(0, 1)`` per pixel and channel (N(0, 1) after normalisation).

    Args:
        p: probability of erasing.
        area: ``(min, max)`` erased area fraction.
        aspect: minimum aspect ratio.
        mean, std: per-channel normalisation on the tensor's scale.
        attempts: placement attempts.
    """

    def __init__(self, p: float, area: Tuple[float, float], aspect: float, mean: Sequence[float],
                 std: Sequence[float], attempts: int = 10):
        if not 0 < aspect <= 1:
            raise ValueError(f"INPUT.REA.ASPECT must be in (0, 1], got {aspect}")
        self.p = p
        self.area = tuple(area)
        self.log_aspect = (math.log(aspect), math.log(1.0 / aspect))
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.attempts = attempts

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if random.random() >= self.p:
            return image
        channels, height, width = image.shape
        for _ in range(self.attempts):
            target = random.uniform(*self.area) * height * width
            ratio = math.exp(random.uniform(*self.log_aspect))
            h = int(round(math.sqrt(target * ratio)))
            w = int(round(math.sqrt(target / ratio)))
            if h < height and w < width:
                top = random.randint(0, height - h)
                left = random.randint(0, width - w)
                image = image.clone()
                noise = torch.randn(channels, h, w)
                image[:, top:top + h, left:left + w] = self.mean + self.std * noise
                return image
        return image

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p}, area={self.area})"


def build_clip_transforms(cfg, is_train: bool = True) -> T.Compose:
    """CLIP-ReID's train/test pipelines from FastReID's ``INPUT.*`` keys plus ours.

    Train: resize (``INPUT.INTERPOLATION_TRAIN``, bicubic) -> flip -> pad + random crop -> [0, 255] tensor ->
    erasing (``INPUT.REA.MODE`` normal: noise fill; constant: FastReID's ``INPUT.REA.VALUE`` fill).
    Test: resize (``INPUT.INTERPOLATION_TEST``, bilinear) -> tensor.
    """
    inp = cfg.INPUT
    if not is_train:
        return T.Compose([T.Resize(tuple(inp.SIZE_TEST), interpolation=_interpolation(inp.INTERPOLATION_TEST)),
                          PILToTensor255()])
    size = tuple(inp.SIZE_TRAIN)
    steps = [T.Resize(size, interpolation=_interpolation(inp.INTERPOLATION_TRAIN))]
    if inp.FLIP.ENABLED:
        steps.append(T.RandomHorizontalFlip(p=inp.FLIP.PROB))
    if inp.PADDING.ENABLED:
        steps += [T.Pad(inp.PADDING.SIZE, padding_mode=inp.PADDING.MODE), T.RandomCrop(size)]
    if inp.CJ.ENABLED:
        steps.append(T.RandomApply([T.ColorJitter(inp.CJ.BRIGHTNESS, inp.CJ.CONTRAST, inp.CJ.SATURATION, inp.CJ.HUE)],
                                   p=inp.CJ.PROB))
    unsupported = [k for k in ("AUTOAUG", "AUGMIX", "AFFINE", "RPT", "CROP") if inp[k].ENABLED]
    if unsupported:
        raise ValueError(f"INPUT.{unsupported[0]} is not supported by the CLIP pipelines (fastreid_clip.data.transforms)")
    steps.append(PILToTensor255())
    if inp.REA.ENABLED:
        if inp.REA.MODE == "normal":
            steps.append(NormalNoiseErasing(inp.REA.PROB, inp.REA.AREA, inp.REA.ASPECT, cfg.MODEL.PIXEL_MEAN,
                                            cfg.MODEL.PIXEL_STD, inp.REA.ATTEMPTS))
        elif inp.REA.MODE == "constant":
            steps.append(T.RandomErasing(p=inp.REA.PROB, scale=tuple(inp.REA.AREA),
                                         ratio=(inp.REA.ASPECT, 1.0 / inp.REA.ASPECT), value=list(inp.REA.VALUE)))
        else:
            raise ValueError(f"INPUT.REA.MODE must be 'normal' or 'constant', got '{inp.REA.MODE}'")
    return T.Compose(steps)


def _interpolation(name: str) -> T.InterpolationMode:
    if name not in _INTERPOLATION:
        raise ValueError(f"interpolation '{name}' is not one of {sorted(_INTERPOLATION)}")
    return _INTERPOLATION[name]
