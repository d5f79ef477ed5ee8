"""Tests of the synthetic CLIP pretraining corpus (fastreid_clip.data.synthetic.pretrain_corpus)."""

import dataclasses
import os
import re

import fastreid_clip  # noqa: F401  (must precede any fastreid import)
import numpy as np
import pytest
from PIL import Image

from fastreid_clip.data.synthetic import (
    RESERVED_REID_IDS,
    RESERVED_REID_SEEDS,
    IdentityAttributes,
    PretrainCorpus,
    SyntheticParams,
    SyntheticReID,
    appearance_key,
    attribute_space_size,
    caption,
    corpus_identities,
    corpus_split_of,
    generate_synthetic_reid,
    letterbox,
    load_meta,
    reserved_reid_appearances,
    sample_identities,
    synthetic_kwargs_from_cfg,
    varied_caption,
    zero_shot_attributes,
)
from fastreid_clip.data.synthetic import attributes as vocab
from fastreid_clip.data.synthetic import pretrain_corpus as pc

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The sizes the pretraining tool uses (several thousand training identities, a held-out set for zero-shot).
NUM_TRAIN, NUM_HELDOUT = 5000, 1000


@pytest.fixture(scope="module")
def train_ids():
    return corpus_identities(NUM_TRAIN, split="train")


@pytest.fixture(scope="module")
def heldout_ids():
    return corpus_identities(NUM_HELDOUT, split="heldout")


@pytest.fixture(scope="module")
def tokens():
    import open_clip

    tokenizer = open_clip.get_tokenizer("ViT-B-16")
    return lambda text: len(tokenizer.encode(text)) + 2  # untruncated, with the start and end tokens


# ------------------------------------------------------------------------------------------- identities


def test_pick_draws_what_numpy_choice_draws():
    """attributes._pick skips Generator.choice's checks; the identities must stay those choice would draw."""
    from fastreid_clip.data.synthetic.attributes import _pick

    options = tuple(range(6))
    for probs in (None, (0.1, 0.05, 0.0, 0.5, 0.35, 0.0), (0.4, 0.3, 0.15, 0.05, 0.0, 0.1)):
        fast, reference = np.random.default_rng(5), np.random.default_rng(5)
        assert [_pick(fast, options, probs) for _ in range(5000)] == \
            [options[int(reference.choice(len(options), p=probs))] for _ in range(5000)]


def test_reid_identities_follow_their_seed_prefix():
    # A ReID set's identities are a prefix of the 9999 of its seed, whatever its size.
    assert sample_identities(150, 0)[:48] == sample_identities(48, 0)


def _meta_identities(out_dir):
    """The pid -> attributes the ReID generator wrote, and the pids of each split."""
    people, splits = {}, {"bounding_box_train": set(), "query": set(), "bounding_box_test": set()}
    for rel, info in load_meta(out_dir)["images"].items():
        people[info["pid"]] = IdentityAttributes(**info["attributes"])
        splits[rel.split("/")[0]].add(info["pid"])
    return people, splits


def _reid_configs():
    """(name, ReID kwargs) of the default parameters, the demo config and the test config."""
    from conftest import tiny_cfg

    from fastreid_clip.config import get_cfg, merge_config_file

    demo = merge_config_file(get_cfg(), os.path.join(ROOT, "configs/Synthetic/clip_baseline_vit_tiny.yml"), [])
    return [("defaults", SyntheticParams().to_dict()),
            ("demo", synthetic_kwargs_from_cfg(demo)),
            ("tests", synthetic_kwargs_from_cfg(tiny_cfg("/tmp/unused")))]


