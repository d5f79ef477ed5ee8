"""Tests of the procedural synthetic ReID data set (fastreid_clip.data.synthetic)."""

import dataclasses
import json
import os
import re

import fastreid_clip  # noqa: F401  (must precede any fastreid import)
import numpy as np
import pytest
from PIL import Image

from fastreid_clip.data.synthetic import (
    IdentityAttributes,
    SyntheticParams,
    SyntheticReID,
    add_synthetic_config,
    caption,
    export_market1501,
    generate_synthetic_reid,
    load_meta,
    sample_identities,
    synthetic_kwargs_from_cfg,
)
from fastreid_clip.data.synthetic import attributes as vocab
from fastreid_clip.data.synthetic import dataset as synthetic_dataset

# 30 test identities (chance Rank-1 1/30), 3 of 4 cameras each, 2 images per camera: 216 images.
SMALL = dict(num_train_ids=6, num_test_ids=30, num_cameras=4, cameras_per_id=3, images_per_id_camera=2, num_domains=3)
TINY = dict(num_train_ids=2, num_test_ids=3, num_cameras=3, cameras_per_id=2, images_per_id_camera=2, num_domains=2)
FILE_NAME = re.compile(r"^(\d{4})_c([1-9])s1_(\d{6})_00\.jpg$")
CAPTION = re.compile(
    r"^An? (young|middle-aged|elderly) (man|woman) is wearing (an? [a-z -]+)\. "
    r"(He|She) is wearing (an? [a-z -]+) and ([a-z -]+)\. "
    r"The (man|woman) is wearing ([a-z ]+) shoes and carrying (nothing|an? [a-z ]+)\. "
    r"The (man|woman) has (short|long) ([a-z]+) hair and wears (no )?glasses\.$"
)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return SyntheticReID(root=str(tmp_path_factory.mktemp("small")), verbose=False, **SMALL)


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _border_colour(path) -> np.ndarray:
    """Mean RGB of the left and right 10-pixel columns (mostly background), shape (3,)."""
    image = _pixels(path).astype(np.float32)
    return np.concatenate([image[:, :10], image[:, -10:]], axis=1).reshape(-1, 3).mean(0)


def _all_items(dataset):
    return dataset.train + dataset.query + dataset.gallery


def _pid(path) -> int:
    return int(os.path.basename(path)[:4])


# ----------------------------------------------------------------------------------------------- generation


def test_same_seed_is_byte_identical_and_other_seed_differs(tmp_path):
    generate_synthetic_reid(str(tmp_path / "a"), SyntheticParams(**TINY, seed=3), verbose=False)
    generate_synthetic_reid(str(tmp_path / "b"), SyntheticParams(**TINY, seed=3), verbose=False)
    generate_synthetic_reid(str(tmp_path / "c"), SyntheticParams(**TINY, seed=4), verbose=False)
    meta_a, meta_b, meta_c = (load_meta(str(tmp_path / name)) for name in "abc")
    assert meta_a == meta_b
    for rel in meta_a["images"]:
        assert np.array_equal(_pixels(tmp_path / "a" / rel), _pixels(tmp_path / "b" / rel))
    assert meta_a["images"] != meta_c["images"]
    images_a = [_pixels(tmp_path / "a" / rel) for rel in sorted(meta_a["images"])]
    images_c = [_pixels(tmp_path / "c" / rel) for rel in sorted(meta_c["images"])]
    assert len(images_a) == len(images_c)
    assert not any(np.array_equal(a, c) for a, c in zip(images_a, images_c))


def test_images_are_256x128_rgb_jpegs(small):
    for path, _, _ in _all_items(small):
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.mode == "RGB" and image.size == (128, 256)


def test_meta_has_format_version_parameters_and_per_image_labels(small):
    meta = load_meta(small.dataset_dir)
    assert meta["format_version"] == synthetic_dataset.FORMAT_VERSION
    expected = dataclasses.asdict(SyntheticParams(**SMALL))
    del expected["train_domains"], expected["test_domains"]  # empty domain lists are not written
    assert meta["params"] == expected
    assert len(meta["images"]) == SyntheticParams(**SMALL).num_images
    for rel, info in meta["images"].items():
        pid, camera, _ = FILE_NAME.match(os.path.basename(rel)).groups()
        assert info["pid"] == int(pid) and info["camid"] == int(camera) - 1
        assert set(info) == {"pid", "camid", "domain", "caption", "attributes"}
        assert info["caption"] == caption(IdentityAttributes(**info["attributes"]))


