"""Converting released CLIP-ReID checkpoints: key mapping, geometry checks and the command-line tool."""

import os
import subprocess
import sys

import pytest
import torch

from fastreid_clip.checkpoint.convert import (convert_clipreid_state_dict, detect_clipreid_layout,
                                              summarize_clipreid_state_dict)
from fastreid_clip.modeling.backbones import register_model_configs
from fastreid_clip.modeling.backbones.pos_embed import resize_pos_embed

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TEXT_TOWER = ("positional_embedding", "text_projection", "ln_final.", "transformer.")


def fake_released(arch="ViT-Tiny-16", *, grid=(16, 8), num_classes=5, ctx_len=4, sie_rows=None, text=True,
                  prefix="module.", seed=0):
    """A state dict in the reference CLIP-ReID layout, from a random tiny open_clip model.

    The vision position table is resized to ``grid`` as training at that geometry would leave it.
    """
    import open_clip

    register_model_configs()
    torch.manual_seed(seed)
    clip = open_clip.create_model(arch, pretrained=None, force_quick_gelu=True)
    ref = {}
    for key, value in clip.state_dict().items():
        if key.startswith("visual."):
            ref["image_encoder." + key[len("visual."):]] = value.clone()
        elif text and key.startswith(TEXT_TOWER):
            ref["text_encoder." + key] = value.clone()
    vit = "image_encoder.positional_embedding" in ref
    pos_key = "image_encoder.positional_embedding" if vit else "image_encoder.attnpool.positional_embedding"
    side = int((ref[pos_key].shape[0] - 1) ** 0.5)
    ref[pos_key] = resize_pos_embed(ref[pos_key], (side, side), grid)
    final_dim = clip.visual.class_embedding.shape[0] if vit else clip.visual.attnpool.k_proj.in_features
    proj_dim = clip.visual.proj.shape[1] if vit else clip.visual.attnpool.c_proj.out_features
    for name, dim in (("bottleneck", final_dim), ("bottleneck_proj", proj_dim)):
        ref[f"{name}.weight"] = torch.rand(dim) + 0.5
        ref[f"{name}.bias"] = torch.zeros(dim)
        ref[f"{name}.running_mean"] = torch.randn(dim)
        ref[f"{name}.running_var"] = torch.rand(dim) + 0.1
        ref[f"{name}.num_batches_tracked"] = torch.tensor(1234)
    ref["classifier.weight"] = torch.randn(num_classes, final_dim) * 1e-3
    ref["classifier_proj.weight"] = torch.randn(num_classes, proj_dim) * 1e-3
    if text:
        width = clip.positional_embedding.shape[1]
        ref["prompt_learner.cls_ctx"] = torch.randn(num_classes, ctx_len, width) * 0.02
        ref["prompt_learner.token_prefix"] = torch.randn(1, 5, width)
        ref["prompt_learner.token_suffix"] = torch.randn(1, 77 - 5 - ctx_len, width)
    if sie_rows:
        ref["cv_embed"] = torch.randn(sie_rows, final_dim) * 0.02
    return {prefix + k: v for k, v in ref.items()}


def expected_name(key):
    """The mapping of the brief, spelled out key by key (independent of the converter's tables)."""
    key = key[len("module."):] if key.startswith("module.") else key
    table = {"cv_embed": "backbone.sie_embed", "classifier.weight": "head.classifier.weight",
             "classifier_proj.weight": "head_proj.classifier.weight", "prompt_learner.cls_ctx": "prompt_learner.ctx",
             "prompt_learner.token_prefix": "prompt_learner.token_prefix",
             "prompt_learner.token_suffix": "prompt_learner.token_suffix"}
    if key in table:
        return table[key]
    if key.startswith("image_encoder."):
        return "backbone.visual." + key[len("image_encoder."):]
    if key.startswith("bottleneck_proj."):
        return "head_proj.bn." + key[len("bottleneck_proj."):]
    if key.startswith("bottleneck."):
        return "head.bn." + key[len("bottleneck."):]
    assert key.startswith("text_encoder.")
    return key


@pytest.fixture(scope="module")
def released_vit():
    return fake_released("ViT-Tiny-16", sie_rows=6)


def assert_maps_exactly(released, converted):
    assert len(converted) == len(released)
    for key, value in released.items():
        new = expected_name(key)
        assert new in converted, key
        assert converted[new].dtype == value.dtype and torch.equal(converted[new], value), key