def test_corpus_identities_never_occur_in_reid_splits(tmp_path, train_ids, heldout_ids):
    corpus = {appearance_key(a) for a in train_ids + heldout_ids}
    corpus_tuples = set(train_ids + heldout_ids)
    assert len(corpus) == NUM_TRAIN + NUM_HELDOUT
    for name, kwargs in _reid_configs():
        assert kwargs["seed"] in RESERVED_REID_SEEDS, name
        num = kwargs["num_train_ids"] + kwargs["num_test_ids"]
        if name == "tests":  # the data set exactly as the tests generate it
            data = SyntheticReID(root=str(tmp_path / name), verbose=False, **kwargs)
            out_dir = data.dataset_dir
        else:  # same identities (a function of the identity count and seed only), few small images
            params = SyntheticParams(**{**kwargs, "num_cameras": 2, "cameras_per_id": 2, "images_per_id_camera": 1,
                                        "height": 32, "width": 16})
            out_dir = str(tmp_path / name)
            generate_synthetic_reid(out_dir, params, verbose=False)
        people, splits = _meta_identities(out_dir)
        assert sorted(people) == list(range(1, num + 1))
        assert [people[pid] for pid in sorted(people)] == sample_identities(num, kwargs["seed"])
        assert splits["query"] and splits["bounding_box_test"] and splits["bounding_box_train"]
        for split, pids in splits.items():
            assert not corpus & {appearance_key(people[pid]) for pid in pids}, (name, split)
            assert not corpus_tuples & {people[pid] for pid in pids}, (name, split)
    # The other seeds the tests use, through the function the generator calls.
    for seed in (1, 3, 4, 7):
        assert not corpus & {appearance_key(a) for a in sample_identities(300, seed)}


def test_reserved_set_is_every_reid_identity_the_reserved_seeds_can_produce(train_ids, heldout_ids):
    reserved = reserved_reid_appearances()
    assert RESERVED_REID_IDS == 9999
    assert len(reserved) > 0.99 * len(RESERVED_REID_SEEDS) * RESERVED_REID_IDS  # a few collisions only
    assert all(appearance_key(a) in reserved for a in sample_identities(200, 0))
    assert not reserved & {appearance_key(a) for a in train_ids + heldout_ids}


def test_attribute_space_size_counts_what_can_be_drawn():
    size = attribute_space_size()
    assert size == {"attributes": 2_467_584_000, "appearances": 634_521_600}
    # Every drawn identity uses only values the count allows (men: no skirt; elderly: no blonde / red hair).
    for person in sample_identities(2000, 0):
        assert not (person.gender == "man" and person.lower_type == "skirt")
        assert person.hair_colour not in (("blonde", "red") if person.age == "elderly" else ("white",))
    assert size["appearances"] > 10_000 * len(RESERVED_REID_SEEDS) * RESERVED_REID_IDS


def test_splits_are_disjoint_distinct_and_prefix_stable(train_ids, heldout_ids):
    train = {appearance_key(a) for a in train_ids}
    heldout = {appearance_key(a) for a in heldout_ids}
    assert len(train) == NUM_TRAIN and len(heldout) == NUM_HELDOUT
    assert not train & heldout
    assert all(corpus_split_of(a) == "train" for a in train_ids[:200])
    assert all(corpus_split_of(a) == "heldout" for a in heldout_ids[:200])
    # Disjoint across corpus seeds too; a prefix does not depend on the number drawn.
    assert not train & {appearance_key(a) for a in corpus_identities(300, seed=5, split="heldout")}
    assert corpus_identities(100) == train_ids[:100]
    assert corpus_identities(50, seed=1) != corpus_identities(50)
    with pytest.raises(ValueError, match="split"):
        corpus_identities(3, split="test")


# --------------------------------------------------------------------------------------------- captions

_COLOURS = "|".join(sorted(set(vocab.COLOURS) | set(vocab.HAIR_COLOURS), key=len, reverse=True))
_UPPER = re.compile(
    rf"\b({_COLOURS}) (?:(plain|striped|checked) )?(t-shirt|tee shirt|tee|shirt|jacket|overcoat|coat|top)\b"
)
_LOWER = re.compile(rf"\b({_COLOURS}) (trousers|pants|shorts|skirt)\b")
_SHOES = re.compile(rf"\b({_COLOURS}) (shoes|sneakers)\b")
_BAG = re.compile(rf"\b({_COLOURS}) (backpack|rucksack|handbag|purse)\b")
_HAIR = re.compile(rf"\b(?:(short|long) )?(?:({_COLOURS}) )?hair\b")
_NO_BAG = re.compile(r"\b(no bag|without a bag|carrying nothing|carries nothing|not carrying a bag)\b")
_GLASSES = re.compile(r"\b(glasses|eyeglasses|spectacles)\b")
_NO_GLASSES = re.compile(r"\b(no|without|not wear) (glasses|eyeglasses|spectacles)\b")


def _words(text, words):
    return {w for w in words if re.search(rf"\b{re.escape(w)}\b", text)}