# ------------------------------------------------------------------------------------------ split protocol


def test_split_follows_market1501_protocol(small):
    p = SyntheticParams(**SMALL)
    for path, _, _ in _all_items(small):
        assert FILE_NAME.match(os.path.basename(path)), path
    assert len({os.path.basename(path) for path, _, _ in _all_items(small)}) == p.num_images
    train_pids = {pid for _, pid, _ in small.train}
    test_pids = {pid for _, pid, _ in small.query + small.gallery}
    assert train_pids == {f"synthetic_{i}" for i in range(1, p.num_train_ids + 1)}
    assert test_pids == set(range(p.num_train_ids + 1, p.num_train_ids + p.num_test_ids + 1))
    assert {cam for _, _, cam in small.train} <= {f"synthetic_{c}" for c in range(p.num_cameras)}
    assert len(small.train) == p.num_train_ids * p.cameras_per_id * p.images_per_id_camera
    # One query per (test identity, camera), the other images of the camera go to the gallery.
    assert len(small.query) == p.num_test_ids * p.cameras_per_id
    assert len(small.gallery) == p.num_test_ids * p.cameras_per_id * (p.images_per_id_camera - 1)
    for pid in test_pids:
        assert len({cam for _, q_pid, cam in small.query if q_pid == pid}) == p.cameras_per_id
    for _, pid, camid in small.query:
        assert any(g_pid == pid and g_cam != camid for _, g_pid, g_cam in small.gallery)


def test_split_with_one_image_per_camera_keeps_cross_camera_matches(tmp_path):
    params = dict(num_train_ids=2, num_test_ids=5, num_cameras=6, cameras_per_id=5, images_per_id_camera=1)
    data = SyntheticReID(root=str(tmp_path), verbose=False, **params)
    assert len(data.query) == 5 * 2 and len(data.gallery) == 5 * 3
    for _, pid, camid in data.query:
        assert any(g_pid == pid and g_cam != camid for _, g_pid, g_cam in data.gallery)


def test_invalid_parameters_are_rejected():
    with pytest.raises(ValueError, match="cameras_per_id"):
        SyntheticParams(num_cameras=4, cameras_per_id=1)
    with pytest.raises(ValueError, match="num_cameras"):
        SyntheticParams(num_cameras=10)
    with pytest.raises(ValueError, match="Market1501"):
        export_market1501("unused", num_cameras=7, cameras_per_id=2)


# ----------------------------------------------------------------------------------------------- captions


def test_captions_follow_template_and_are_per_identity(small):
    by_pid = {}
    for path, info in small.meta.items():
        assert CAPTION.match(info["caption"]), info["caption"]
        assert small.captions[path] == info["caption"]
        by_pid.setdefault(info["pid"], set()).add(info["caption"])
    assert all(len(captions) == 1 for captions in by_pid.values())

    example = IdentityAttributes(
        age="young", gender="man", height="tall", build="slim", skin_tone=0, hair_colour="black",
        hair_length="short", upper_colour="red", upper_pattern="striped", upper_type="shirt", lower_colour="blue",
        lower_type="trousers", shoes_colour="black", bag_type="backpack", bag_colour="green", glasses=True,
    )
    assert caption(example) == (
        "A young man is wearing a red striped shirt. He is wearing a red striped shirt and blue trousers. "
        "The man is wearing black shoes and carrying a green backpack. The man has short black hair and wears glasses."
    )
    no_bag = dataclasses.replace(
        example, bag_type="none", bag_colour="", gender="woman", age="elderly", upper_colour="orange",
        upper_pattern="plain", lower_type="skirt", glasses=False,
    )
    assert caption(no_bag) == (
        "An elderly woman is wearing an orange shirt. She is wearing an orange shirt and a blue skirt. "
        "The woman is wearing black shoes and carrying nothing. The woman has short black hair and wears no glasses."
    )


def test_captions_differ_exactly_when_described_attributes_differ():
    undescribed = ("height", "build", "skin_tone")
    described = [f.name for f in dataclasses.fields(IdentityAttributes) if f.name not in undescribed]
    people = sample_identities(300, seed=1)
    assert len(set(people)) == len(people)
    for a, b in zip(people[:-1], people[1:]):
        same_description = all(getattr(a, name) == getattr(b, name) for name in described)
        assert (caption(a) == caption(b)) == same_description


