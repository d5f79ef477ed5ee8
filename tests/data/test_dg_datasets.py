"""CUHK02 and the evaluation versions of GRID / VIPeR / PRID / iLIDS read their layouts (tiny fake trees) and build
seeded query / gallery splits with the protocols of docs/clip_fgdi.md."""

import os

import fastreid_clip  # noqa: F401
import pytest
from fastreid.data.datasets import DATASET_REGISTRY
from PIL import Image

from fastreid_clip.config import get_cfg
from fastreid_clip.config.validate import ConfigValueError
from fastreid_clip.data.datasets.dg_small import split_ids_of


def _touch(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (8, 16)).save(path)


def _names(items):
    return sorted((os.path.basename(p), pid, cam) for p, pid, cam in items)


def test_cuhk02_layout(tmp_path):
    for pair in ("P1", "P2", "P3", "P4", "P5"):
        for cam in (1, 2):
            for pid in ("0001", "0002"):
                _touch(str(tmp_path / "cuhk02" / "Dataset" / pair / f"cam{cam}" / f"{pid}_{cam}0.png"))
    data = DATASET_REGISTRY.get("CUHK02")(root=str(tmp_path), verbose=False)
    assert len(data.train) == 16 and len({pid for _, pid, _ in data.train}) == 8  # pids namespaced per pair
    assert ("0001_10.png", "cuhk02_P1_0001", "cuhk02_P1_cam1") in _names(data.train)
    assert _names(data.query) == [("0001_10.png", 1, 0), ("0002_10.png", 2, 0)]
    assert _names(data.gallery) == [("0001_20.png", 1, 1), ("0002_20.png", 2, 1)]
    combined = DATASET_REGISTRY.get("CUHK02")(root=str(tmp_path), verbose=False, combineall=True)
    assert len(combined.train) == 20 and len({pid for _, pid, _ in combined.train}) == 10  # P5 joins training


def test_cuhk02_missing_pair_is_named(tmp_path):
    (tmp_path / "cuhk02" / "Dataset" / "P1").mkdir(parents=True)
    with pytest.raises(RuntimeError, match="P2"):
        DATASET_REGISTRY.get("CUHK02")(root=str(tmp_path), verbose=False)


def _viper(root, n=10):
    for pid in range(n):
        _touch(f"{root}/VIPeR/cam_a/{pid:03d}_0.bmp")
        _touch(f"{root}/VIPeR/cam_b/{pid:03d}_90.bmp")


def test_viper_splits(tmp_path):
    _viper(tmp_path)
    cls = DATASET_REGISTRY.get("VIPeRTest")
    data = cls(root=str(tmp_path), split_id=9, verbose=False)
    assert data.train == [] and len(data.query) == 5 and len(data.gallery) == 5
    assert {pid for _, pid, _ in data.query} == {pid for _, pid, _ in data.gallery}
    assert {c for _, _, c in data.query} == {0} and {c for _, _, c in data.gallery} == {1}
    again = cls(root=str(tmp_path), split_id=9, verbose=False)
    assert again.query == data.query  # seeded
    splits = {tuple(sorted(pid for _, pid, _ in cls(root=str(tmp_path), split_id=k, verbose=False).query))
              for k in range(10)}
    assert len(splits) > 1  # the splits differ
    with pytest.raises(ValueError, match="DG.SPLIT_ID"):
        cls(root=str(tmp_path), split_id=10, verbose=False)


def test_prid_protocol(tmp_path):
    for pid in range(1, 7):  # paired persons (num_paired lowered for the tiny tree)
        _touch(f"{tmp_path}/prid_2011/single_shot/cam_a/person_{pid:04d}.png")
        _touch(f"{tmp_path}/prid_2011/single_shot/cam_b/person_{pid:04d}.png")
    for pid in range(7, 10):  # cam_b only: distractors
        _touch(f"{tmp_path}/prid_2011/single_shot/cam_b/person_{pid:04d}.png")
    cls = DATASET_REGISTRY.get("PRIDTest")

    class Tiny(cls):
        num_paired = 6

    data = Tiny(root=str(tmp_path), split_id=0, verbose=False)
    test = {pid for _, pid, _ in data.query}
    assert len(test) == 3
    assert {pid for _, pid, _ in data.gallery} == test | {7, 8, 9}


def test_grid_protocol(tmp_path):
    for pid in range(1, 5):
        _touch(f"{tmp_path}/underground_reid/probe/{pid:04d}_1_25004_107_32_106_221.jpeg")
        _touch(f"{tmp_path}/underground_reid/gallery/{pid:04d}_5_25004_107_32_106_221.jpeg")
    for k in range(3):
        _touch(f"{tmp_path}/underground_reid/gallery/0000_{k + 2}_1000{k}_1_2_3_4.jpeg")
    data = DATASET_REGISTRY.get("GRIDTest")(root=str(tmp_path), split_id=3, verbose=False)
    test = {pid for _, pid, _ in data.query}
    assert len(test) == 2 and {c for _, _, c in data.query} == {0}
    assert sorted(pid for _, pid, _ in data.gallery) == [0, 0, 0] + sorted(test)
    assert {c for _, pid, c in data.gallery if pid} == {4}


def test_ilids_protocol(tmp_path):
    for pid in range(1, 6):
        for n in range(3):
            _touch(f"{tmp_path}/i-LIDS_Pedestrian/Persons/{pid:04d}{n:03d}.jpg")
    data = DATASET_REGISTRY.get("iLIDSTest")(root=str(tmp_path), split_id=9, verbose=False)
    test = {pid for _, pid, _ in data.query}
    assert len(data.query) == len(test) == 3  # one query per test identity
    assert len(data.gallery) == 6 and {pid for _, pid, _ in data.gallery} == test
    assert not {p for p, _, _ in data.query} & {p for p, _, _ in data.gallery}


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(RuntimeError, match="cam_a"):
        DATASET_REGISTRY.get("VIPeRTest")(root=str(tmp_path), verbose=False)


def test_dg_splits_key():
    cfg = get_cfg()
    assert cfg.DG.SPLITS == "single9" and split_ids_of(cfg) == [9]
    cfg.DG.SPLITS = "avg10"
    assert split_ids_of(cfg) == list(range(10))
    cfg.DG.SPLITS = "all"
    with pytest.raises(ConfigValueError, match="DG.SPLITS"):
        split_ids_of(cfg)
