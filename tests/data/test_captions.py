"""Caption files (fastreid_clip/data/captions.py): reading, coverage and content checks with counts, the fallback,
over-long captions, locating the file next to the dataset, and attribute captions."""

import json
import logging
import os

import pytest

from conftest import tiny_cfg
from fastreid_clip.config import ConfigValueError
from fastreid_clip.data.captions import (CaptionFileError, append_caption_records, clip_token_length,
                                         load_train_captions, match_captions, pedestrian_attribute_captions,
                                         read_caption_file, render_template, synthetic_attribute_captions)

LONG = " ".join(["a person wearing a very long red and blue striped jacket"] * 12)


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "Market"
    (root / "bounding_box_train").mkdir(parents=True)
    paths = []
    for i in range(8):
        path = root / "bounding_box_train" / f"{i // 2 + 1:04d}_c{i % 2 + 1}s1_00000{i}_00.jpg"
        path.write_bytes(b"")
        paths.append(str(path))
    return str(root), paths


def _write(path, records):
    with open(path, "w") as f:
        for image, caption in records:
            f.write(json.dumps({"image": image, "caption": caption}) + "\n")
    return str(path)


def _key(path, root):
    return os.path.relpath(path, root)


def test_full_coverage_and_counts(dataset, tmp_path, caplog):
    root, paths = dataset
    records = [(_key(p, root), f"caption {i}") for i, p in enumerate(paths)] + [("query/0009_c1s1_0_00.jpg", "x")]
    path = _write(tmp_path / "c.jsonl", records)
    with caplog.at_level(logging.INFO):
        texts, report = match_captions(paths, root, read_caption_file(path), path)
    assert texts == [f"caption {i}" for i in range(8)]
    assert (len(report.missing), len(report.empty), report.unknown, len(report.truncated)) == (0, 0, 1, 0)
    assert "8 training images, 8 captioned, 0 without a caption, 0 empty, 1 records of unknown images" in caplog.text


def test_partly_covered_file_fails_counting_and_naming_the_missing_images(dataset, tmp_path):
    root, paths = dataset
    records = [(_key(p, root), "a caption") for p in paths[:2]] + [(_key(paths[2], root), " ")]
    path = _write(tmp_path / "c.jsonl", records)
    with pytest.raises(CaptionFileError) as err:
        match_captions(paths, root, read_caption_file(path), path)
    message = str(err.value)
    assert "c.jsonl" in message and "5 of 8 training images have no caption" in message
    assert "'bounding_box_train/0002_c2s1_000003_00.jpg'" in message and "and 0 more" not in message
    assert "1 have an empty caption ('bounding_box_train/0002_c1s1_000002_00.jpg')" in message
    assert "CAPTIONS.MISSING fallback" in message


def test_fallback_uses_the_fixed_prompt_and_logs_the_count(dataset, tmp_path, caplog):
    root, paths = dataset
    path = _write(tmp_path / "c.jsonl", [(_key(p, root), "a caption") for p in paths[:3]])
    with caplog.at_level(logging.WARNING):
        texts, report = match_captions(paths, root, read_caption_file(path), path, missing="fallback")
    assert texts == ["a caption"] * 3 + ["a photo of a person"] * 5
    assert len(report.uncovered) == 5
    assert "5 of 8 training images have no (or an empty) caption" in caplog.text


def test_over_long_caption_is_counted_and_truncated_by_the_tokenizer(dataset, tmp_path, caplog):
    root, paths = dataset
    path = _write(tmp_path / "c.jsonl", [(_key(p, root), LONG if i == 4 else "short") for i, p in enumerate(paths)])
    assert clip_token_length(LONG) > 77 and clip_token_length("short") == 3
    with caplog.at_level(logging.WARNING):
        texts, report = match_captions(paths, root, read_caption_file(path), path)
    assert report.truncated == [_key(paths[4], root)]
    assert "1 captions are longer than 77 CLIP tokens and are truncated" in caplog.text
    import open_clip

    tokens = open_clip.get_tokenizer("ViT-B-16")([texts[4]])
    assert tokens.shape == (1, 77) and int(tokens[0, -1]) == 49407  # cut to 76 tokens + EOT


def test_bad_records_name_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"image": "a.jpg", "caption": "x"}\n\nnot json\n')
    with pytest.raises(CaptionFileError, match=r"bad.jsonl:3: not a JSON record"):
        read_caption_file(str(bad))
    bad.write_text('{"image": "a.jpg", "text": "x"}\n')
    with pytest.raises(CaptionFileError, match=r"bad.jsonl:1: expected an object with string fields"):
        read_caption_file(str(bad))
    bad.write_text('{"image": "a.jpg", "caption": "x"}\n{"image": "./a.jpg", "caption": "y"}\n')
    with pytest.raises(CaptionFileError, match=r"bad.jsonl:2: image 'a.jpg' is listed twice"):
        read_caption_file(str(bad))
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_caption_file(str(tmp_path / "nope.jsonl"))
    with pytest.raises(ConfigValueError, match="CAPTIONS.MISSING"):
        match_captions([], "", {}, "x", missing="skip")


def test_append_is_resumable(tmp_path):
    path = str(tmp_path / "sub" / "c.jsonl")
    assert append_caption_records(path, [("a.jpg", "one")]) == 1
    append_caption_records(path, [("b.jpg", "two")])
    assert read_caption_file(path) == {"a.jpg": "one", "b.jpg": "two"}


