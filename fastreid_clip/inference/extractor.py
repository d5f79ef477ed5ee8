"""``FeatureExtractor``: the retrieval feature of a trained model for any images, as ``--eval-only`` computes it.

The inference contract every meta-architecture already keeps for FastReID's evaluation is all the extractor uses:
in ``eval()`` mode, ``model({"images": [B, 3, H, W] float 0-255, "camids": [B] long (optional)})`` returns the
``[B, D]`` retrieval feature. Images go through the config's test transform (``INPUT.SIZE_TEST``,
``INPUT.INTERPOLATION_TEST``), and ``TEST.FLIP.ENABLED`` averages the features of the image and its mirror image
exactly as FastReID's ``inference_on_dataset`` does. A new meta-architecture that evaluates with ``--eval-only``
therefore works here unchanged (docs/inference.md, "The inference contract").
"""

from __future__ import annotations

import logging
import os
from typing import Any, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torchvision.transforms.functional as TF
from PIL import Image

from ..checkpoint.load import fill_shapes_from_checkpoint

__all__ = ["FeatureExtractor", "ImageInput", "build_inference_cfg", "find_run_checkpoint", "load_trained_model",
           "read_image_file"]

logger = logging.getLogger(__name__)

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray, torch.Tensor]
"""One image: a file path, a PIL image, an ``[H, W, 3]`` uint8 RGB array, or a ``[3, H, W]`` float tensor (0-255)."""



# ---------------------------------------------------------------------------------------------- building the model
def build_inference_cfg(config_file: str, weights: str, opts: Sequence[str] = (), device: Optional[str] = None):
    """``(frozen cfg, state dict)`` for inference: ``config_file`` + ``opts`` merged, ``weights`` read
    (``weights_only``), shapes filled from it. A missing or unreadable weight file raises an error naming it."""
    from ..checkpoint import read_training_checkpoint
    from ..config import get_cfg, merge_config_file

    if not weights:
        raise ValueError("no weights given: name a trained checkpoint (e.g. OUTPUT_DIR/model_final.pth)")
    cfg = merge_config_file(get_cfg(), config_file, list(opts))
    cfg.MODEL.WEIGHTS = str(weights)
    if device is not None:
        cfg.MODEL.DEVICE = str(device)
    state = read_training_checkpoint(str(weights))
    fill_shapes_from_checkpoint(cfg, state, str(weights))
    cfg.freeze()
    return cfg, state


def find_run_checkpoint(run_dir: str) -> str:
    """The final checkpoint of a training run's ``OUTPUT_DIR``: ``model_final.pth``, else the file
    ``last_checkpoint`` names. Raises ``FileNotFoundError`` naming the folder and what it holds."""
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"training run folder '{run_dir}' does not exist")
    final = os.path.join(run_dir, "model_final.pth")
    if os.path.isfile(final):
        return final
    tag = os.path.join(run_dir, "last_checkpoint")
    if os.path.isfile(tag):
        with open(tag) as f:
            named = os.path.join(run_dir, f.read().strip())
        if os.path.isfile(named):
            return named
    found = sorted(n for n in os.listdir(run_dir) if n.endswith(".pth"))
    raise FileNotFoundError(f"training run folder '{run_dir}' has no model_final.pth and no valid last_checkpoint "
                            f"(checkpoints there: {', '.join(found) or 'none'}); pass the weight file explicitly")


def load_trained_model(config_file: str, weights: str, opts: Sequence[str] = (),
                       device: Optional[str] = None) -> Tuple[nn.Module, Any]:
    """``(model in eval mode, frozen cfg)``: the model ``--eval-only`` evaluates, with ``weights`` loaded strictly."""
    from fastreid.modeling.meta_arch import build_model

    from ..checkpoint import load_model_weights

    cfg, state = build_inference_cfg(config_file, weights, opts, device)
    model = build_model(cfg)
    load_model_weights(model, str(weights), state=state)
    return model.eval(), cfg


# ---------------------------------------------------------------------------------------------- reading images
def read_image_file(path: Union[str, os.PathLike]) -> Image.Image:
    """An RGB PIL image read as FastReID's test loader reads it (EXIF orientation applied, grey -> RGB)."""
    from fastreid.data.data_utils import read_image

    return read_image(str(path)).convert("RGB")


