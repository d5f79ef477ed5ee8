"""Reading CLIP weight files from local disk and checking them against an open_clip architecture.

Supported files (never a hub download):

* open_clip state dicts (``.bin``/``.pt``/``.pth``), also DDP-style ``{"state_dict": {"module.…": …}}``;
* ``.safetensors`` files;
* OpenAI's TorchScript archives (``ViT-B-16.pt``, ``RN50.pt``). Loading those unpickles code, so it needs
  an explicit trust flag (``MODEL.BACKBONE.TRUST_TORCHSCRIPT True``); ``tools/convert_openai_clip.py``
  turns them into safetensors once.
"""

from __future__ import annotations

import os
import zipfile
from typing import Dict, Mapping

import torch

__all__ = [
    "WeightFileError",
    "resolve_weight_path",
    "is_torchscript_archive",
    "read_clip_state_dict",
    "check_state_dict_matches",
    "describe_clip_state_dict",
]

# Entries OpenAI's TorchScript archives carry besides the parameters.
_TORCHSCRIPT_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size", "attn_mask")
# Position tables are resized to the configured geometry, so their lengths are not compared.
RESIZABLE_KEYS = ("visual.positional_embedding", "visual.attnpool.positional_embedding")


class WeightFileError(ValueError):
    """A CLIP weight file that is missing, unreadable or made for another architecture."""


