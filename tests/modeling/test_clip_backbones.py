"""CLIP backbones: parity with open_clip, position-table geometry, SIE, weight-file errors."""

import os

import numpy as np
import pytest
import torch

from conftest import save_random_clip
from numeric import assert_close_ulps, dot_ulps
from fastreid_clip.config import get_cfg
from fastreid_clip.modeling.backbones import (ClipGeometry, WeightFileError, build_clip_model, build_clip_towers,
                                              CLIPTextEncoder, ClipResNetBackbone, ClipViTBackbone)


# Our towers vs open_clip's encode_image / encode_text, in ulps of the largest output value. The image towers run
# open_clip's own blocks (measured: the same bits); our text tower runs only the tokens up to the last EOT, not
# all 77 (the same causal result from shorter attention and GEMM shapes): measured at most 5.6 ulps apart for
# the tiny ViT and 9.5 for ViT-B/16, over MKL's default and CBWR=COMPATIBLE paths, ATen's default and AVX-512
# paths and 1 or 2 threads.
TOWER_ULPS = 64


def assert_resized_like(actual: np.ndarray, expected: np.ndarray, dst) -> None:
    """Our float32 bilinear resize vs the float64 reference: F.interpolate computes source coordinates in
    float32, about an ulp of the largest output index off (moving a value by that times the difference of two
    neighbours, at most 2 max|table|), then two linear interpolations (a few ulps of max|table|)."""
    peak = float(np.abs(expected).max())
    tolerance = 2 * peak * np.spacing(np.float32(max(dst))) + 4 * np.spacing(np.float32(peak))
    assert np.abs(actual - expected).max() <= tolerance


def bilinear_reference(table: np.ndarray, src, dst) -> np.ndarray:
    """Independent bilinear resize of a [1 + h*w, D] table (align_corners=False, edge-clamped), in numpy."""
    (sh, sw), (dh, dw) = src, dst
    grid = table[1:].reshape(sh, sw, -1).astype(np.float64)

    def coords(n_in, n_out):
        pos = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, pos - lo

    y0, y1, wy = coords(sh, dh)
    x0, x1, wx = coords(sw, dw)
    top = grid[y0][:, x0] * (1 - wx)[None, :, None] + grid[y0][:, x1] * wx[None, :, None]
    bottom = grid[y1][:, x0] * (1 - wx)[None, :, None] + grid[y1][:, x1] * wx[None, :, None]
    out = top * (1 - wy)[:, None, None] + bottom * wy[:, None, None]
    return np.concatenate([table[:1], out.reshape(dh * dw, -1)], axis=0)


def _vit_cfg(weights, size=(256, 128), stride=(16, 16), arch="ViT-Tiny-16", **backbone):
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.CLIP_NAME = arch
    cfg.MODEL.BACKBONE.PRETRAIN = weights is not None
    cfg.MODEL.BACKBONE.PRETRAIN_PATH = weights or ""
    cfg.MODEL.BACKBONE.STRIDE_SIZE = stride
    cfg.INPUT.SIZE_TRAIN = list(size)
    cfg.INPUT.SIZE_TEST = list(size)
    for k, v in backbone.items():
        cfg.MODEL.BACKBONE[k] = v
    return cfg


def check_vit_parity(path, reference, arch):
    """At CLIP's own geometry our projected feature equals open_clip's encode_image."""
    towers = build_clip_towers(_vit_cfg(path, size=(224, 224), arch=arch))
    torch.manual_seed(1)
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ours = towers.image.eval()(images)
        ref = reference.encode_image(images)
    assert_close_ulps(ours.proj, ref, TOWER_ULPS)
    # CLIP's geometry: the table is the checkpoint's own, copied
    assert torch.equal(towers.image.visual.positional_embedding, reference.visual.positional_embedding)
    tokens = towers.text.tokenize(["a photo of a person.", "a man in a red shirt"])
    with torch.no_grad():
        assert_close_ulps(towers.text(tokens), reference.encode_text(tokens), TOWER_ULPS)