def _as_pil(image: ImageInput) -> Optional[Image.Image]:
    if isinstance(image, (str, os.PathLike)):
        return read_image_file(image)
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=-1)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"a numpy image must be [H, W, 3] RGB (or [H, W] grey), got shape {image.shape}")
        if image.dtype != np.uint8:
            raise ValueError(f"a numpy image must be uint8 (0-255), got {image.dtype}")
        return Image.fromarray(image)
    return None


# ---------------------------------------------------------------------------------------------- the extractor
class FeatureExtractor:
    """Retrieval features of a trained model for image files, PIL images, numpy arrays or tensors.

    Build it from a config file plus weights (:meth:`from_config`), from a training run's output folder
    (:meth:`from_run_dir`: its ``config.yaml`` and final checkpoint), or from a model already in memory. The feature
    is the one ``tools/train_net.py --eval-only`` evaluates (same transform, same forward, same flip-test
    averaging), so features of the same images and weights agree up to float rounding.

    Args:
        model: a fastreid-clip meta-architecture (any registered one); put in eval mode.
        cfg: its config (``INPUT.SIZE_TEST``, ``INPUT.INTERPOLATION_TEST``, ``TEST.FLIP.ENABLED``,
            ``TEST.IMS_PER_BATCH``).
        device: where the model runs (default: where it is).
        batch_size: images per forward (default ``TEST.IMS_PER_BATCH``).
        amp: autocast (float16 on CUDA, bfloat16 on the CPU); features are returned in float32.
        flip_test: override ``TEST.FLIP.ENABLED``.
    """

    def __init__(self, model: nn.Module, cfg, *, device: Optional[Union[str, torch.device]] = None,
                 batch_size: Optional[int] = None, amp: bool = False, flip_test: Optional[bool] = None):
        from ..data.transforms import build_clip_transforms

        self.cfg = cfg
        self.model = model.eval()
        if device is not None:
            self.model.to(torch.device(device))
        self.device = next(iter(self.model.buffers()), next(self.model.parameters())).device
        self.batch_size = int(batch_size or cfg.TEST.IMS_PER_BATCH or 64)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        self.amp = bool(amp)
        self.flip_test = bool(cfg.TEST.FLIP.ENABLED if flip_test is None else flip_test)
        self.transform = build_clip_transforms(cfg, is_train=False)
        self.size = tuple(int(s) for s in cfg.INPUT.SIZE_TEST)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_config(cls, config_file: str, weights: str, opts: Sequence[str] = (), *,
                    device: Optional[str] = None, **kwargs) -> "FeatureExtractor":
        """From a config file (plus ``KEY VALUE`` overrides) and a trained checkpoint, read with ``weights_only``."""
        model, cfg = load_trained_model(config_file, weights, opts, device)
        return cls(model, cfg, **kwargs)

    @classmethod
    def from_run_dir(cls, run_dir: str, weights: Optional[str] = None, opts: Sequence[str] = (), *,
                     device: Optional[str] = None, **kwargs) -> "FeatureExtractor":
        """From a training run's ``OUTPUT_DIR``: its ``config.yaml`` and ``model_final.pth`` (or ``weights``)."""
        config = os.path.join(run_dir, "config.yaml")
        if not os.path.isfile(config):
            raise FileNotFoundError(f"training run folder '{run_dir}' has no config.yaml (is it a run's OUTPUT_DIR?)")
        return cls.from_config(config, weights or find_run_checkpoint(run_dir), opts, device=device, **kwargs)

    # ------------------------------------------------------------------ preprocessing
    def preprocess(self, image: ImageInput) -> torch.Tensor:
        """One image -> ``[3, H, W]`` float32 tensor on the 0-255 scale at ``INPUT.SIZE_TEST``.

        Files, PIL images and uint8 arrays get the test transform (PIL resize, as the evaluator). A float tensor
        ``[3, H, W]`` on the 0-255 scale is used as it is when already at the test size, else resized with the
        test interpolation (torchvision's tensor resize with antialias, close to but not bit-equal to PIL's).
        """
        pil = _as_pil(image)
        if pil is not None:
            return self.transform(pil)
        if not isinstance(image, torch.Tensor):
            raise TypeError(f"unsupported image type {type(image).__name__}: use a path, PIL image, numpy array or "
                            f"tensor")
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"an image tensor must be [3, H, W] on the 0-255 scale, got shape {list(image.shape)}")
        image = image.float()
        if tuple(image.shape[1:]) != self.size:
            from ..data.transforms import _interpolation

            image = TF.resize(image, list(self.size), interpolation=_interpolation(self.cfg.INPUT.INTERPOLATION_TEST),
                              antialias=True)
        return image

    # ------------------------------------------------------------------ forward
    @torch.no_grad()
    def forward_batch(self, images: torch.Tensor, camids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``[B, 3, H, W]`` preprocessed images (0-255) -> ``[B, D]`` float32 features on the model's device."""
        batch = {"images": images.to(self.device)}
        if camids is not None:
            batch["camids"] = torch.as_tensor(camids, dtype=torch.long).to(self.device)
        dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        with torch.autocast(self.device.type, dtype=dtype, enabled=self.amp):
            out = self.model(batch)
            if self.flip_test:  # as FastReID's inference_on_dataset: mean of the image's and its mirror's features
                batch["images"] = batch["images"].flip(dims=[3])
                out = (out + self.model(batch)) / 2
        if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != images.shape[0]:
            shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise RuntimeError(f"{type(self.model).__name__} in eval mode returned {shape}, not a [B, D] feature "
                               f"tensor (the inference contract, docs/inference.md)")
        return out.float()

    def iter_batches(self, images: Iterable[ImageInput], camids: Optional[Iterable[int]] = None
                     ) -> Iterator[torch.Tensor]:
        """Features of ``images`` in batches of ``batch_size``: yields ``[b, D]`` float32 CPU tensors in order."""
        cams = iter(camids) if camids is not None else None
        chunk: List[torch.Tensor] = []
        chunk_cams: List[int] = []
        for image in images:
            chunk.append(self.preprocess(image))
            if cams is not None:
                chunk_cams.append(int(next(cams)))
            if len(chunk) == self.batch_size:
                yield self._run(chunk, chunk_cams if cams is not None else None)
                chunk, chunk_cams = [], []
        if chunk:
            yield self._run(chunk, chunk_cams if cams is not None else None)

    def _run(self, chunk: List[torch.Tensor], cams: Optional[List[int]]) -> torch.Tensor:
        camids = torch.tensor(cams, dtype=torch.long) if cams is not None else None
        return self.forward_batch(torch.stack(chunk), camids).cpu()

    def __call__(self, images: Union[ImageInput, Sequence[ImageInput]],
                 camids: Optional[Union[int, Sequence[int], torch.Tensor]] = None) -> torch.Tensor:
        """Features of one image (``[1, D]``) or a sequence / ``[B, 3, H, W]`` tensor of images (``[N, D]``), float32
        on the CPU. ``camids`` (one per image, or one for all) are needed by models with SIE camera embeddings."""
        single = isinstance(images, (str, os.PathLike, Image.Image)) or (
            isinstance(images, np.ndarray) and images.ndim in (2, 3)) or (
            isinstance(images, torch.Tensor) and images.dim() == 3)
        if single:
            images = [images]
        elif isinstance(images, torch.Tensor) and images.dim() == 4:
            images = list(images)
        images = list(images)
        if camids is not None:
            camids = torch.as_tensor(camids, dtype=torch.long).reshape(-1)
            if camids.numel() == 1:
                camids = camids.expand(len(images))
            if camids.numel() != len(images):
                raise ValueError(f"got {camids.numel()} camera ids for {len(images)} images")
            camids = camids.tolist()
        parts = list(self.iter_batches(images, camids))
        if not parts:
            return torch.empty(0, self.feature_dim)
        return torch.cat(parts)

    @property
    def feature_dim(self) -> int:
        """``D`` of the retrieval feature (one forward of a blank image the first time)."""
        if not hasattr(self, "_feature_dim"):
            blank = torch.zeros(1, 3, *self.size)
            cams = torch.zeros(1, dtype=torch.long)
            self._feature_dim = int(self.forward_batch(blank, cams).shape[1])
        return self._feature_dim