def test_longest_possible_caption_fits_clip_context(small):
    import open_clip

    tokenizer = open_clip.get_tokenizer("ViT-B-16")

    def num_tokens(text: str) -> int:  # untruncated, including the start and end tokens
        return len(tokenizer.encode(text)) + 2

    # CLIP's BPE tokenises word by word, so the token count is a sum over attribute values: maximising each
    # attribute in turn gives the longest caption any identity can have.
    choices = {
        "age": vocab.AGES, "gender": vocab.GENDERS, "hair_colour": tuple(vocab.HAIR_COLOURS),
        "hair_length": vocab.HAIR_LENGTHS, "upper_colour": vocab.UPPER_COLOURS, "upper_pattern": vocab.UPPER_PATTERNS,
        "upper_type": vocab.UPPER_TYPES, "lower_colour": vocab.LOWER_COLOURS, "lower_type": vocab.LOWER_TYPES,
        "shoes_colour": vocab.SHOE_COLOURS, "bag_type": vocab.BAG_TYPES[1:], "bag_colour": vocab.BAG_COLOURS,
        "glasses": (False, True),
    }
    longest = sample_identities(1, seed=0)[0]
    for name, options in choices.items():
        variants = [dataclasses.replace(longest, **{name: option}) for option in options]
        longest = max(variants, key=lambda person: num_tokens(caption(person)))
    assert num_tokens(caption(longest)) <= 77, caption(longest)
    assert max(num_tokens(text) for text in set(small.captions.values())) <= num_tokens(caption(longest))


# ------------------------------------------------------------------------------------ domains and cameras


def test_domains_are_per_identity_and_all_present(small):
    domain_of_pid = {}
    for path, info in small.meta.items():
        assert small.domains[path] == info["domain"]
        assert domain_of_pid.setdefault(info["pid"], info["domain"]) == info["domain"]
    train_domains = {small.domains[path] for path, _, _ in small.train}
    test_domains = {small.domains[path] for path, _, _ in small.query + small.gallery}
    assert train_domains == test_domains == set(range(SMALL["num_domains"]))


def test_domain_split_films_train_and_test_identities_in_the_chosen_domains(tmp_path, small):
    params = dict(SMALL, num_domains=4)
    split = SyntheticReID(root=str(tmp_path), verbose=False, train_domains=(0, 1, 2), test_domains=(3,), **params)
    train_domains = [split.domains[path] for path, _, _ in split.train]
    test_domains = {split.domains[path] for path, _, _ in split.query + split.gallery}
    assert set(train_domains) == {0, 1, 2} and test_domains == {3}
    # Identities, cameras and file names do not depend on the split: only where each identity is filmed.
    whole = SyntheticParams(**params)
    assert [(s.rel_path, s.identity, s.camera) for s in synthetic_dataset._plan(split.params)] == \
        [(s.rel_path, s.identity, s.camera) for s in synthetic_dataset._plan(whole)]
    assert {info["caption"] for info in split.meta.values()} == {info["caption"] for info in small.meta.values()}
    # The default (no split) keeps its old signature: meta.json has no domain-list keys.
    assert "train_domains" not in whole.to_dict() and split.params.to_dict()["test_domains"] == [3]
    assert SyntheticParams(**split.params.to_dict()) == split.params  # meta.json's lists read back
    with pytest.raises(ValueError, match="test_domains"):
        SyntheticParams(**params, test_domains=(4,))
    with pytest.raises(ValueError, match="train_domains"):
        SyntheticParams(**params, train_domains=(1, 1))
    with pytest.raises(TypeError, match="train_domains"):
        SyntheticParams(**params, train_domains=(1.0,))


def test_domains_are_visually_distinct(small):
    paths = [path for path, _, _ in _all_items(small)]
    colours = np.stack([_border_colour(path) for path in paths])
    domains = np.array([small.domains[path] for path in paths])
    centroids = np.stack([colours[domains == d].mean(0) for d in range(SMALL["num_domains"])])
    nearest = np.linalg.norm(colours[:, None] - centroids[None], axis=-1).argmin(1)
    assert (nearest == domains).mean() > 0.9  # chance: 1/3


