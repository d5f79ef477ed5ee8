"""Occluded-Duke is registered and reads its standard folder layout."""

import fastreid_clip  # noqa: F401
from fastreid.data.datasets import DATASET_REGISTRY
from PIL import Image


def test_occluded_duke_layout(tmp_path):
    root = tmp_path / "Occluded_Duke"
    files = {"bounding_box_train": ["0001_c1_f0046182.jpg", "0001_c5_f0046183.jpg", "0003_c8_f0000001.jpg"],
             "query": ["0005_c2_f0000002.jpg"], "bounding_box_test": ["0005_c3_f0000003.jpg", "0007_c1_f0000004.jpg"]}
    for folder, names in files.items():
        (root / folder).mkdir(parents=True)
        for name in names:
            Image.new("RGB", (64, 128)).save(root / folder / name)
    data = DATASET_REGISTRY.get("OccludedDuke")(root=str(tmp_path))
    train = sorted((p.rsplit("/", 1)[1], pid, cam) for p, pid, cam in data.train)
    assert train == [("0001_c1_f0046182.jpg", "occludedduke_1", "occludedduke_0"),
                     ("0001_c5_f0046183.jpg", "occludedduke_1", "occludedduke_4"),
                     ("0003_c8_f0000001.jpg", "occludedduke_3", "occludedduke_7")]
    assert [(pid, cam) for _, pid, cam in data.query] == [(5, 1)]
    assert sorted((pid, cam) for _, pid, cam in data.gallery) == [(5, 2), (7, 0)]