def is_torchscript_archive(path: str) -> bool:
    """True for a TorchScript zip archive (it stores ``code/`` and ``constants.pkl`` entries)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(n.endswith("constants.pkl") for n in names) and any("/code/" in n for n in names)


# The repository root (the folder holding ``fastreid_clip/`` and ``weights/``).
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def resolve_weight_path(path: str) -> str:
    """``path`` itself when it exists; a relative path that does not exist from the working directory is also
    looked up from the project root, so the configs' ``weights/synthetic_clip/...`` files are found from anywhere.
    Returns ``path`` unchanged when neither exists (the caller's error names it)."""
    if not path or os.path.isabs(path) or os.path.exists(path):
        return path
    candidate = os.path.join(PROJECT_ROOT, path)
    return candidate if os.path.exists(candidate) else path


def _strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def read_clip_state_dict(path: str, arch: str, trust_torchscript: bool = False) -> Dict[str, torch.Tensor]:
    """Read a CLIP state dict (open_clip key names) from a local file.

    Args:
        path: local weight file.
        arch: open_clip architecture name the caller will load it into (for error messages).
        trust_torchscript: allow unpickling an OpenAI TorchScript archive.

    Returns:
        Mapping of parameter name to tensor, on the CPU.

    Raises:
        WeightFileError: the file is missing, is a TorchScript archive without the trust flag, or holds
            something that is not a CLIP state dict.
    """
    if not path:
        raise WeightFileError(
            f"MODEL.BACKBONE.PRETRAIN is True but MODEL.BACKBONE.PRETRAIN_PATH is empty: name a local weight "
            f"file for the open_clip architecture '{arch}' (for example OpenAI's ViT-B-16.pt or an open_clip "
            f".bin/.safetensors), or set MODEL.BACKBONE.PRETRAIN False to train from random initialisation."
        )
    path = resolve_weight_path(path)
    if not os.path.isfile(path):
        where = "" if os.path.isabs(path) else f" (looked in {os.getcwd()} and {PROJECT_ROOT})"
        raise WeightFileError(
            f"CLIP weight file '{path}' (MODEL.BACKBONE.PRETRAIN_PATH, architecture '{arch}') does not exist{where}. "
            f"Download the weights for '{arch}' once on a machine with internet access and point "
            f"MODEL.BACKBONE.PRETRAIN_PATH at the local file; this project never downloads weights."
        )
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            checkpoint = load_file(path, device="cpu")
        except Exception as err:  # safetensors raises several error types for corrupt files
            raise WeightFileError(f"cannot read safetensors file '{path}' for '{arch}': {err}") from err
    elif is_torchscript_archive(path):
        if not trust_torchscript:
            raise WeightFileError(
                f"'{path}' is an OpenAI TorchScript archive for '{arch}'. Loading it executes pickled code, so "
                f"it needs an explicit opt-in: set MODEL.BACKBONE.TRUST_TORCHSCRIPT True if you trust the file, "
                f"or convert it once with `python tools/convert_openai_clip.py {path} <out>.safetensors` and "
                f"point MODEL.BACKBONE.PRETRAIN_PATH at the .safetensors file."
            )
        archive = torch.jit.load(path, map_location="cpu")
        checkpoint = {k: v for k, v in archive.state_dict().items() if k not in _TORCHSCRIPT_EXTRA_KEYS}
    else:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise WeightFileError(
                f"cannot read '{path}' as a CLIP state dict for '{arch}' (torch.load with weights_only=True "
                f"failed: {err}). Expected an open_clip .bin/.pt state dict, a .safetensors file or an OpenAI "
                f"TorchScript archive."
            ) from err
    if isinstance(checkpoint, Mapping) and "state_dict" in checkpoint:
        checkpoint = checkpoint["state_dict"]
    if isinstance(checkpoint, Mapping) and "model" in checkpoint and isinstance(checkpoint["model"], Mapping):
        raise WeightFileError(
            f"'{path}' looks like a FastReID training checkpoint (it has a 'model' entry), not CLIP weights: "
            f"load it with MODEL.WEIGHTS instead of MODEL.BACKBONE.PRETRAIN_PATH."
        )
    if not isinstance(checkpoint, Mapping) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise WeightFileError(f"'{path}' does not hold a state dict of tensors (got {type(checkpoint).__name__})")
    return _strip_prefix(checkpoint, "module.")


def describe_clip_state_dict(state_dict: Mapping[str, torch.Tensor]) -> str:
    """A short human description of the vision tower a CLIP state dict was saved from."""
    if "visual.conv1.weight" in state_dict and "visual.class_embedding" in state_dict:
        conv = state_dict["visual.conv1.weight"]
        layers = len({k.split(".")[3] for k in state_dict if k.startswith("visual.transformer.resblocks.")})
        return f"a ViT with width {conv.shape[0]}, {layers} blocks and patch size {conv.shape[-1]}"
    if "visual.attnpool.c_proj.weight" in state_dict:
        blocks = [len({k.split(".")[2] for k in state_dict if k.startswith(f"visual.layer{i}.")}) for i in range(1, 5)]
        return f"a ModifiedResNet with blocks {blocks} and stem width {state_dict['visual.conv1.weight'].shape[0] * 2}"
    return "not a recognisable CLIP vision tower"


def check_state_dict_matches(
    state_dict: Mapping[str, torch.Tensor], model_state: Mapping[str, torch.Tensor], path: str, arch: str
) -> None:
    """Raise :class:`WeightFileError` unless ``state_dict`` has exactly the model's keys and shapes.

    Position tables (:data:`RESIZABLE_KEYS`) are only required to exist; the loader resizes them.
    """
    missing = sorted(set(model_state) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(model_state))
    mismatched = [
        f"{k}: file {list(state_dict[k].shape)} vs model {list(model_state[k].shape)}"
        for k in sorted(set(state_dict) & set(model_state))
        if k not in RESIZABLE_KEYS and state_dict[k].shape != model_state[k].shape
    ]
    if not (missing or unexpected or mismatched):
        return
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches (e.g. {'; '.join(mismatched[:2])})")
    raise WeightFileError(
        f"'{path}' does not hold weights for the open_clip architecture '{arch}' (MODEL.BACKBONE.CLIP_NAME): "
        f"{', '.join(problems)}. The file looks like {describe_clip_state_dict(state_dict)}. Set "
        f"MODEL.BACKBONE.CLIP_NAME to the architecture the file was saved from, or point "
        f"MODEL.BACKBONE.PRETRAIN_PATH at a '{arch}' weight file."
    )