def check_vit_geometry(path, reference, arch, stride, grid):
    towers = build_clip_towers(_vit_cfg(path, stride=stride, arch=arch))
    visual = towers.image.visual
    assert visual.conv1.stride == stride and visual.grid_size == grid
    src = reference.visual.positional_embedding.detach().numpy()
    side = int(round((src.shape[0] - 1) ** 0.5))
    expected = bilinear_reference(src, (side, side), grid)
    assert_resized_like(visual.positional_embedding.detach().numpy(), expected, grid)
    with torch.no_grad():
        feats = towers.image(torch.randn(2, 3, 256, 128), project_tokens=True)
    width = reference.visual.class_embedding.shape[0]
    assert feats.tokens.shape == (2, 1 + grid[0] * grid[1], width)
    assert feats.inter.shape == feats.final.shape == (2, width)
    assert feats.proj.shape == (2, reference.visual.proj.shape[1])
    # A [B, T, W] @ [W, P] product vs a [B, W] @ [W, P] one: the same width-term dot products, other shapes.
    proj = towers.image.visual.proj.detach()
    assert_close_ulps(feats.tokens_proj[:, 0], feats.proj, dot_ulps(proj.shape[0]),
                      magnitude=(feats.tokens[:, 0].abs() @ proj.abs()).numpy())


