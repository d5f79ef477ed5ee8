"""Multi-source training items: DATASETS.COMBINEALL_PER_SOURCE (combineall chosen per source) and
DATASETS.COMBINEALL_KEEP_PID0 (Market-1501's background pid 0 kept as one identity under combineall, as the
CLIP-FGDI reference's P1), on tiny fake Market-1501 and CUHK02 trees."""

import logging
import os

import fastreid_clip  # noqa: F401
import pytest
from PIL import Image

from fastreid_clip.config import get_cfg
from fastreid_clip.config.validate import ConfigValueError, validate_train_config
from fastreid_clip.data.build import train_items

MARKET = "Market-1501-v15.09.15"
# (folder, pid, camera 1-based, count): train ids 1, 2; query / gallery id 3; background 0 and junk -1 in the gallery
MARKET_FILES = [
    ("bounding_box_train", 1, 1, 2), ("bounding_box_train", 1, 2, 1), ("bounding_box_train", 2, 3, 2),
    ("query", 3, 1, 1), ("bounding_box_test", 3, 2, 2),
    ("bounding_box_test", 0, 1, 2), ("bounding_box_test", 0, 3, 1), ("bounding_box_test", -1, 2, 2),
]


def _touch(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (8, 16)).save(path)


@pytest.fixture
def fake_root(tmp_path, monkeypatch):
    """A dataset root with a fake Market-1501 (FastReID's layout and file-name regex) and a fake CUHK02."""
    for folder, pid, cam, count in MARKET_FILES:
        for i in range(count):
            name = f"{pid:04d}_c{cam}s1_{i:06d}_00.jpg" if pid >= 0 else f"-1_c{cam}s1_{i:06d}_00.jpg"
            _touch(str(tmp_path / MARKET / folder / name))
    for pair in ("P1", "P2", "P3", "P4", "P5"):
        for cam in (1, 2):
            _touch(str(tmp_path / "cuhk02" / "Dataset" / pair / f"cam{cam}" / f"0001_{cam}0.png"))
    monkeypatch.setenv("FASTREID_DATASETS", str(tmp_path))
    return tmp_path


def _cfg(*opts):
    cfg = get_cfg()
    cfg.merge_from_list(["DATASETS.NAMES", '("Market1501", "CUHK02")', "DATASETS.TESTS", "()", *opts])
    return cfg


def _by_source(items, sources, k):
    return [item for item, s in zip(items, sources) if s == k]


def _pid0_paths(root):
    return sorted(str(p) for p in (root / MARKET / "bounding_box_test").glob("0000_*.jpg"))


def test_defaults_keep_fastreid_behaviour():
    cfg = get_cfg()
    assert cfg.DATASETS.COMBINEALL_PER_SOURCE == () and cfg.DATASETS.COMBINEALL_KEEP_PID0 is False


def test_combineall_is_chosen_per_source(fake_root):
    items, sources = train_items(_cfg("DATASETS.COMBINEALL_PER_SOURCE", "(True, False)"), with_sources=True)
    market, cuhk02 = _by_source(items, sources, 0), _by_source(items, sources, 1)
    assert len(market) == 5 + 3 and {pid for _, pid, _ in market} == {"market1501_1", "market1501_2",
                                                                        "market1501_test_3"}
    assert len(cuhk02) == 8 and not any("P5" in p for p, _, _ in cuhk02)  # train split only: pairs P1-P4
    items, sources = train_items(_cfg("DATASETS.COMBINEALL_PER_SOURCE", "(False, True)"), with_sources=True)
    market, cuhk02 = _by_source(items, sources, 0), _by_source(items, sources, 1)
    assert len(market) == 5 and {pid for _, pid, _ in market} == {"market1501_1", "market1501_2"}
    assert len(cuhk02) == 10 and sum("P5" in p for p, _, _ in cuhk02) == 2
    # () follows DATASETS.COMBINEALL for every source
    items, sources = train_items(_cfg("DATASETS.COMBINEALL", "True"), with_sources=True)
    assert len(_by_source(items, sources, 0)) == 8 and len(_by_source(items, sources, 1)) == 10


