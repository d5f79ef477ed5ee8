"""The multi-target evaluation (DG.MULTI_TARGET): one row per target, splits of the small DG sets averaged
(DG.SPLITS), and the average row."""

import os

import pytest
from PIL import Image

from conftest import tiny_cfg
from fastreid_clip.evaluation.multi_target import evaluate_targets, format_target_table

CONFIG = "configs/Synthetic/clip_fgdi_vit_tiny.yml"


def _fake_results(calls):
    def evaluate_one(cfg, name):
        calls.append((name, cfg.DG.SPLIT_ID))
        base = 10.0 * (1 + len(calls)) if name == "VIPeRTest" else 50.0
        return {"mAP": base, "Rank-1": base + 1, "Rank-5": base + 2, "Rank-10": base + 3, "mINP": 0.0}
    return evaluate_one


@pytest.mark.parametrize("mode,splits", [("single9", [9]), ("avg10", list(range(10)))])
def test_rows_average_splits_and_targets(mode, splits):
    cfg = tiny_cfg("/tmp/unused", "DATASETS.TESTS", '("SyntheticReID", "VIPeRTest")', "DG.SPLITS", mode,
                   config=CONFIG)
    calls = []
    rows = evaluate_targets(cfg, _fake_results(calls))
    assert calls == [("SyntheticReID", -1)] + [("VIPeRTest", k) for k in splits]
    viper = sum(10.0 * (3 + i) for i in range(len(splits))) / len(splits)  # calls 2, 3, ... of the fake
    assert rows["VIPeRTest"]["mAP"] == pytest.approx(viper)
    assert rows["SyntheticReID"]["Rank-10"] == 53.0
    assert list(rows) == ["SyntheticReID", "VIPeRTest", "Average"]
    assert rows["Average"]["Rank-1"] == pytest.approx((51.0 + viper + 1) / 2)
    table = format_target_table(rows)
    assert table.splitlines()[0] == "| Target | mAP | R1 | R5 | R10 |" and "| Average |" in table


def test_non_main_process_results_pass_through():
    cfg = tiny_cfg("/tmp/unused", config=CONFIG)
    assert evaluate_targets(cfg, lambda c, n: {}) == {}


def test_trainer_evaluates_two_targets(datasets_root):
    from fastreid_clip.engine import ClipTrainer

    for pid in range(24):  # 12 test identities: a gallery of 12 >= rank 10
        for cam, folder in ((0, "cam_a"), (90, "cam_b")):
            path = os.path.join(datasets_root, "VIPeR", folder, f"{pid:03d}_{cam}.bmp")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            Image.new("RGB", (48, 128), (10 * pid, 20, 240 - 10 * pid)).save(path)
    cfg = tiny_cfg("/tmp/unused", "DATASETS.TESTS", '("SyntheticReID", "VIPeRTest")', "DG.MULTI_TARGET", "True",
                   "DATASETS.SYNTHETIC.IMAGES_PER_ID_CAMERA", "2", "MODEL.HEADS.NUM_CLASSES", "32", config=CONFIG)
    cfg.freeze()
    model = ClipTrainer.build_model(cfg)
    model.eval()
    rows = ClipTrainer.test(cfg, model)
    assert list(rows) == ["SyntheticReID", "VIPeRTest", "Average"]
    for values in rows.values():
        assert 0 < values["mAP"] <= 100 and values["Rank-1"] <= values["Rank-5"] <= values["Rank-10"] <= 100