def test_render_template():
    text = render_template("woman", "a red top", "blue trousers", age="young", shoes="white shoes",
                           others="a handbag", hair="long", glasses=False)
    assert text == ("A young woman is wearing a red top. She is wearing a red top and blue trousers. The woman is "
                    "wearing white shoes and carrying a handbag. The woman has long hair and no glasses.")
    assert render_template("man", "a top", "shorts", age="elderly").startswith("An elderly man")


# ------------------------------------------------------------------------------------------------ datasets
def test_synthetic_captions_are_written_next_to_the_dataset_and_loaded(datasets_root):
    cfg = tiny_cfg("unused", config="configs/Synthetic/clip_scgi_vit_tiny.yml")
    from fastreid_clip.data.build import build_dataset, train_items

    items = train_items(cfg)
    data = build_dataset(cfg, "SyntheticReID")
    path = os.path.join(data.dataset_dir, "captions.jsonl")
    if os.path.exists(path):
        os.remove(path)
    texts, (report,) = load_train_captions(cfg, items)
    assert os.path.isfile(path) and report.source == path
    assert texts == [data.captions[p] for p, _, _ in items]  # the identities' attribute captions
    assert report.unknown == len(data.query) + len(data.gallery)  # the file covers every split
    assert synthetic_attribute_captions(data.dataset_dir)[os.path.relpath(items[0][0], data.dataset_dir)] == texts[0]

    # Without GENERATE a missing file is an error naming it; a partial one fails with counts.
    os.remove(path)
    cfg.defrost()
    cfg.CAPTIONS.GENERATE = ""
    with pytest.raises(FileNotFoundError, match=r"captions.jsonl' does not exist \(CAPTIONS.FILE_NAME\)"):
        load_train_captions(cfg, items)
    partial = _write(path, [(os.path.relpath(p, data.dataset_dir), "x") for p, _, _ in items[:10]])
    with pytest.raises(CaptionFileError, match=f"{len(items) - 10} of {len(items)} training images have no caption"):
        load_train_captions(cfg, items)
    cfg.CAPTIONS.MISSING = "fallback"
    texts, _ = load_train_captions(cfg, items)
    assert texts[:10] == ["x"] * 10 and set(texts[10:]) == {"a photo of a person"}
    cfg.CAPTIONS.FILES = (partial, "another.jsonl")
    with pytest.raises(ConfigValueError, match="CAPTIONS.FILES"):
        load_train_captions(cfg, items)
    os.remove(path)


def _save_attribute_mat(path, struct, ids):
    from scipy.io import savemat

    n = len(ids)
    fields = {"age": [2] * n, "gender": [1, 2][:n], "backpack": [2, 1][:n], "handbag": [1, 1][:n],
              "bag": [1, 1][:n], "hair": [1, 2][:n], "up": [2, 1][:n], "down": [1, 2][:n], "clothes": [2, 2][:n],
              "hat": [1, 2][:n], "upred": [2, 1][:n], "upblack": [1, 2][:n], "downblue": [2, 1][:n],
              "downblack": [1, 1][:n]}
    fields["image_index"] = ids
    savemat(path, {struct: {"train": fields, "test": fields}})


def test_market_attribute_release_captions(dataset, tmp_path):
    root, paths = dataset
    mat = str(tmp_path / "market_attribute.mat")
    _save_attribute_mat(mat, "market_attribute", ["0001", "0002"])
    captions, skipped = pedestrian_attribute_captions(root, mat)
    assert len(captions) == 4 and len(skipped) == 4  # identities 3 and 4 have no attributes
    first = captions[_key(paths[0], root)]
    assert first == ("A teenage man is wearing a red short-sleeved top. He is wearing a red short-sleeved top and "
                     "blue trousers. The man is wearing shoes and carrying a backpack. The man has short hair.")
    second = captions[_key(paths[2], root)]
    assert second.startswith("A teenage woman is wearing a black long-sleeved top.") and "shorts" in second
    assert second.endswith("The woman has long hair. The woman wears a hat.")


def test_duke_attribute_release_captions(tmp_path):
    from scipy.io import savemat

    root = tmp_path / "Duke"
    (root / "bounding_box_train").mkdir(parents=True)
    (root / "bounding_box_train" / "0005_c2_f0046182.jpg").write_bytes(b"")
    fields = {"gender": [2], "top": [2], "upwhite": [2], "downblack": [2], "boots": [2], "shoes": [1],
              "backpack": [1], "bag": [2], "handbag": [1], "hat": [1], "image_index": ["0005"]}
    mat = str(tmp_path / "duke_attribute.mat")
    savemat(mat, {"duke_attribute": {"train": fields, "test": fields}})
    captions, skipped = pedestrian_attribute_captions(str(root), mat)
    assert skipped == [] and captions == {"bounding_box_train/0005_c2_f0046182.jpg": (
        "A woman is wearing a white long top. She is wearing a white long top and black trousers. The woman is "
        "wearing dark boots and carrying a bag.")}
    with pytest.raises(CaptionFileError, match="has no 'query' split"):
        pedestrian_attribute_captions(str(root), mat, split="query")
