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

__all__ = ["PILToTensor255", "NormalNoiseErasing", "build_clip_transforms", "InstanceNormImage",
           "build_fgdi_transforms", "PIPELINES"]

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
    if inp.get("PIPELINE", "clip_reid") != "clip_reid":
        return build_fgdi_transforms(cfg, is_train)
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


# ---------------------------------------------------------------------------------------------------- CLIP-FGDI
# INPUT.PIPELINE: "clip_reid" (above) or "fgdi" (CLIP-FGDI's reference pipeline, notes §4.3).
PIPELINES = ("clip_reid", "fgdi")


class InstanceNormImage:
    """Per-image, per-channel normalisation of a ``[3, H, W]`` tensor: ``(x - mean_c) / sqrt(var_c + eps)`` over the
    pixels of each channel (``InstanceNorm2d`` without affine, biased variance), computed on the [0, 1] scale.

    CLIP-FGDI's normalisation [ref-code]; the result has zero mean and unit variance per channel, so the model's
    ``MODEL.PIXEL_MEAN/STD`` must be 0 / 1 (the FGDI configs set them).
    """

    def __init__(self, eps: float = 1e-5):
        self.eps = eps

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        x = image.float() / 255.0
        mean = x.mean(dim=(1, 2), keepdim=True)
        var = x.var(dim=(1, 2), unbiased=False, keepdim=True)
        return (x - mean) / torch.sqrt(var + self.eps)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(eps={self.eps})"


def build_fgdi_transforms(cfg, is_train: bool = True) -> T.Compose:
    """CLIP-FGDI's pipelines (``INPUT.PIPELINE fgdi``; keys ``INPUT.FGDI.*``, values notes §4.3 [ref-code]).

    Train: resize ``SIZE_TRAIN`` (bicubic) -> grayscale (p 0.1) -> pad 10 + random crop -> horizontal flip (p 0.4)
    -> ColorJitter(0.15, 0.1, 0.05, 0.05) (p 0.1) -> AugMix (p 0.6; severity 1, width 3, depth 1, alpha 0.1) ->
    tensor -> :class:`InstanceNormImage`; no erasing. Test: resize ``SIZE_TEST`` -> tensor -> instance norm.
    """
    inp = cfg.INPUT
    if inp.PIPELINE not in PIPELINES:
        raise ValueError(f"INPUT.PIPELINE must be one of {PIPELINES}, got {inp.PIPELINE!r}")
    f = inp.FGDI
    if not is_train:
        return T.Compose([T.Resize(tuple(inp.SIZE_TEST), interpolation=_interpolation(inp.INTERPOLATION_TEST)),
                          PILToTensor255(), InstanceNormImage()])
    size = tuple(inp.SIZE_TRAIN)
    steps = [T.Resize(size, interpolation=_interpolation(inp.INTERPOLATION_TRAIN)),
             T.RandomGrayscale(p=f.GRAY_PROB),
             T.Pad(f.PADDING), T.RandomCrop(size),
             T.RandomHorizontalFlip(p=f.FLIP_PROB),
             T.RandomApply([T.ColorJitter(*f.CJ)], p=f.CJ_PROB),
             T.RandomApply([T.AugMix(severity=f.AUGMIX.SEVERITY, mixture_width=f.AUGMIX.WIDTH,
                                     chain_depth=f.AUGMIX.DEPTH, alpha=f.AUGMIX.ALPHA)], p=f.AUGMIX.PROB),
             PILToTensor255(), InstanceNormImage()]
    return T.Compose(steps)