def check_resnet_geometry(path, reference, arch):
    model = build_clip_model(arch, path, ClipGeometry(image_size=(256, 128), last_stride=1))
    src = reference.visual.attnpool.positional_embedding.detach().numpy()
    expected = bilinear_reference(src, (7, 7), (16, 8))
    assert_resized_like(model.visual.attnpool.positional_embedding.detach().numpy(), expected, (16, 8))
    backbone = ClipResNetBackbone(model.visual).eval()
    with torch.no_grad():
        feats = backbone(torch.randn(2, 3, 256, 128))
    width = reference.visual.attnpool.k_proj.in_features
    assert feats.tokens.shape == (2, 16 * 8, width)
    assert feats.final.shape == (2, width) and feats.inter.shape == (2, width // 2)
    assert feats.proj.shape == (2, reference.visual.attnpool.c_proj.out_features)
    # CLIP's own geometry (224, last stride 2): the projected feature is encode_image's.
    native = ClipResNetBackbone(build_clip_model(arch, path, ClipGeometry((224, 224), last_stride=2)).visual).eval()
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert_close_ulps(native(images).proj, reference.encode_image(images), TOWER_ULPS)


@pytest.mark.parametrize("fmt", ["bin", "safetensors", "ddp"])
def test_tiny_vit_parity_every_file_format(tmp_path, fmt):
    path = str(tmp_path / f"w.{ 'safetensors' if fmt == 'safetensors' else 'pt'}")
    reference = save_random_clip("ViT-Tiny-16", path, seed=3, fmt=fmt)
    check_vit_parity(path, reference, "ViT-Tiny-16")


@pytest.mark.parametrize("stride,grid", [((16, 16), (16, 8)), ((12, 12), (21, 10))])
def test_tiny_vit_position_table_is_bilinear(tiny_weights, stride, grid):
    path, reference = tiny_weights["ViT-Tiny-16"]
    check_vit_geometry(path, reference, "ViT-Tiny-16", stride, grid)


def test_tiny_resnet_geometry_and_parity(tiny_weights):
    path, reference = tiny_weights["RN-Tiny"]
    check_resnet_geometry(path, reference, "RN-Tiny")


def test_sie_changes_only_the_class_token(tiny_weights):
    path, _ = tiny_weights["ViT-Tiny-16"]
    cfg = _vit_cfg(path, SIE_CAMERA=True, NUM_CAMERAS=3, SIE_COE=1.0)
    backbone = build_clip_towers(cfg).image.eval()
    assert isinstance(backbone, ClipViTBackbone) and backbone.sie_embed.shape == (3, 64)
    images = torch.randn(1, 3, 256, 128).repeat(2, 1, 1, 1)
    cams = torch.tensor([0, 2])
    with torch.no_grad():
        emb = backbone.embed(images, camids=cams)
        emb_ln = backbone.visual.ln_pre  # ln_pre is per token: patch tokens must be identical
        # Two copies of one image in one batch: per-sample kernels (conv, layer norm) give them the same bits.
        assert torch.equal(emb[0, 1:], emb[1, 1:])
        assert not torch.allclose(emb[0, 0], emb[1, 0])
        # Exactly class + coe * E[c] + pos before ln_pre: one 64-wide layer norm vs a batched one (its mean and
        # variance sum 64 terms in another order): a few ulps of the largest output.
        visual = backbone.visual
        raw_cls = visual.class_embedding + backbone.sie_embed[2] + visual.positional_embedding[0]
        assert_close_ulps(emb[1, 0], emb_ln(raw_cls), 16)
        assert not torch.allclose(backbone(images, camids=cams).final[0], backbone(images, camids=cams).final[1])
    with pytest.raises(ValueError, match="camids"):
        backbone(images)


def test_text_encoder_truncated_context_equals_full(tiny_weights):
    path, reference = tiny_weights["ViT-Tiny-16"]
    text = CLIPTextEncoder.from_open_clip(build_clip_model("ViT-Tiny-16", path, ClipGeometry()), "ViT-Tiny-16")
    tokens = text.tokenize(["A photo of a X X X X person.", "a person"])
    embeds = text.embed_tokens(tokens)
    eot = tokens.argmax(-1)
    with torch.no_grad():
        truncated = text.encode_embeddings(embeds, eot)
        full = reference.encode_text(tokens)
        ours_full = text.encode_embeddings(embeds, eot, truncate=False)
    assert_close_ulps(ours_full, full, TOWER_ULPS)
    assert eot.tolist() == [11, 3]  # SOS a person EOT
    assert_close_ulps(truncated, full, TOWER_ULPS)  # 12 tokens instead of 77: other attention shapes


def test_missing_weight_file_names_file_and_arch(tmp_path):
    missing = str(tmp_path / "nope" / "ViT-B-16.safetensors")
    with pytest.raises(WeightFileError, match=r"nope/ViT-B-16.safetensors.*'ViT-Tiny-16'.*PRETRAIN_PATH"):
        build_clip_model("ViT-Tiny-16", missing, ClipGeometry())


def test_relative_weight_path_is_also_looked_up_from_the_project_root(tmp_path, monkeypatch):
    from fastreid_clip.modeling.backbones.weights import PROJECT_ROOT, resolve_weight_path

    shipped = "weights/synthetic_clip/ViT-Tiny-16-synthetic.safetensors"  # what configs/Synthetic/ name
    monkeypatch.chdir(tmp_path)  # not the repository: the relative path does not exist from here
    assert resolve_weight_path(shipped) == os.path.join(PROJECT_ROOT, shipped)
    local = tmp_path / "weights" / "synthetic_clip" / "ViT-Tiny-16-synthetic.safetensors"
    local.parent.mkdir(parents=True)
    local.write_bytes(b"")
    assert resolve_weight_path(shipped) == shipped  # the working directory wins where the file exists there
    with pytest.raises(WeightFileError, match=rf"weights/none.safetensors.*does not exist \(looked in {tmp_path} and"):
        build_clip_model("ViT-Tiny-16", "weights/none.safetensors", ClipGeometry())


def test_weight_file_for_another_architecture(tiny_weights):
    rn_path, _ = tiny_weights["RN-Tiny"]
    with pytest.raises(WeightFileError, match=r"RN-Tiny.bin.*'ViT-Tiny-16'.*ModifiedResNet.*CLIP_NAME"):
        build_clip_model("ViT-Tiny-16", rn_path, ClipGeometry())


def test_torchscript_archive_needs_trust_flag(tmp_path):
    import warnings

    reference = save_random_clip("ViT-Tiny-16", str(tmp_path / "unused.bin"), seed=5)
    path = str(tmp_path / "ViT-Tiny-16-openai.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(reference, (torch.randn(1, 3, 224, 224), torch.zeros(1, 77, dtype=torch.long)),
                                 check_trace=False)
    traced.save(path)
    with pytest.raises(WeightFileError, match=r"ViT-Tiny-16-openai.pt.*TorchScript.*TRUST_TORCHSCRIPT.*convert_openai_clip"):
        build_clip_model("ViT-Tiny-16", path, ClipGeometry())
    trusted = build_clip_model("ViT-Tiny-16", path, ClipGeometry((224, 224)), trust_torchscript=True)
    for name, value in reference.state_dict().items():
        assert torch.equal(trusted.state_dict()[name], value), name


def test_random_init_requires_explicit_choice():
    cfg = _vit_cfg(None)
    cfg.MODEL.BACKBONE.PRETRAIN = True
    cfg.MODEL.BACKBONE.PRETRAIN_PATH = ""
    with pytest.raises(WeightFileError, match="PRETRAIN_PATH is empty"):
        build_clip_towers(cfg)


@pytest.mark.large
@pytest.mark.parametrize("stride,grid", [((16, 16), (16, 8)), ((12, 12), (21, 10))])
def test_vit_b16_parity_and_geometry(tmp_path_factory, stride, grid):
    path = str(tmp_path_factory.mktemp("vitb16") / "ViT-B-16.safetensors")
    reference = save_random_clip("ViT-B-16", path, fmt="safetensors")
    check_vit_parity(path, reference, "ViT-B-16")
    check_vit_geometry(path, reference, "ViT-B-16", stride, grid)


@pytest.mark.large
def test_rn50_geometry_and_parity(tmp_path):
    path = str(tmp_path / "RN50.bin")
    reference = save_random_clip("RN50", path)
    check_resnet_geometry(path, reference, "RN50")
