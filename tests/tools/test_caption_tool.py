"""tools/caption.py: attributes mode (synthetic data, Market-1501 attribute release) and vlm mode.

transformers is not installed in this environment, so the vlm tests cover everything around the model call with a
stand-in ``describe`` callable (batching, resuming, appending, cleaning, errors) and check that the real loader
fails with a clear message; with transformers installed the loader test is skipped."""

import importlib.util
import json
import os
import sys

import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(ROOT, "tools", "caption.py")


def _tool():
    spec = importlib.util.spec_from_file_location("caption_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tool():
    return _tool()


@pytest.fixture
def images(tmp_path):
    root = tmp_path / "Market"
    (root / "bounding_box_train").mkdir(parents=True)
    for i in range(7):
        Image.new("RGB", (8, 16), (30 * i, 0, 0)).save(root / "bounding_box_train" / f"{i + 1:04d}_c1s1_0000{i}_00.jpg")
    return str(root)


def _records(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_instruction_is_the_papers(tool):
    assert tool.INSTRUCTION.startswith("Describe the most obvious one people using this template for no more than "
                                       "45 words: A [age] [gender] is wearing [upper clothes].")
    assert tool.INSTRUCTION.endswith("The [gender] has [hair length] [and whether wear glasses].")


def test_attributes_mode_synthetic(tool, tmp_path):
    from fastreid_clip.data.synthetic.dataset import SyntheticParams, generate_synthetic_reid, load_meta

    out_dir = str(tmp_path / "synthetic")
    generate_synthetic_reid(out_dir, SyntheticParams(num_train_ids=4, num_test_ids=2, num_cameras=2, cameras_per_id=2,
                                                     images_per_id_camera=1), verbose=False)
    n = tool.main(["attributes", "--dataset-dir", out_dir, "--format", "synthetic"])
    meta = load_meta(out_dir)["images"]
    records = _records(os.path.join(out_dir, "captions.jsonl"))
    assert n == len(meta) == len(records)
    assert {r["image"]: r["caption"] for r in records} == {k: v["caption"] for k, v in meta.items()}
    with pytest.raises(SystemExit, match="--overwrite"):
        tool.main(["attributes", "--dataset-dir", out_dir, "--format", "synthetic"])
    with pytest.raises(SystemExit, match="no meta.json"):
        tool.main(["attributes", "--dataset-dir", str(tmp_path), "--format", "synthetic"])


def test_attributes_mode_market_release(tool, images, tmp_path):
    from scipy.io import savemat

    os.makedirs(os.path.join(images, "attribute"))
    fields = {"gender": [2, 1], "age": [3, 4], "up": [1, 2], "upwhite": [2, 1], "upblue": [1, 2], "down": [1, 1],
              "clothes": [1, 2], "downblack": [2, 1], "hair": [2, 1], "handbag": [2, 1], "backpack": [1, 1],
              "bag": [1, 2], "hat": [1, 1], "image_index": ["0001", "0003"]}
    savemat(os.path.join(images, "attribute", "market_attribute.mat"), {"market_attribute": {"train": fields}})
    n = tool.main(["attributes", "--dataset-dir", images, "--format", "market1501"])
    records = {r["image"]: r["caption"] for r in _records(os.path.join(images, "captions.jsonl"))}
    assert n == 2 and set(records) == {"bounding_box_train/0001_c1s1_00000_00.jpg",
                                       "bounding_box_train/0003_c1s1_00002_00.jpg"}
    assert records["bounding_box_train/0001_c1s1_00000_00.jpg"] == (
        "An adult woman is wearing a white long-sleeved top. She is wearing a white long-sleeved top and a black "
        "long dress. The woman is wearing shoes and carrying a handbag. The woman has long hair.")
    assert "elderly man" in records["bounding_box_train/0003_c1s1_00002_00.jpg"]
    with pytest.raises(SystemExit, match="duke_attribute.mat"):
        tool.main(["attributes", "--dataset-dir", images, "--format", "duke", "--out", str(tmp_path / "d.jsonl")])


class _StandIn:
    """Stand-in for the VLM: records its batches, answers per image, optionally fails on a given call."""

    def __init__(self, fail_on=None, answer=None):
        self.batches, self.fail_on = [], fail_on
        self.answer = answer or (lambda img: f'  "A person\n in colour {img.getpixel((0, 0))[0]}."  ')

    def __call__(self, imgs):
        if self.fail_on is not None and len(self.batches) == self.fail_on:
            raise KeyboardInterrupt("interrupted")
        self.batches.append(len(imgs))
        return [self.answer(img) for img in imgs]


def test_vlm_mode_is_batched_and_resumes_after_an_interruption(tool, images):
    out = os.path.join(images, "captions.jsonl")
    first = _StandIn(fail_on=2)
    with pytest.raises(KeyboardInterrupt):
        tool.main(["vlm", "--dataset-dir", images, "--model", "unused", "--batch-size", "3"], describe=first)
    assert first.batches == [3, 3] and len(_records(out)) == 6  # appended after every batch
    second = _StandIn()
    n = tool.main(["vlm", "--dataset-dir", images, "--model", "unused", "--batch-size", "3"], describe=second)
    assert n == 1 and second.batches == [1]  # only the image not yet captioned
    records = _records(out)
    assert len(records) == 7 and len({r["image"] for r in records}) == 7
    assert records[0] == {"image": "bounding_box_train/0001_c1s1_00000_00.jpg", "caption": "A person in colour 0."}
    assert tool.main(["vlm", "--dataset-dir", images, "--model", "unused"], describe=_StandIn()) == 0


def test_vlm_mode_skips_empty_answers_and_checks_counts(tool, images):
    out = os.path.join(images, "captions.jsonl")
    n = tool.main(["vlm", "--dataset-dir", images, "--model", "x"], describe=_StandIn(answer=lambda img: " \n"))
    assert n == 0 and _records(out) == []
    with pytest.raises(RuntimeError, match="returned 1 captions for 7 images"):
        tool.main(["vlm", "--dataset-dir", images, "--model", "x", "--batch-size", "8"], describe=lambda imgs: ["a"])
    with pytest.raises(SystemExit, match="image directory"):
        tool.main(["vlm", "--dataset-dir", images, "--model", "x", "--image-dir", "nope"], describe=_StandIn())


def test_vlm_loader_without_transformers_is_a_clear_error(tool, images):
    if importlib.util.find_spec("transformers") is not None:
        pytest.skip("transformers is installed: the loader would run a real model")
    with pytest.raises(SystemExit, match="vlm mode needs Hugging Face transformers"):
        tool.main(["vlm", "--dataset-dir", images, "--model", images, "--device", "cpu"])
