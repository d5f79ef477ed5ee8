"""Training sets with extra augmented views (INPUT.VIEWS): unchanged batches without views; with views, each item
holds V independent draws of the view pipeline (erasing of a fixed 1/3 area for SVLL-ReID)."""

import random

import numpy as np
import pytest
import torch
from fastreid.data.build import fast_batch_collator
from PIL import Image

from conftest import tiny_cfg
from fastreid_clip.config import ConfigValueError
from fastreid_clip.data.build import ReIDImageDataset, build_clip_train_set
from fastreid_clip.data.multi_view import MultiViewReIDDataset, build_view_transforms
from fastreid_clip.data.transforms import build_clip_transforms


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    out = []
    for i in range(4):
        path = str(root / f"{i}.png")
        Image.fromarray(np.full((64, 32, 3), 40 + 50 * i, dtype=np.uint8)).save(path)
        out.append((path, f"set_{i // 2}", f"set_{i % 2}"))
    return out


def _cfg(*opts):
    return tiny_cfg("unused", *opts)


def _seeded(seed=0):
    random.seed(seed)
    torch.manual_seed(seed)


def test_without_views_the_items_are_unchanged(items):
    cfg = _cfg()
    assert build_view_transforms(cfg) == []  # INPUT.VIEWS.NUM 0 by default
    plain = ReIDImageDataset(items, build_clip_transforms(cfg, is_train=True))
    _seeded()
    expected = [plain[i] for i in range(4)]
    assert set(expected[0]) == {"images", "targets", "camids", "img_paths"}
    views = MultiViewReIDDataset(items, build_clip_transforms(cfg, is_train=True),
                                 build_view_transforms(_cfg("INPUT.VIEWS.NUM", "2")))
    _seeded()
    got = [views[i] for i in range(4)]
    for a, b in zip(expected, got):
        # the main image is drawn first, with the same transform: the first item is identical
        assert set(b) == set(a) | {"views"} and a["targets"] == b["targets"] and a["camids"] == b["camids"]
    assert torch.equal(expected[0]["images"], got[0]["images"])


def test_views_are_independent_draws_with_a_third_erased(items):
    # no flip / pad, erasing always: a view differs from the plain resized image exactly inside the rectangle
    cfg = _cfg("INPUT.VIEWS.NUM", "3", "INPUT.VIEWS.REA.PROB", "1.0", "INPUT.FLIP.ENABLED", "False",
               "INPUT.PADDING.ENABLED", "False", "INPUT.REA.ENABLED", "False")
    dataset = MultiViewReIDDataset(items, build_clip_transforms(cfg, is_train=True), build_view_transforms(cfg))
    _seeded(1)
    item = dataset[2]
    assert item["views"].shape == (3, 3, 256, 128) and item["images"].shape == (3, 256, 128)
    plain = item["images"]  # no erasing on the main image (INPUT.REA off): the resized constant image
    for view in item["views"]:
        erased = (view != plain).any(dim=0)
        fraction = erased.float().mean().item()
        assert abs(fraction - 1 / 3) < 0.01, fraction  # area U(0.33, 1/3), rounded to whole pixels
        rows, cols = erased.nonzero(as_tuple=True)  # one rectangle
        assert erased[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()
    assert not torch.equal(item["views"][0], item["views"][1])


def test_batches_stack_the_views(items):
    cfg = _cfg("INPUT.VIEWS.NUM", "2")
    dataset = MultiViewReIDDataset(items, build_clip_transforms(cfg, is_train=True), build_view_transforms(cfg))
    batch = fast_batch_collator([dataset[i] for i in range(4)])
    assert batch["views"].shape == (4, 2, 3, 256, 128) and batch["images"].shape == (4, 3, 256, 128)
    assert batch["targets"].tolist() == [0, 0, 1, 1]


def test_train_set_follows_input_views(datasets_root):
    plain = build_clip_train_set(_cfg())
    assert type(plain) is ReIDImageDataset
    views = build_clip_train_set(_cfg("INPUT.VIEWS.NUM", "2"))
    assert isinstance(views, MultiViewReIDDataset) and views.num_views == 2 and len(views) == len(plain)
    assert views[0]["views"].shape == (2, 3, 256, 128)


@pytest.mark.parametrize("key,value", [("INPUT.VIEWS.NUM", "-2"), ("INPUT.VIEWS.REA.PROB", "1.5"),
                                       ("INPUT.VIEWS.REA.AREA", "(0.0, 0.3)")])
def test_bad_view_values_name_the_key(key, value):
    with pytest.raises(ConfigValueError) as err:
        build_view_transforms(_cfg(key, value))
    assert err.value.key == key
