"""ONNX export of a model's inference path (the feature :class:`~.extractor.FeatureExtractor` returns), with a dynamic
batch axis, and an onnxruntime parity check.

The exported graph takes ``images`` ``[B, 3, H, W]`` float32 RGB on FastReID's 0-255 scale at ``INPUT.SIZE_TEST``
(resizing is not part of it) and, for models whose feature depends on the camera (SIE), ``camids`` ``[B]`` int64; it
returns ``features`` ``[B, D]``, the retrieval feature (flip-test averaging included when ``TEST.FLIP.ENABLED``).
Whether a model needs ``camids`` is found by running it (:func:`uses_camids`), so any meta-architecture that keeps
the inference contract exports without code of its own (docs/inference.md).

Export uses torch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``): it records one forward,
so Python-side caches (PromptSG's simplified-prompt query) become constants and host-side checks (SIE's camera-range
check) run once at export time only. torch 2.14's default dynamo exporter needs ``onnxscript`` and rejects such
data-dependent checks.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

__all__ = ["InferenceGraph", "check_onnx", "export_onnx", "images_per_second", "uses_camids", "export_overrides"]

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 17


class InferenceGraph(nn.Module):
    """``(images [B, 3, H, W] 0-255, camids [B] | None) -> [B, D]``: the extractor's forward as a plain module.

    Args:
        model: the meta-architecture (eval mode).
        flip_test: average with the features of the mirrored images (``TEST.FLIP.ENABLED``).
    """

    def __init__(self, model: nn.Module, flip_test: bool = False):
        super().__init__()
        self.model = model
        self.flip_test = bool(flip_test)

    def forward(self, images: torch.Tensor, camids: Optional[torch.Tensor] = None) -> torch.Tensor:
        batch = {"images": images}
        if camids is not None:
            batch["camids"] = camids
        out = self.model(batch)
        if self.flip_test:
            out = (out + self.model({**batch, "images": images.flip(dims=[3])})) / 2
        return out.float()


def export_overrides(meta_arch_cls) -> Sequence[str]:
    """Config overrides selecting the inference mode to export: the class's ``EXPORT_INFERENCE_MODE`` entry of
    ``INFERENCE_MODE_OVERRIDES``, else its ``"simplified"`` mode (PromptSG's cached fixed prompt), else none."""
    modes = getattr(meta_arch_cls, "INFERENCE_MODE_OVERRIDES", None) or {}
    mode = getattr(meta_arch_cls, "EXPORT_INFERENCE_MODE", None) or ("simplified" if "simplified" in modes else None)
    return list(modes.get(mode, [])) if mode else []


@torch.no_grad()
def uses_camids(model: nn.Module, size: Sequence[int], device=None) -> bool:
    """Whether ``model``'s feature needs camera ids: its forward without ``camids`` fails, or two camera ids give
    different features of the same image."""
    device = device or next(model.parameters()).device
    images = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0)).mul(255).to(device)
    try:
        a = model({"images": images, "camids": torch.zeros(1, dtype=torch.long, device=device)})
        b = model({"images": images, "camids": torch.ones(1, dtype=torch.long, device=device)})
    except (ValueError, IndexError, RuntimeError):  # a single-camera SIE table: camera 1 is out of range
        return True
    if not torch.equal(a, b):
        return True
    try:
        model({"images": images})
    except (ValueError, KeyError, TypeError):
        return True
    return False


def export_onnx(extractor, path: str, *, camids: Optional[bool] = None, opset: int = DEFAULT_OPSET,
                example_batch: int = 2) -> str:
    """Export ``extractor``'s inference path (CPU, float32) to ``path``.

    Args:
        extractor: a :class:`~fastreid_clip.inference.FeatureExtractor` (its model, test size and flip-test).
        path: the ``.onnx`` file.
        camids: add the ``camids`` input (default: when :func:`uses_camids`).
        opset: ONNX opset.
        example_batch: batch of the traced example (the batch axis is dynamic).
    """
    model = extractor.model
    device = extractor.device
    model.cpu().eval()
    try:
        size = extractor.size
        if camids is None:
            camids = uses_camids(model, size, torch.device("cpu"))
        graph = InferenceGraph(model, extractor.flip_test).eval()
        images = torch.rand(example_batch, 3, *size, generator=torch.Generator().manual_seed(0)) * 255
        args = (images, torch.zeros(example_batch, dtype=torch.long)) if camids else (images,)
        names = ["images", "camids"] if camids else ["images"]
        axes = {name: {0: "batch"} for name in names + ["features"]}
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fastpath = torch.backends.mha.get_fastpath_enabled()
        # nn.MultiheadAttention's fused inference kernel (taken under no_grad or with frozen weights) has no ONNX
        # form: trace the plain path.
        torch.backends.mha.set_fastpath_enabled(False)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            torch.onnx.export(graph, args, path, dynamo=False, input_names=names, output_names=["features"],
                              dynamic_axes=axes, opset_version=opset, do_constant_folding=True)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        model.to(device)
    _add_metadata(path, extractor, camids)
    logger.info("Exported %s to %s (inputs %s, opset %d)", type(model).__name__, path, names, opset)
    return path