def test_vit_keys_and_values_map_exactly(released_vit):
    converted = convert_clipreid_state_dict(released_vit)
    assert_maps_exactly(released_vit, converted)
    assert converted["backbone.visual.positional_embedding"].shape[0] == 129
    assert converted["backbone.sie_embed"].shape == (6, 64)
    assert converted["prompt_learner.ctx"].shape == (5, 4, 64)
    assert converted["prompt_learner.token_suffix"].shape == (1, 68, 64)
    assert not any(k.startswith(("image_encoder.", "bottleneck", "classifier", "module.")) for k in converted)
    assert not any("token_embedding" in k for k in converted)
    assert summarize_clipreid_state_dict(converted) == {
        "tensors": len(released_vit), "backbone": "vit", "width": 64, "layers": 2, "position_rows": 129,
        "num_classes": 5, "context_tokens": 4, "sie_rows": 6, "has_text": True}
    # the module. prefix is optional
    bare = {k[len("module."):]: v for k, v in released_vit.items()}
    assert convert_clipreid_state_dict(bare).keys() == converted.keys()


def test_detect_layout(released_vit):
    assert detect_clipreid_layout(released_vit)
    assert detect_clipreid_layout({k[len("module."):]: v for k, v in released_vit.items()})
    assert not detect_clipreid_layout(convert_clipreid_state_dict(released_vit))
    plain_clip = {"visual." + k[len("module.image_encoder."):]: v for k, v in released_vit.items()
                  if k.startswith("module.image_encoder.")}
    assert not detect_clipreid_layout(plain_clip)


def test_geometry_mismatch_names_rows_and_config_keys(released_vit):
    with pytest.raises(ValueError) as err:
        convert_clipreid_state_dict(released_vit, stride=(12, 12))
    message = str(err.value)
    assert "211" in message and "129" in message
    assert "MODEL.BACKBONE.STRIDE_SIZE" in message and "INPUT.SIZE_TRAIN" in message
    assert "(16, 16)" in message  # suggests the geometry the table fits
    with pytest.raises(ValueError, match="129"):
        convert_clipreid_state_dict(released_vit, image_size=(384, 128))
    # an OLP checkpoint (21x10 grid) converts at stride 12 and fails at the default stride 16
    olp = fake_released("ViT-Tiny-16", grid=(21, 10), text=False, prefix="")
    assert convert_clipreid_state_dict(olp, stride=(12, 12))["backbone.visual.positional_embedding"].shape[0] == 211
    with pytest.raises(ValueError, match="expected 129, found 211"):
        convert_clipreid_state_dict(olp)
    with pytest.raises(ValueError, match="patch"):
        convert_clipreid_state_dict(released_vit, patch_size=14)
    assert convert_clipreid_state_dict(released_vit, patch_size=None).keys() == \
        convert_clipreid_state_dict(released_vit).keys()


def test_unknown_keys_are_listed(released_vit):
    bad = dict(released_vit)
    bad["module.logit_scale"] = torch.tensor(4.6)
    bad["module.image_encoder.transformer.resblocks.0.attn.bogus"] = torch.zeros(1)
    bad["module.text_encoder.token_embedding.weight"] = torch.zeros(3, 64)
    with pytest.raises(ValueError) as err:
        convert_clipreid_state_dict(bad)
    message = str(err.value)
    assert "3 keys" in message
    for key in ("logit_scale", "image_encoder.transformer.resblocks.0.attn.bogus", "text_encoder.token_embedding"):
        assert key in message


def test_incomplete_or_inconsistent_checkpoints_raise(released_vit):
    missing = {k: v for k, v in released_vit.items() if k != "module.prompt_learner.token_suffix"}
    with pytest.raises(ValueError, match="token_suffix"):
        convert_clipreid_state_dict(missing)
    no_pos = {k: v for k, v in released_vit.items() if k != "module.image_encoder.positional_embedding"}
    with pytest.raises(ValueError, match="position table"):
        convert_clipreid_state_dict(no_pos)
    wrong = dict(released_vit)
    wrong["module.prompt_learner.cls_ctx"] = torch.zeros(7, 4, 64)
    with pytest.raises(ValueError, match="identities"):
        convert_clipreid_state_dict(wrong)
    wrong = dict(released_vit)
    wrong["module.prompt_learner.token_suffix"] = torch.zeros(1, 60, 64)
    with pytest.raises(ValueError, match="context length"):
        convert_clipreid_state_dict(wrong)
    both = dict(released_vit)
    both["prompt_learner.cls_ctx"] = both["module.prompt_learner.cls_ctx"]
    with pytest.raises(ValueError, match="module"):
        convert_clipreid_state_dict(both)