def test_cameras_change_the_images_of_an_identity(small):
    between, within = [], []
    for pid in {pid for _, pid, _ in small.query}:
        items = [(path, camid) for path, p, camid in small.query + small.gallery if p == pid]
        colours = {path: _border_colour(path) for path, _ in items}
        for i, (path_a, cam_a) in enumerate(items):
            for path_b, cam_b in items[i + 1:]:
                distance = np.abs(colours[path_a] - colours[path_b]).sum()
                (within if cam_a == cam_b else between).append(distance)
                if cam_a != cam_b:
                    assert not np.array_equal(_pixels(path_a), _pixels(path_b))
    assert np.median(between) > 2 * np.median(within)


def test_nearest_neighbour_on_colour_histograms_is_above_chance_but_imperfect(small):
    def histogram(path):
        pixels = _pixels(path)[32:240:4, 24:104:4] // 64  # centre crop, 4 levels per channel
        codes = pixels[..., 0].astype(int) * 16 + pixels[..., 1] * 4 + pixels[..., 2]
        counts = np.bincount(codes.ravel(), minlength=64).astype(np.float32)
        return counts / counts.sum()

    query, gallery = small.query, small.gallery
    q = np.stack([histogram(path) for path, _, _ in query])
    g = np.stack([histogram(path) for path, _, _ in gallery])
    q_pid, q_cam = np.array([x[1] for x in query]), np.array([x[2] for x in query])
    g_pid, g_cam = np.array([x[1] for x in gallery]), np.array([x[2] for x in gallery])
    distance = np.abs(q[:, None] - g[None]).sum(-1)
    distance[(q_pid[:, None] == g_pid[None]) & (q_cam[:, None] == g_cam[None])] = np.inf  # Market junk
    rank1 = (g_pid[distance.argmin(1)] == q_pid).mean()
    chance = 1.0 / SMALL["num_test_ids"]
    assert 3 * chance < rank1 < 0.9


# --------------------------------------------------------------------------------- FastReID integration


def test_fastreid_market1501_loader_reads_the_export(small, tmp_path):
    from fastreid.data.datasets import DATASET_REGISTRY

    data_dir = export_market1501(str(tmp_path), verbose=False, **SMALL)
    assert data_dir == os.path.join(str(tmp_path), "Market-1501-v15.09.15")
    market = DATASET_REGISTRY.get("Market1501")(root=str(tmp_path))
    for split in ("train", "query", "gallery"):
        ours, theirs = getattr(small, split), getattr(market, split)
        assert len(ours) == len(theirs)
        assert small.get_num_pids(ours) == market.get_num_pids(theirs)
        assert small.get_num_cams(ours) == market.get_num_cams(theirs)
        assert sorted(os.path.basename(p) for p, _, _ in ours) == sorted(os.path.basename(p) for p, _, _ in theirs)
    assert {pid for _, pid, _ in small.query} == {pid for _, pid, _ in market.query}


def test_registry_lookup_and_constructor_kwargs(small):
    from fastreid.data.datasets import DATASET_REGISTRY
    from fastreid.data.datasets.bases import ImageDataset

    assert DATASET_REGISTRY.get("SyntheticReID") is SyntheticReID
    assert isinstance(small, ImageDataset) and SyntheticReID.dataset_name == "synthetic"
    assert small.dataset_dir.startswith(os.path.abspath(small.root))
    assert all(os.path.isabs(path) and path in small.meta for path, _, _ in _all_items(small))


def test_config_keys_map_to_constructor_kwargs(tmp_path):
    from fastreid.config import get_cfg

    cfg = get_cfg()
    add_synthetic_config(cfg)
    assert synthetic_kwargs_from_cfg(cfg) == {
        k: v for k, v in dataclasses.asdict(SyntheticParams()).items() if k not in ("height", "width")
    }
    cfg.merge_from_list(["DATASETS.SYNTHETIC.TRAIN_DOMAINS", "(0, 1)", "DATASETS.SYNTHETIC.TEST_DOMAINS", "(2,)"])
    assert synthetic_kwargs_from_cfg(cfg)["train_domains"] == (0, 1)
    assert synthetic_kwargs_from_cfg(cfg)["test_domains"] == (2,)
    cfg.merge_from_list(["DATASETS.SYNTHETIC.TRAIN_DOMAINS", "()", "DATASETS.SYNTHETIC.TEST_DOMAINS", "()"])
    cfg.merge_from_list(["DATASETS.SYNTHETIC.NUM_TRAIN_IDS", "3", "DATASETS.SYNTHETIC.NUM_TEST_IDS", "2",
                         "DATASETS.SYNTHETIC.NUM_CAMERAS", "3", "DATASETS.SYNTHETIC.CAMERAS_PER_ID", "2",
                         "DATASETS.SYNTHETIC.IMAGES_PER_ID_CAMERA", "1", "DATASETS.SYNTHETIC.NUM_DOMAINS", "2",
                         "DATASETS.SYNTHETIC.SEED", "7"])
    data = SyntheticReID(root=str(tmp_path), verbose=False, **synthetic_kwargs_from_cfg(cfg))
    assert data.params == SyntheticParams(num_train_ids=3, num_test_ids=2, num_cameras=3, cameras_per_id=2,
                                          images_per_id_camera=1, num_domains=2, seed=7)
    assert len(data.train) == 3 * 2 * 1