def _add_metadata(path: str, extractor, camids: bool) -> None:
    """What a consumer needs to feed the graph, as ONNX metadata properties."""
    import onnx

    proto = onnx.load(path)
    cfg = extractor.cfg
    props = {
        "meta_architecture": cfg.MODEL.META_ARCHITECTURE,
        "backbone": cfg.MODEL.BACKBONE.CLIP_NAME,
        "input_size_hw": ",".join(str(s) for s in extractor.size),
        "input_scale": "RGB float32 0-255, resized to input_size_hw with " + cfg.INPUT.INTERPOLATION_TEST,
        "camids_input": str(bool(camids)),
        "flip_test": str(extractor.flip_test),
        "weights": str(cfg.MODEL.WEIGHTS),
    }
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, path)


def _session(path: str, spinning: bool = True):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if not spinning:  # idle onnxruntime threads otherwise keep spinning and slow down whatever runs next
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def check_onnx(extractor, path: str, images: Optional[torch.Tensor] = None, camids: Optional[torch.Tensor] = None,
               batch: int = 3, seed: int = 0) -> float:
    """Max abs difference between onnxruntime's and PyTorch's L2-normalised features (random images by default, of
    a batch size other than the traced one)."""
    session = _session(path)
    names = [i.name for i in session.get_inputs()]
    if images is None:
        images = torch.rand(batch, 3, *extractor.size, generator=torch.Generator().manual_seed(seed)) * 255
    if "camids" in names and camids is None:
        camids = torch.arange(images.shape[0]) % 2
    feeds = {"images": images.float().numpy()}
    if "camids" in names:
        feeds["camids"] = torch.as_tensor(camids, dtype=torch.long).numpy()
    ours = session.run(["features"], feeds)[0]
    amp, extractor.amp = extractor.amp, False  # the exported graph is float32: compare with PyTorch's float32
    try:
        ref = extractor.forward_batch(images, camids if "camids" in names else None).cpu().numpy()
    finally:
        extractor.amp = amp
    return float(np.abs(_normalise(ours) - _normalise(ref)).max())


def images_per_second(extractor, path: str, batch: int = 32, rounds: int = 5) -> Tuple[float, float]:
    """``(onnxruntime, PyTorch)`` images/s on the CPU, best of ``rounds`` interleaved timings of one batch
    (onnxruntime's thread spinning off, so that it does not slow down the PyTorch rounds)."""
    session = _session(path, spinning=False)
    names = [i.name for i in session.get_inputs()]
    images = torch.rand(batch, 3, *extractor.size, generator=torch.Generator().manual_seed(0)) * 255
    camids = torch.zeros(batch, dtype=torch.long)
    feeds = {"images": images.numpy(), **({"camids": camids.numpy()} if "camids" in names else {})}
    model_device = extractor.device
    extractor.model.cpu()
    extractor.device = torch.device("cpu")
    best_ort, best_torch = float("inf"), float("inf")
    try:
        session.run(None, feeds)
        extractor.forward_batch(images, camids if "camids" in names else None)
        for _ in range(rounds):
            start = time.perf_counter()
            session.run(None, feeds)
            best_ort = min(best_ort, time.perf_counter() - start)
            start = time.perf_counter()
            extractor.forward_batch(images, camids if "camids" in names else None)
            best_torch = min(best_torch, time.perf_counter() - start)
    finally:
        extractor.model.to(model_device)
        extractor.device = model_device
    return batch / best_ort, batch / best_torch