def test_resnet_variant():
    released = fake_released("RN-Tiny", num_classes=3, ctx_len=4)
    converted = convert_clipreid_state_dict(released, stride=(16, 16), last_stride=1)
    assert_maps_exactly(released, converted)
    assert converted["backbone.visual.attnpool.positional_embedding"].shape[0] == 129
    assert "backbone.visual.layer4.0.downsample.0.weight" in converted
    info = summarize_clipreid_state_dict(converted)
    assert (info["backbone"], info["width"], info["layers"], info["num_classes"]) == ("resnet", 16, [1, 1, 1, 1], 3)
    with pytest.raises(ValueError) as err:
        convert_clipreid_state_dict(released, last_stride=2)
    message = str(err.value)
    assert "33" in message and "129" in message and "MODEL.BACKBONE.LAST_STRIDE" in message


def test_baseline_checkpoint_loads_into_clip_baseline(tmp_path):
    """A checkpoint without text tower/prompts maps to the ClipBaseline layout and loads strictly."""
    from fastreid.modeling.meta_arch import build_model

    from conftest import tiny_cfg
    from fastreid_clip.checkpoint import load_model_weights

    released = fake_released("ViT-Tiny-16", text=False, num_classes=5)
    converted = convert_clipreid_state_dict(released)
    assert not any(k.startswith(("text_encoder.", "prompt_learner.")) for k in converted)
    assert summarize_clipreid_state_dict(converted)["context_tokens"] is None
    torch.save({"model": converted}, tmp_path / "baseline.pth")
    model = build_model(tiny_cfg(str(tmp_path), "MODEL.HEADS.NUM_CLASSES", "5"))
    load_model_weights(model, str(tmp_path / "baseline.pth"))
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in converted.items())


def run_tool(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", "convert_clipreid.py"), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_tool_end_to_end(tmp_path, released_vit):
    from fastreid_clip.checkpoint import read_training_checkpoint

    src, dst = tmp_path / "released.pth", tmp_path / "out" / "converted.pth"
    torch.save(released_vit, src)
    config = "configs/Synthetic/clip_baseline_vit_tiny.yml"
    result = run_tool(str(src), str(dst), "--config-file", config)
    assert result.returncode == 0, result.stderr
    assert "16x8" in result.stdout and "129" in result.stdout and "identities C  : 5" in result.stdout
    assert "context M     : 4" in result.stdout and "on, 6 rows" in result.stdout
    saved = torch.load(dst, map_location="cpu", weights_only=True)
    expected = convert_clipreid_state_dict(released_vit)
    assert set(saved) == {"model"} and saved["model"].keys() == expected.keys()
    assert all(torch.equal(saved["model"][k], v) for k, v in expected.items())
    assert read_training_checkpoint(str(dst)).keys() == expected.keys()



def test_tool_rejects_a_geometry_mismatch(tmp_path, released_vit):
    import importlib.util

    spec = importlib.util.spec_from_file_location("convert_clipreid_tool", os.path.join(ROOT, "tools",
                                                                                          "convert_clipreid.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    src = tmp_path / "released.pth"
    torch.save(released_vit, src)
    config = os.path.join(ROOT, "configs/Synthetic/clip_baseline_vit_tiny.yml")
    with pytest.raises(SystemExit) as err:
        tool.main([str(src), str(tmp_path / "bad.pth"), "--config-file", config, "MODEL.BACKBONE.STRIDE_SIZE",
                   "(12, 12)"])
    message = str(err.value.code)
    assert "211" in message and "129" in message and "STRIDE_SIZE" in message
    assert not (tmp_path / "bad.pth").exists()


def test_converted_checkpoint_loads_into_clip_reid(tmp_path):
    """The converted dict fits the ClipReID meta-architecture exactly (strict load, every tensor equal)."""
    from fastreid.modeling.meta_arch import META_ARCH_REGISTRY, build_model

    from conftest import tiny_cfg
    from fastreid_clip.checkpoint import load_model_weights

    if "ClipReID" not in META_ARCH_REGISTRY._obj_map:
        pytest.skip("ClipReID is not registered yet")
    converted = convert_clipreid_state_dict(fake_released("ViT-Tiny-16", num_classes=5))
    torch.save({"model": converted}, tmp_path / "clipreid.pth")
    model = build_model(tiny_cfg(str(tmp_path), "MODEL.HEADS.NUM_CLASSES", "5",
                                 config="configs/Synthetic/clip_reid_vit_tiny.yml"))
    load_model_weights(model, str(tmp_path / "clipreid.pth"))
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in converted.items())