def _check_caption(text: str, p: IdentityAttributes) -> int:
    """Asserts that every attribute word of ``text`` is true of ``p``; returns the number of facts named."""
    t = text.lower()
    facts = 0
    for colour, pattern, noun in _UPPER.findall(t):
        assert colour == p.upper_colour and pattern in ("", p.upper_pattern), text
        assert noun == "top" or noun in pc.UPPER_WORDS[p.upper_type], text
        facts += 1
    plain = t.replace("tee shirt", "tee").replace("t-shirt", "tee")  # one word per upper type
    synonyms = {k: {w.replace("tee shirt", "tee").replace("t-shirt", "tee") for w in ws}
                for k, ws in pc.UPPER_WORDS.items()}
    assert _words(plain, set().union(*synonyms.values())) <= synonyms[p.upper_type], text
    for colour, noun in _LOWER.findall(t):
        assert colour == p.lower_colour, text
    lower_words = _words(t, [w for ws in pc.LOWER_WORDS.values() for w in ws])
    assert lower_words <= set(pc.LOWER_WORDS[p.lower_type]), text
    facts += bool(lower_words)
    for colour, _ in _SHOES.findall(t):
        assert colour == p.shoes_colour, text
    bag_words = _words(t, [w for ws in pc.BAG_WORDS.values() for w in ws])
    if p.bag_type == "none":
        assert not bag_words, text
    else:
        assert bag_words <= set(pc.BAG_WORDS[p.bag_type]) and not _NO_BAG.search(t), text
        assert all(colour == p.bag_colour for colour, _ in _BAG.findall(t)), text
    facts += bool(bag_words or _NO_BAG.search(t))
    if _GLASSES.search(t):
        negated = len(_NO_GLASSES.findall(t)) == len(_GLASSES.findall(t))
        assert negated != p.glasses, text
        facts += 1
    for length, colour in _HAIR.findall(t):
        assert length in ("", p.hair_length) and colour in ("", p.hair_colour), text
        facts += 1
    genders = _words(t, [w for ws in pc._GENDER_WORDS.values() for w in ws] + ["he", "she"])
    assert genders <= set(pc._GENDER_WORDS[p.gender]) | {pc._PRONOUNS[p.gender]}, text
    ages = _words(t, [w for ws in pc._AGE_WORDS.values() for w in ws])
    assert ages <= set(pc._AGE_WORDS[p.age]), text
    return facts + bool(_SHOES.search(t))


def test_captions_vary_per_image_and_are_true(train_ids, tokens):
    rng = np.random.default_rng(0)
    longest = 0
    for person in train_ids[:40]:
        captions = [varied_caption(person, rng) for _ in range(40)]
        assert len(set(captions)) >= 30, captions  # only the CLIP-SCGI form (1 in 10) repeats
        for text in captions:
            assert _check_caption(text, person) >= 2, text
            longest = max(longest, tokens(text))
    assert longest <= 77


def test_captions_cover_the_forms_and_fit_clip_context(train_ids, tokens):
    rng = np.random.default_rng(1)
    texts = [(varied_caption(person, rng), person) for person in train_ids[:1500]]
    assert max(tokens(text) for text, _ in texts) <= 77
    joined = " ".join(text.lower() for text, _ in texts)
    for word in ("tee", "pants", "rucksack", "guy", "male", "top", "no bag", "without glasses", "a photo of",
                 "hair", "sneakers", "is wearing"):
        assert word in joined, word
    assert any(text == caption(person) for text, person in texts)  # the CLIP-SCGI long form is one of them
    assert any(text.count(",") >= 2 and "." not in text for text, _ in texts)  # the attribute list form
    # The longest caption any form can build (longest words, every fact, the neutral subject) fits too.
    worst = ("An image of a pedestrian in a light blue checked tee shirt. The pedestrian is wearing light blue "
             "trousers. The pedestrian is wearing white sneakers. The pedestrian is not carrying a bag. The "
             "pedestrian does not wear eyeglasses. The pedestrian has short blonde hair.")
    assert tokens(worst) <= 60


# ------------------------------------------------------------------------------------------ data set