def test_train_items_log_says_per_source_whether_combineall_was_used(fake_root):
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    log = logging.getLogger("fastreid_clip.data.build")
    log.addHandler(handler)
    try:
        train_items(_cfg("DATASETS.COMBINEALL_PER_SOURCE", "(True, False)"))
    finally:
        log.removeHandler(handler)
    lines = [r.getMessage() for r in records if "training source" in r.getMessage()]
    assert len(lines) == 2
    assert "'Market1501'" in lines[0] and "combineall used" in lines[0]
    assert "'CUHK02'" in lines[1] and "combineall not used" in lines[1]


def test_keep_pid0_adds_the_background_as_one_identity(fake_root):
    without = train_items(_cfg("DATASETS.COMBINEALL", "True"))
    with_pid0 = train_items(_cfg("DATASETS.COMBINEALL", "True", "DATASETS.COMBINEALL_KEEP_PID0", "True"))
    assert len({pid for _, pid, _ in with_pid0}) == len({pid for _, pid, _ in without}) + 1
    background = [item for item in with_pid0 if item[1] == "market1501_test_0"]
    assert sorted(p for p, _, _ in background) == _pid0_paths(fake_root)  # all 3 pid-0 images, one identity
    assert sorted(c for _, _, c in background) == ["market1501_test_0", "market1501_test_0", "market1501_test_2"]
    assert not any(os.path.basename(p).startswith("0000_") for p, _, _ in without)  # FastReID drops pid 0
    for items in (without, with_pid0):  # pid -1 never
        assert not any(os.path.basename(p).startswith("-1_") for p, _, _ in items)
    assert [i for i in with_pid0 if i[1] != "market1501_test_0"] == without  # nothing else changes


def test_keep_pid0_needs_combineall_and_a_junk_pid0(fake_root):
    # Market trained on its train split: the switch changes nothing (the background is test data)
    plain = train_items(_cfg("DATASETS.COMBINEALL_PER_SOURCE", "(False, True)"))
    kept = train_items(_cfg("DATASETS.COMBINEALL_PER_SOURCE", "(False, True)", "DATASETS.COMBINEALL_KEEP_PID0",
                            "True"))
    assert kept == plain
    # CUHK02 has no junk pids: its combined items are the same either way
    cuhk = train_items(_cfg("DATASETS.NAMES", '("CUHK02",)', "DATASETS.COMBINEALL", "True"))
    cuhk_kept = train_items(_cfg("DATASETS.NAMES", '("CUHK02",)', "DATASETS.COMBINEALL", "True",
                                 "DATASETS.COMBINEALL_KEEP_PID0", "True"))
    assert cuhk_kept == cuhk and len(cuhk) == 10


@pytest.mark.parametrize("value", ["(True,)", "(True, False, True)", "(1, 0)", "('yes', 'no')"])
def test_bad_per_source_value_fails_before_data(value):
    cfg = _cfg("DATASETS.COMBINEALL_PER_SOURCE", value)  # no dataset tree anywhere: validation comes first
    with pytest.raises(ConfigValueError) as err:
        validate_train_config(cfg)
    assert err.value.key == "DATASETS.COMBINEALL_PER_SOURCE"
    assert "len(DATASETS.NAMES) = 2" in str(err.value)


def test_keep_pid0_must_be_a_bool():
    cfg = _cfg()
    cfg.DATASETS.COMBINEALL_KEEP_PID0 = 1  # set in code (yacs itself refuses a non-bool from a file or the CLI)
    with pytest.raises(ConfigValueError) as err:
        validate_train_config(cfg)
    assert err.value.key == "DATASETS.COMBINEALL_KEEP_PID0"
