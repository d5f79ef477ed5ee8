"""The files a pretraining run leaves: weights (safetensors, open_clip layout), open_clip config, report.

``<out>/<name>.safetensors``: ``model.state_dict()`` of the open_clip ``CLIP`` (the keys of
``open_clip.create_model(arch).state_dict()``; the position table has the square pretraining grid, which
``build_clip_towers`` resizes to the ReID geometry). Saved in float32 (a few MB for the synthetic
architectures), so no loader needs a dtype cast.

``<out>/<name>.json``: the open_clip model config with ``vision_cfg.image_size`` set to the pretraining size;
``open_clip.add_model_config`` registers it under ``<name>`` (``<arch>-synthetic`` by default, so it never
shadows the shipped ``<arch>``).

``<out>/<name>.report.json``: command, seed, corpus sizes, steps, wall time, losses, zero-shot figures.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn as nn

from ..checkpoint.files import atomic_write_bytes, atomic_write_text
from .model import create_pretrain_model, open_clip_config

__all__ = ["output_paths", "write_weights", "write_outputs", "load_pretrained", "SAVE_DTYPES"]

SAVE_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def output_paths(out_dir: str, name: str) -> Dict[str, str]:
    base = os.path.join(out_dir, name)
    return {"weights": base + ".safetensors", "config": base + ".json", "report": base + ".report.json"}


def write_weights(model: nn.Module, path: str, dtype: torch.dtype = torch.float32) -> None:
    """``model.state_dict()`` as safetensors with floating-point tensors in ``dtype`` (float32, or float16 to halve
    the file; the ReID loader and :func:`load_pretrained` read them back into float32 models), written atomically."""
    from safetensors.torch import save

    state = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
             for k, v in model.state_dict().items()}
    data = save(state, metadata={"format": "pt", "layout": "open_clip"})
    atomic_write_bytes(data, path)


def write_outputs(model: nn.Module, arch: str, image_size: int, out_dir: str, name: str,
                  report: Dict[str, Any], dtype: torch.dtype = torch.float32) -> Dict[str, str]:
    paths = output_paths(out_dir, name)
    os.makedirs(out_dir, exist_ok=True)
    write_weights(model, paths["weights"], dtype)
    atomic_write_text(json.dumps(open_clip_config(arch, image_size), indent=4) + "\n", paths["config"])
    write_report(report, paths["report"])
    return paths


def write_report(report: Dict[str, Any], path: str) -> None:
    atomic_write_text(json.dumps(report, indent=2, sort_keys=False) + "\n", path)


def load_pretrained(weights: str, arch: Optional[str] = None) -> Tuple[nn.Module, str, int]:
    """``(open_clip CLIP, arch, image_size)`` of a file this tool wrote. The architecture comes from the report
    next to it (or ``arch``), the square size from the config next to it; keys and shapes are checked."""
    from ..modeling.backbones.weights import check_state_dict_matches, read_clip_state_dict

    stem = weights[: -len(".safetensors")] if weights.endswith(".safetensors") else os.path.splitext(weights)[0]
    report_path, config_path = stem + ".report.json", stem + ".json"
    if os.path.isfile(report_path):
        with open(report_path) as f:
            recorded = json.load(f).get("arch")
        if arch is not None and recorded is not None and arch != recorded:
            raise ValueError(f"--arch {arch} but '{report_path}' says the weights are a {recorded}")
        arch = arch or recorded
    if arch is None:
        raise ValueError(f"no report '{report_path}' next to '{weights}': name the architecture with --arch")
    if not os.path.isfile(config_path):
        raise ValueError(f"no open_clip config '{config_path}' next to '{weights}' (it records the square input size)")
    with open(config_path) as f:
        image_size = int(json.load(f)["vision_cfg"]["image_size"])
    model = create_pretrain_model(arch, image_size, seed=0)
    state = read_clip_state_dict(weights, arch)
    check_state_dict_matches(state, model.state_dict(), weights, arch)
    model.load_state_dict(state, strict=True)
    return model.eval(), arch, image_size
