"""Attention maps: rollout and last-block maps against a hand-written reference, cross-attention maps of the
interaction module, maps summing to one, inference unchanged by the recorder, and the picture tool."""

import os

import numpy as np
import pytest
import torch

from conftest import tiny_cfg
from inference_helpers import cached_run, cfg_has_key, config_id, load_tool, synthetic_configs
from fastreid_clip.inference import FeatureExtractor
from fastreid_clip.inference.attention import attention_maps, heatmap_overlay, rollout

VIT = "configs/Synthetic/clip_baseline_vit_tiny.yml"
PROMPTSG = "configs/Synthetic/promptsg_vit_tiny.yml"


def _images(n=3, seed=0):
    return torch.rand(n, 3, 256, 128, generator=torch.Generator().manual_seed(seed)) * 255


def _reference_self_attention(backbone, images):
    """Per block ``[B, N, N]`` head-averaged softmax(QK^T/sqrt(d)) written out from the block weights."""
    x = backbone.embed(images)
    out = []
    for block in backbone.visual.transformer.resblocks:
        h = block.ln_1(x)
        attn = block.attn
        q, k, _ = torch.nn.functional.linear(h, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        heads, dim = attn.num_heads, q.shape[-1]
        qh = q.reshape(*q.shape[:2], heads, dim // heads).transpose(1, 2)
        kh = k.reshape(*k.shape[:2], heads, dim // heads).transpose(1, 2)
        out.append((qh @ kh.transpose(-1, -2) / (dim // heads) ** 0.5).softmax(-1).mean(1))
        x = block(x)
    return out


def test_vit_maps_match_reference():
    run_dir, _ = cached_run(VIT)
    extractor = FeatureExtractor.from_run_dir(run_dir)
    model = extractor.model
    images = _images()
    with torch.no_grad():
        normalised = model.preprocess_image({"images": images})
        ref = _reference_self_attention(model.backbone, normalised)
    maps = attention_maps(model, images)
    assert set(maps) == {"rollout", "last"}
    grid = model.backbone.grid_size
    for name in maps:
        assert maps[name].shape == (3, *grid)
        torch.testing.assert_close(maps[name].sum(dim=(1, 2)), torch.ones(3), rtol=0, atol=1e-5)
    last = ref[-1][:, 0, 1:]
    torch.testing.assert_close(maps["last"].reshape(3, -1), last / last.sum(-1, keepdim=True), rtol=1e-4, atol=1e-6)
    # Rollout by hand: (A + I) / 2 per block, rows renormalised, multiplied from the first block on.
    eye = torch.eye(ref[0].shape[-1])
    r = None
    for a in ref:
        a = (a + eye) / 2
        a = a / a.sum(-1, keepdim=True)
        r = a if r is None else a @ r
    expected = r[:, 0, 1:] / r[:, 0, 1:].sum(-1, keepdim=True)
    torch.testing.assert_close(maps["rollout"].reshape(3, -1), expected, rtol=1e-4, atol=1e-6)
    assert (maps["rollout"][0] - maps["rollout"][1]).abs().max() > 1e-4  # image-dependent
    # The hooks are gone afterwards and inference is unchanged.
    assert all(not block.attn._forward_hooks for block in model.backbone.visual.transformer.resblocks)
    torch.testing.assert_close(extractor(images), extractor(images), rtol=0, atol=0)


def test_rollout_of_identity_attention_is_identity():
    eye = torch.eye(5).expand(2, 5, 5)
    torch.testing.assert_close(rollout([eye, eye, eye]), eye)


def test_cross_attention_maps_of_promptsg():
    run_dir, _ = cached_run(PROMPTSG)
    for mode in ("simplified", "composed"):
        extractor = FeatureExtractor.from_run_dir(run_dir, opts=["MODEL.PROMPTSG.INFERENCE", mode])
        model = extractor.model
        images = _images(2, seed=1)
        maps = attention_maps(model, images)
        assert set(maps) == {"rollout", "last", "cross"}
        assert maps["cross"].shape == (2, *model.backbone.grid_size)
        torch.testing.assert_close(maps["cross"].sum(dim=(1, 2)), torch.ones(2), rtol=0, atol=1e-5)
        # Reference: the MIM's cross-attention from the query over the patch tokens, written out.
        with torch.no_grad():
            feats = model.extract({"images": images})
            kv = model.key_values(feats)
            cross = model.mim.cross
            if mode == "simplified":
                q = model.simplified_query().q
            else:
                q = cross.project_query(model.mim.query_in(model.encode_composed(feats.proj).unsqueeze(1)))
            k = cross.k_proj(cross.ln_kv(kv))
            heads, dim = cross.num_heads, k.shape[-1]
            qh = q.reshape(q.shape[0], 1, heads, dim // heads).transpose(1, 2)
            kh = k.reshape(2, -1, heads, dim // heads).transpose(1, 2)
            weights = (qh @ kh.transpose(-1, -2) / (dim // heads) ** 0.5).softmax(-1).mean(1)[:, 0]
        torch.testing.assert_close(maps["cross"].reshape(2, -1), weights.expand(2, -1), rtol=1e-4, atol=1e-6)


def test_heatmap_overlay():
    image = torch.zeros(3, 32, 16)
    attention = torch.zeros(4, 2)
    attention[0, 0] = 1.0
    picture = np.asarray(heatmap_overlay(image, attention))
    assert picture.shape == (32, 16, 3)
    assert picture[0, 0, 0] > 100 and picture[-1, -1, 2] > picture[-1, -1, 0]  # hot corner red, cold end blue


def test_tool_writes_the_picture(tmp_path, datasets_root):
    tool = load_tool("visualize_attention")
    extract = load_tool("extract_features")
    run_dir, _ = cached_run(PROMPTSG)
    feats = str(tmp_path / "synth.npy")
    extract.main(["--run-dir", run_dir, "--dataset", "SyntheticReID", "--output", feats, "--num-workers", "0",
                  "--no-progress", "MODEL.PROMPTSG.INFERENCE", "simplified"])
    out = str(tmp_path / "attn.jpg")
    result = tool.main(["--run-dir", run_dir, "--gallery", feats, "--num-queries", "3", "--top-k", "4", "--output", out,
                        "MODEL.PROMPTSG.INFERENCE", "simplified"])
    assert os.path.getsize(out) > 0
    from PIL import Image

    width, height = Image.open(out).size
    assert height > 3 * 128 and width > (1 + 3 + 4) * 64  # 3 rows; query, 3 maps, 4 matches
    saved = np.load(result["npz"])
    assert set(saved.files) == {"paths", "rollout", "last", "cross"}
    for name in ("rollout", "last", "cross"):
        assert saved[name].shape[0] == 3
        np.testing.assert_allclose(saved[name].sum(axis=(1, 2)), 1.0, atol=1e-5)
    os.remove(str(tmp_path / "synth.json"))  # features without their sidecar: no image paths for the matches
    with pytest.raises(SystemExit, match="synth.npy.*JSON sidecar with the image paths is missing"):
        tool.main(["--run-dir", run_dir, "--gallery", feats, "--images", saved["paths"][0], "--output", out,
                   "MODEL.PROMPTSG.INFERENCE", "simplified"])


def test_tool_without_attention_says_so(tmp_path):
    tool = load_tool("visualize_attention")
    run_dir, _ = cached_run("configs/Synthetic/clip_baseline_rn_tiny.yml")
    image = tmp_path / "a.png"
    from PIL import Image

    Image.fromarray(np.zeros((64, 32, 3), np.uint8)).save(image)
    with pytest.raises(SystemExit, match="neither a ViT image backbone nor a cross-attention module"):
        tool.main(["--run-dir", run_dir, "--images", str(image), "--output", str(tmp_path / "x.jpg")])


def _attention_cases():
    cases = [(c, []) for c in synthetic_configs()]
    scgi = "configs/Synthetic/clip_scgi_vit_tiny.yml"
    if scgi in [c for c, _ in cases] and cfg_has_key(tiny_cfg("unused", config=scgi), "MODEL.SCGI.CFF.KV"):
        cases.append((scgi, ["MODEL.SCGI.CFF.KV", "patches"]))
    rn = ["MODEL.BACKBONE.CLIP_NAME", "RN-Tiny", "MODEL.BACKBONE.PRETRAIN_PATH",
          "weights/synthetic_clip/RN-Tiny-synthetic.safetensors"]
    cases.append((PROMPTSG, rn + ["MODEL.PROMPTSG.MIM.TOKENS", "final"]))
    return cases


ATTENTION_CASES = _attention_cases()


@pytest.mark.parametrize("config,opts", ATTENTION_CASES,
                         ids=[config_id(c) + ("-" + "-".join(o[1::2][-1:]) if o else "") for c, o in ATTENTION_CASES])
def test_maps_of_every_config_sum_to_one(config, opts):
    """ViT models get rollout and last-block maps, models with a cross-attention over the patches a cross map
    (PromptSG ViT and RN, CLIP-SCGI with CFF.KV patches); every map sums to one per image."""
    from fastreid_clip.modeling.backbones import ClipViTBackbone

    run_dir, _ = cached_run(config, *opts)
    model = FeatureExtractor.from_run_dir(run_dir).model
    maps = attention_maps(model, _images(2, seed=3))
    vit = isinstance(model.backbone, ClipViTBackbone)
    expect_cross = model.__class__.__name__ == "PromptSG" or "patches" in opts
    assert ({"rollout", "last"} <= set(maps)) == vit
    assert ("cross" in maps) == expect_cross
    for name, m in maps.items():
        assert m.shape[0] == 2 and m.min() >= 0
        torch.testing.assert_close(m.sum(dim=(1, 2)), torch.ones(2), rtol=0, atol=1e-5)
    if not vit and expect_cross:
        assert maps["cross"].shape[1:] == (16, 8)  # RN-Tiny's layer4 map at 256x128 (last stride 1)