# ------------------------------------------------------------------------------------ caching and errors


def test_changed_drawing_code_invalidates_the_cache(tmp_path, monkeypatch):
    params = SyntheticParams(**TINY)
    out_dir = str(tmp_path / "data")
    assert generate_synthetic_reid(out_dir, params, verbose=False)
    old_signature = params.signature()
    monkeypatch.setattr(synthetic_dataset, "generator_digest", lambda: "edited-code")
    assert params.signature() != old_signature
    assert generate_synthetic_reid(out_dir, params, verbose=False)
    assert load_meta(out_dir)["generator"] == "edited-code"


def test_second_construction_reuses_the_cache(tmp_path):
    first = SyntheticReID(root=str(tmp_path), verbose=False, **TINY)
    meta_path = os.path.join(first.dataset_dir, "meta.json")
    stamps = {path: os.stat(path).st_mtime_ns for path in [meta_path, *first.meta]}
    second = SyntheticReID(root=str(tmp_path), verbose=False, **TINY)
    assert second.dataset_dir == first.dataset_dir
    assert {path: os.stat(path).st_mtime_ns for path in stamps} == stamps
    assert not generate_synthetic_reid(first.dataset_dir, first.params, verbose=False)
    other = SyntheticReID(root=str(tmp_path), verbose=False, **{**TINY, "seed": 1})
    assert other.dataset_dir != first.dataset_dir
    assert sorted(os.listdir(os.path.join(str(tmp_path), "synthetic_reid"))) == sorted(
        os.path.basename(d) for d in (first.dataset_dir, other.dataset_dir)
    )


def test_changed_parameters_regenerate_in_place(tmp_path):
    export_market1501(str(tmp_path), verbose=False, **TINY)
    data_dir = export_market1501(str(tmp_path), verbose=False, **{**TINY, "num_test_ids": 4})
    with open(os.path.join(data_dir, "meta.json")) as f:
        assert json.load(f)["params"]["num_test_ids"] == 4
    assert len(os.listdir(os.path.join(data_dir, "query"))) == 4 * TINY["cameras_per_id"]


def test_foreign_directory_is_not_overwritten(tmp_path):
    (tmp_path / "Market-1501-v15.09.15").mkdir()
    (tmp_path / "Market-1501-v15.09.15" / "real_data.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        export_market1501(str(tmp_path), verbose=False, **TINY)
    assert (tmp_path / "Market-1501-v15.09.15" / "real_data.txt").read_text() == "keep me"


def test_interrupted_generation_leaves_nothing_behind(tmp_path, monkeypatch):
    calls = []
    real_render = synthetic_dataset.render_image

    def failing_render(*args):
        calls.append(1)
        if len(calls) > 3:
            raise KeyboardInterrupt
        return real_render(*args)

    monkeypatch.setattr(synthetic_dataset, "render_image", failing_render)
    with pytest.raises(KeyboardInterrupt):
        SyntheticReID(root=str(tmp_path), verbose=False, **TINY)
    assert os.listdir(os.path.join(str(tmp_path), "synthetic_reid")) == []


def test_missing_image_raises_an_error_naming_it(tmp_path):
    data = SyntheticReID(root=str(tmp_path), verbose=False, **TINY)
    missing = data.query[0][0]
    os.remove(missing)
    with pytest.raises(FileNotFoundError, match=re.escape(missing)) as error:
        SyntheticReID(root=str(tmp_path), verbose=False, **TINY)
    assert "delete" in str(error.value) and data.dataset_dir in str(error.value)