def test_items_are_deterministic_and_true():
    corpus = PretrainCorpus(num_identities=6, images_per_identity=4)
    again = PretrainCorpus(num_identities=6, images_per_identity=4)
    assert len(corpus) == 24
    item = corpus[9]
    assert set(item) >= {"image", "caption", "identity", "attributes"}
    assert item["identity"] == 2 and item["attributes"] == corpus.identities[2]
    assert item["image"].mode == "RGB" and item["image"].size == (128, 256)
    for other in (corpus[9], again[9]):
        assert np.array_equal(np.asarray(other["image"]), np.asarray(item["image"]))
        assert other["caption"] == item["caption"]
    images = [np.asarray(corpus[i]["image"]) for i in range(8, 12)]  # four images of identity 2
    assert all(not np.array_equal(images[0], im) for im in images[1:])
    assert len({corpus[i]["caption"] for i in range(8, 12)}) >= 3
    for i in range(len(corpus)):
        _check_caption(corpus[i]["caption"], corpus[i]["attributes"])
    assert len({corpus[i]["domain"] for i in range(len(corpus))}) > 1
    heldout = PretrainCorpus(split="heldout", num_identities=6, images_per_identity=4)
    assert not {appearance_key(a) for a in heldout.identities} & {appearance_key(a) for a in corpus.identities}
    with pytest.raises(IndexError):
        corpus[24]


def test_image_size_square_and_cache(tmp_path):
    small = PretrainCorpus(num_identities=2, images_per_identity=2, height=128, width=64)
    assert small[0]["image"].size == (64, 128)
    square = PretrainCorpus(num_identities=2, images_per_identity=2, square=True, image_size=224)
    plain = PretrainCorpus(num_identities=2, images_per_identity=2)
    image = square[1]["image"]
    assert image.size == (224, 224)
    assert square[1]["caption"] == plain[1]["caption"]
    inner = np.asarray(plain[1]["image"].resize((112, 224), Image.BICUBIC)).astype(int)
    assert np.abs(np.asarray(image)[:, 56:168].astype(int) - inner).max() == 0
    bars = np.asarray(image)[:, :56]
    assert (bars == bars[:, :1]).all()  # "edge": each row of a bar is one colour, continuing the scene
    assert np.abs(bars[:, 0].astype(int) - inner[:, :4].mean(1)).max() <= 1
    grey = letterbox(plain[1]["image"], 128, fill="clip_mean")
    assert grey.size == (128, 128) and tuple(np.asarray(grey)[5, 2]) == pc.CLIP_MEAN_RGB
    assert letterbox(Image.new("RGB", (40, 20)), 32, fill=(1, 2, 3)).getpixel((0, 0)) == (1, 2, 3)
    with pytest.raises(ValueError, match="square"):
        PretrainCorpus(num_identities=2, image_size=128)

    cached = PretrainCorpus(num_identities=2, images_per_identity=2, square=True, image_size=224,
                            cache_dir=str(tmp_path))
    for i in range(4):
        first, second = cached[i], cached[i]  # written, then read back
        assert np.array_equal(np.asarray(first["image"]), np.asarray(square[i]["image"]))
        assert np.array_equal(np.asarray(second["image"]), np.asarray(square[i]["image"]))
    (signature,) = os.listdir(tmp_path)
    assert len([f for f in os.listdir(tmp_path / signature) if f.endswith(".jpg")]) == 4


# ------------------------------------------------------------------------------------------ zero-shot


def test_zero_shot_attributes(heldout_ids, tokens):
    tasks = zero_shot_attributes()
    assert {"upper_colour", "lower_type", "bag", "glasses"} <= set(tasks)
    assert tasks["bag"].classes == ("no bag", "backpack", "handbag")
    assert tasks["glasses"].prompts == ("a photo of a person without glasses", "a photo of a person wearing glasses")
    assert tasks["upper_colour"].prompts[3] == "a photo of a person wearing a red top"
    for task in tasks.values():
        assert len(task.classes) == len(task.prompts) == len(task.values) == len(set(task.prompts))
        assert all(tokens(prompt) <= 77 for prompt in task.prompts)
        labels = [task.label(person) for person in heldout_ids]
        assert set(labels) == set(range(len(task.classes))), task.name  # every class occurs in the held-out set
        assert [task.label(person.to_dict()) for person in heldout_ids[:20]] == labels[:20]
        for person, label in zip(heldout_ids[:20], labels):
            assert task.values[label] == getattr(person, task.field)
    person = dataclasses.replace(heldout_ids[0], bag_type="backpack", bag_colour="red", glasses=True)
    assert tasks["bag"].label(person) == 1 and tasks["glasses"].label(person) == 1
