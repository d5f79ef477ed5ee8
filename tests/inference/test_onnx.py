"""ONNX export + onnxruntime parity for the tiny ViT and RN variants of every tiny config (every registered
meta-architecture with one), SIE camera ids as an input, a dynamic batch axis, and tools/export_onnx.py."""

import os

import numpy as np
import pytest
import torch
from fastreid.modeling.meta_arch import META_ARCH_REGISTRY

from conftest import tiny_cfg
from inference_helpers import cached_run, cfg_has_key, config_id, load_tool, synthetic_configs
from fastreid_clip.config import ConfigValueError
from fastreid_clip.inference import FeatureExtractor
from fastreid_clip.inference.onnx_export import check_onnx, export_onnx, export_overrides, uses_camids

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

RN = ["MODEL.BACKBONE.CLIP_NAME", "RN-Tiny", "MODEL.BACKBONE.PRETRAIN_PATH",
      "weights/synthetic_clip/RN-Tiny-synthetic.safetensors"]
# Keys a meta-architecture needs changed for a ModifiedResNet (its layer4 map has no projected tokens).
RN_EXTRA = {"PromptSG": ["MODEL.PROMPTSG.MIM.TOKENS", "final"], "ClipSCGI": ["MODEL.SCGI.CFF.TOKENS", "final"]}
TOLERANCE = 1e-4  # max abs difference of L2-normalised features (the acceptance bound)


def _cases():
    cases = []
    for config in synthetic_configs():
        cfg = tiny_cfg("unused", config=config)
        extra = RN_EXTRA.get(cfg.MODEL.META_ARCHITECTURE, [])
        extra = [v for k, val in zip(extra[::2], extra[1::2]) if cfg_has_key(cfg, k) for v in (k, val)]
        cases.append((config, "own", []))
        if "RN-Tiny" not in cfg.MODEL.BACKBONE.CLIP_NAME:
            cases.append((config, "rn", RN + extra))
    return cases


CASES = _cases()


@pytest.mark.parametrize("config,variant,opts", CASES, ids=[f"{config_id(c)}-{v}" for c, v, _ in CASES])
def test_onnxruntime_parity(config, variant, opts, tmp_path):
    cls = META_ARCH_REGISTRY.get(tiny_cfg("unused", config=config).MODEL.META_ARCHITECTURE)
    mode = export_overrides(cls)
    try:
        run_dir, _ = cached_run(config, *opts)
    except ConfigValueError as err:  # pragma: no cover - a new meta-arch whose RN variant needs more keys
        pytest.skip(f"{cls.__name__} with RN-Tiny needs other keys than {opts}: {err}")
    extractor = FeatureExtractor.from_run_dir(run_dir, opts=mode)
    path = export_onnx(extractor, str(tmp_path / "model.onnx"))
    diff = check_onnx(extractor, path, batch=3)  # traced at batch 2: the batch axis is dynamic
    print(f"{config_id(config)} {variant} ({' '.join(mode) or 'default mode'}): max abs diff {diff:.2e}")
    assert diff <= TOLERANCE
    proto = onnx.load(path)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["meta_architecture"] == cls.__name__ and meta["camids_input"] == "False"
    assert [i.name for i in proto.graph.input] == ["images"]
    # Batch of one and a batch of real test-transform images agree too.
    assert check_onnx(extractor, path, batch=1, seed=5) <= TOLERANCE
    if cls.__name__ == "PromptSG":
        assert mode == ["MODEL.PROMPTSG.INFERENCE", "simplified"] and extractor.model.inference_mode == "simplified"


def test_sie_camids_input(tmp_path):
    run_dir, _ = cached_run("configs/Synthetic/clip_baseline_vit_tiny.yml", "MODEL.BACKBONE.SIE_CAMERA", "True")
    extractor = FeatureExtractor.from_run_dir(run_dir)
    assert uses_camids(extractor.model, extractor.size)
    path = export_onnx(extractor, str(tmp_path / "sie.onnx"))
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images", "camids"]
    images = torch.rand(4, 3, 256, 128) * 255
    for cams in ([0, 1, 2, 3], [3, 3, 0, 1]):
        diff = check_onnx(extractor, path, images, torch.tensor(cams))
        assert diff <= TOLERANCE
    a = session.run(None, {"images": images.numpy(), "camids": np.array([0, 0, 0, 0])})[0]
    b = session.run(None, {"images": images.numpy(), "camids": np.array([1, 1, 1, 1])})[0]
    assert np.abs(a - b).max() > 1e-3  # the camera id reaches the graph
    # Without SIE there is no camids input.
    plain_dir, _ = cached_run("configs/Synthetic/clip_baseline_vit_tiny.yml")
    assert not uses_camids(FeatureExtractor.from_run_dir(plain_dir).model, (256, 128))


def test_flip_test_is_exported(tmp_path):
    run_dir, _ = cached_run("configs/Synthetic/clip_baseline_vit_tiny.yml", "TEST.FLIP.ENABLED", "True")
    extractor = FeatureExtractor.from_run_dir(run_dir)
    path = export_onnx(extractor, str(tmp_path / "flip.onnx"))
    assert check_onnx(extractor, path) <= TOLERANCE
    plain = FeatureExtractor.from_run_dir(run_dir, flip_test=False)
    assert check_onnx(plain, path) > 1e-3  # a graph without the flip would not match


def test_export_tool(tmp_path, capsys):
    tool = load_tool("export_onnx")
    run_dir, _ = cached_run("configs/Synthetic/promptsg_vit_tiny.yml")
    out = str(tmp_path / "p.onnx")
    result = tool.main(["--run-dir", run_dir, "--output", out, "--speed", "--speed-batch", "4"])
    printed = capsys.readouterr().out
    assert os.path.isfile(out) and result["max_abs_diff"] <= TOLERANCE
    assert "MODEL.PROMPTSG.INFERENCE simplified" in printed and "images/s" in printed
    assert set(result["images_per_second"]) == {"onnxruntime", "pytorch"}
    with pytest.raises(SystemExit, match="PromptSG has no inference mode 'fast'"):
        tool.main(["--run-dir", run_dir, "--output", out, "--inference-mode", "fast"])
