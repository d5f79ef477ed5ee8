"""tools/extract_features.py: folder / list / dataset inputs, corrupt images skipped and listed, block-wise files."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from inference_helpers import cached_run, load_tool
from fastreid_clip.inference import FeatureExtractor
from fastreid_clip.inference.feature_files import FeatureFileWriter, load_features

VIT = "configs/Synthetic/clip_baseline_vit_tiny.yml"


@pytest.fixture(scope="module")
def run():
    return cached_run(VIT)


@pytest.fixture(scope="module")
def tool():
    return load_tool("extract_features")


def _image_folder(root, count=7):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        sub = root / "a" if i % 2 else root / "b" / "deeper"
        sub.mkdir(parents=True, exist_ok=True)
        size = (40 + 7 * i, 90 + 3 * i)  # any size: the test transform resizes
        path = sub / f"img_{i}.{'png' if i % 3 else 'jpg'}"
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return sorted(paths)


def test_folder_with_a_corrupt_image(run, tool, tmp_path, capsys):
    run_dir, _ = run
    good = _image_folder(tmp_path / "photos")
    corrupt = tmp_path / "photos" / "a" / "broken.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (tmp_path / "photos" / "notes.txt").write_text("not an image")  # not an image extension: not listed at all
    out = str(tmp_path / "out" / "photos.npy")
    meta = tool.main(["--run-dir", run_dir, "--input", str(tmp_path / "photos"), "--output", out, "--batch-size", "3",
                      "--num-workers", "1", "--no-progress"])
    printed = capsys.readouterr().out
    feats = np.load(out)
    assert feats.shape == (7, meta["dim"]) and feats.dtype == np.float32
    side = json.loads(open(str(tmp_path / "out" / "photos.json")).read())
    assert side["paths"] == good and side["count"] == 7
    assert [s["path"] for s in side["skipped"]] == [str(corrupt)]
    assert "skipped 1 unreadable image" in printed and str(corrupt) in printed
    assert side["pids"] is None and side["camids"] is None and side["split"] is None
    expected = FeatureExtractor.from_run_dir(run_dir)(good)
    torch.testing.assert_close(torch.from_numpy(feats), expected, rtol=1e-5, atol=1e-5)
    assert not os.path.exists(out + ".part")


def test_list_and_safetensors(run, tool, tmp_path):
    run_dir, weights = run
    good = _image_folder(tmp_path / "imgs", count=4)
    lst = tmp_path / "list.txt"
    lst.write_text("# path pid camid\n" + "".join(f"{os.path.relpath(p, tmp_path)} {i + 10} {i % 2}\n"
                                                  for i, p in enumerate(good)))
    out = str(tmp_path / "list.safetensors")
    meta = tool.main(["--config-file", os.path.join(run_dir, "config.yaml"), "--weights", weights, "--list", str(lst),
                      "--output", out, "--num-workers", "0", "--no-progress"])
    from safetensors import safe_open

    with safe_open(out, "np") as f:
        feats = f.get_tensor("features")
    assert feats.shape == (4, meta["dim"])
    np.testing.assert_array_equal(load_features(out), feats)
    assert meta["pids"] == [10, 11, 12, 13] and meta["camids"] == [0, 1, 0, 1]


def test_dataset_query_gallery(run, tool, datasets_root, tmp_path):
    run_dir, _ = run
    out = str(tmp_path / "synth.npy")
    meta = tool.main(["--run-dir", run_dir, "--dataset", "SyntheticReID", "--output", out, "--num-workers", "0",
                      "--no-progress"])
    feats = np.load(out, mmap_mode="r")
    assert feats.shape[0] == meta["count"] == len(meta["paths"]) == len(meta["pids"]) == len(meta["split"])
    assert meta["num_query"] == meta["split"].count("query") > 0 and meta["split"][-1] == "gallery"
    assert meta["split"] == sorted(meta["split"], key=lambda s: s != "query")  # queries first
    assert meta["skipped"] == []


def test_writer_streams_blocks(tmp_path):
    """The file grows by each block as it is appended (nothing is held back), and its header is final at close."""
    path = str(tmp_path / "f.npy")
    writer = FeatureFileWriter(path, 4)
    sizes = []
    for i in range(3):
        writer.append(np.full((5, 4), i, np.float32))
        writer._file.flush()
        sizes.append(os.path.getsize(path + ".part"))
    assert sizes[1] - sizes[0] == sizes[2] - sizes[1] == 5 * 4 * 4
    writer.close()
    data = np.load(path)
    assert data.shape == (15, 4) and data[5:10].tolist() == [[1.0] * 4] * 5
    with pytest.raises(ValueError, match=r"expected \[b, 4\] rows"):
        FeatureFileWriter(str(tmp_path / "g.npy"), 4).append(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="must end in .npy or .safetensors"):
        FeatureFileWriter(str(tmp_path / "g.pt"), 4)


def test_safetensors_features_are_memory_mapped(tmp_path):
    """load_features maps a safetensors file (rows read from disk on use) and agrees with safetensors' own reader,
    also for a file written by safetensors itself; a file without a 'features' tensor is an error naming it."""
    from safetensors.numpy import load_file, save_file

    path = str(tmp_path / "f.safetensors")
    writer = FeatureFileWriter(path, 3)
    writer.append(np.arange(12, dtype=np.float32).reshape(4, 3))
    writer.close()
    mapped = load_features(path)
    assert isinstance(mapped, np.memmap)
    np.testing.assert_array_equal(mapped, load_file(path)["features"])
    other = str(tmp_path / "g.safetensors")
    save_file({"aaa": np.ones((2, 2), np.float32), "features": np.full((2, 5), 7, np.float32)}, other)
    np.testing.assert_array_equal(load_features(other), np.full((2, 5), 7, np.float32))
    save_file({"emb": np.ones((2, 2), np.float32)}, other)
    with pytest.raises(ValueError, match="no tensor named 'features'.*emb"):
        load_features(other)
