"""Every shipped config loads; bad keys fail with the file and the key named."""

import glob
import os

import pytest

from fastreid_clip.config import get_cfg, merge_config_file
from fastreid_clip.config.setup import ConfigKeyError
from fastreid_clip.config.stages import stage_specs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.yml"), recursive=True))


def test_there_are_configs():
    assert len(CONFIGS) >= 16


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, ROOT))
def test_config_loads(path):
    from fastreid.modeling.meta_arch import META_ARCH_REGISTRY

    cfg = merge_config_file(get_cfg(), path)
    assert cfg.MODEL.META_ARCHITECTURE in META_ARCH_REGISTRY._obj_map
    assert META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE).__module__.startswith("fastreid_clip.")
    assert tuple(cfg.INPUT.SIZE_TRAIN) == tuple(cfg.INPUT.SIZE_TEST)
    assert all(stage.epochs > 0 for stage in stage_specs(cfg))  # stages (or SOLVER.*) are valid for ClipTrainer
    if os.path.basename(path).startswith(("Base-", "clip_")):
        return
    if "CLIP-FGDI" in path:  # domain generalisation: several sources, evaluated on held-out targets
        assert len(cfg.DATASETS.NAMES) >= 3 and cfg.DATASETS.TESTS
        assert not set(cfg.DATASETS.NAMES) & set(cfg.DATASETS.TESTS)
        return
    assert len(cfg.DATASETS.NAMES) == 1
    assert cfg.DATASETS.TESTS == cfg.DATASETS.NAMES or cfg.DATASETS.TESTS == ("SmallVehicleID",)


def test_paper_values_vit_and_rn50():
    vit = merge_config_file(get_cfg(), os.path.join(ROOT, "configs/CLIP-Baseline/market_vit.yml"))
    assert vit.SOLVER.BASE_LR == 5e-6 and vit.SOLVER.STEPS == [30, 50] and vit.SOLVER.MAX_EPOCH == 60
    assert vit.MODEL.PIXEL_MEAN == [127.5] * 3 and vit.MODEL.LOSSES.TRI.MARGIN == 0.3
    rn = merge_config_file(get_cfg(), os.path.join(ROOT, "configs/CLIP-Baseline/msmt17_rn50.yml"))
    assert rn.MODEL.BACKBONE.CLIP_NAME == "RN50" and rn.SOLVER.BASE_LR == 3.5e-4 and rn.SOLVER.STEPS == [40, 70]
    assert rn.MODEL.PIXEL_MEAN == pytest.approx([123.675, 116.28, 103.53])


def test_clip_reid_paper_values():
    def load(name):
        return merge_config_file(get_cfg(), os.path.join(ROOT, "configs/CLIP-ReID", name))

    vit = load("market_vit.yml")
    assert vit.STAGES.NAMES == ("prompt", "image") and vit.MODEL.LOSSES.CE.SCALE == 0.25
    assert (vit.STAGES.PROMPT.EPOCHS, vit.STAGES.PROMPT.BASE_LR, vit.STAGES.PROMPT.SCHED) == (120, 3.5e-4, "CosineEpochLR")
    assert (vit.STAGES.IMAGE.EPOCHS, vit.STAGES.IMAGE.BASE_LR, vit.STAGES.IMAGE.STEPS) == (60, 5e-6, [30, 50])
    olp = load("msmt17_vit_sie_olp.yml")
    assert olp.MODEL.BACKBONE.STRIDE_SIZE == (12, 12) and olp.MODEL.BACKBONE.SIE_CAMERA
    assert olp.MODEL.BACKBONE.SIE_COE == 1.0
    rn = load("duke_rn50.yml")
    assert rn.MODEL.LOSSES.CE.SCALE == 1.0 and rn.STAGES.PROMPT.EPOCHS == 60 and rn.STAGES.IMAGE.EPOCHS == 120
    for name in ("veri_vit.yml", "veri_rn50.yml", "vehicleid_vit_olp.yml"):
        vehicle = load(name)
        assert vehicle.MODEL.PROMPT.CLASS_WORD == "vehicle" and vehicle.INPUT.SIZE_TRAIN == [256, 256]
    assert load("vehicleid_rn50.yml").MODEL.BACKBONE.CLIP_NAME == "RN50"


def test_unknown_key_names_file_and_closest_key(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("MODEL:\n  BACKBONE:\n    CLIP_NAM: ViT-B-16\n")
    with pytest.raises(ConfigKeyError, match=r"bad.yml.*MODEL.BACKBONE.CLIP_NAM.*MODEL.BACKBONE.CLIP_NAME"):
        merge_config_file(get_cfg(), str(bad))


def test_unknown_command_line_key():
    with pytest.raises(ConfigKeyError, match="command-line override.*SOLVER.BASE_LRR"):
        merge_config_file(get_cfg(), CONFIGS[0], ["SOLVER.BASE_LRR", "0.1"])


def test_missing_config_file():
    with pytest.raises(FileNotFoundError, match="nope.yml"):
        merge_config_file(get_cfg(), "nope.yml")
