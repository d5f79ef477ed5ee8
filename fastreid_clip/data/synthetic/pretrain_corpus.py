"""Image-caption pairs of synthetic people for CLIP pretraining, with identities no ReID split contains.

:class:`PretrainCorpus` renders people of the synthetic world (:mod:`.attributes`, :mod:`.render`) with a new
caption for every image (:func:`varied_caption`), so that a small CLIP pretrained on it learns what the
attribute words mean rather than one sentence per identity. :func:`zero_shot_attributes` gives the classes,
labels and text prompts for zero-shot attribute evaluation of such a model.

**Disjointness from SyntheticReID.** The ReID data set of seed ``s`` with ``n`` identities uses
``sample_identities(n, s)``, whose identity ``i`` depends only on ``(s, i)`` and on identities ``0 .. i-1``:
the first ``n`` identities of the 9999 (the most the ReID set can have) are those of every ReID data set of
seed ``s``, whatever its split sizes. The corpus rejects the *appearance* (every rendered attribute: all but
age and gender, see :func:`appearance_key`) of the first :data:`RESERVED_REID_IDS` ReID identities of every
seed in :data:`RESERVED_REID_SEEDS`, so no corpus image shows a person (not even one differing only in the
unrendered age or gender) of any train / query / gallery split those seeds can produce.

**Train vs. held-out.** An appearance belongs to split ``"train"`` or ``"heldout"`` by a fixed hash
(CRC-32 of :func:`appearance_key`, independent of the corpus seed): the splits are disjoint by
construction, whatever their sizes and seeds.

**Attribute space.** Counting only the values :func:`~.attributes.sample_identity` can draw (men wear no
skirts, elderly people have no blonde / red hair, the young and middle-aged no white hair):
2,467,584,000 attribute tuples and 634,521,600 appearances (:func:`attribute_space_size`). The reserved
ReID identities are at most 5 x 9,999 = 49,995 appearances (8e-5 of them), and each split holds about half
of the appearance space: tens of thousands of corpus identities are drawn with hardly any rejections.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import os.path as osp
import tempfile
import zlib
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from . import attributes as _attributes_module
from . import render as _render_module
from .attributes import (
    AGES,
    BAG_COLOURS,
    BAG_TYPES,
    BUILDS,
    GENDERS,
    HAIR_COLOURS,
    HAIR_LENGTHS,
    HEIGHTS,
    LOWER_COLOURS,
    LOWER_TYPES,
    SHOE_COLOURS,
    SKIN_TONES,
    UPPER_COLOURS,
    UPPER_PATTERNS,
    UPPER_TYPES,
    IdentityAttributes,
    caption,
    sample_identities,
    sample_identity,
)
from .render import domain_style, render_image, sample_camera_style

__all__ = [
    "CORPUS_SPLITS",
    "PretrainCorpus",
    "RESERVED_REID_IDS",
    "RESERVED_REID_SEEDS",
    "ZeroShotAttribute",
    "appearance_key",
    "attribute_space_size",
    "corpus_identities",
    "corpus_split_of",
    "letterbox",
    "reserved_reid_appearances",
    "varied_caption",
    "zero_shot_attributes",
]

#: The most identities a SyntheticReID data set can have (4-digit pids).
RESERVED_REID_IDS = 9999
#: SyntheticReID seeds whose identities the corpus never uses: the default ``DATASETS.SYNTHETIC.SEED`` (0,
#: used by every shipped config) and the seeds the tests use (1, 3, 4, 7).
RESERVED_REID_SEEDS = (0, 1, 3, 4, 7)
CORPUS_SPLITS = ("train", "heldout")
_SPLIT_CODES = {"train": 0, "heldout": 1}
#: Stream keys (second seed word) of the corpus; the ReID generator uses 0 .. 3.
_IDENTITY_STREAM, _IMAGE_STREAM, _CAPTION_STREAM, _CAMERA_STREAM = 7, 8, 9, 10
_JPEG_QUALITY = 95
#: CLIP's normalisation mean as RGB, a neutral letterbox fill.
CLIP_MEAN_RGB = (122, 116, 104)

# --------------------------------------------------------------------------------------------- identities

_APPEARANCE_FIELDS = (
    "height", "build", "skin_tone", "hair_colour", "hair_length", "upper_colour", "upper_pattern",
    "upper_type", "lower_colour", "lower_type", "shoes_colour", "bag_type", "bag_colour", "glasses",
)


def appearance_key(attributes: IdentityAttributes) -> tuple:
    """The rendered attributes of an identity (all but ``age`` and ``gender``, which only captions use).

    Two identities with the same key are drawn identically; the corpus excludes and de-duplicates by it.
    """
    return tuple(getattr(attributes, name) for name in _APPEARANCE_FIELDS)


def corpus_split_of(attributes: IdentityAttributes) -> str:
    """``"train"`` or ``"heldout"``: the split an appearance belongs to (CRC-32 parity of its key)."""
    return CORPUS_SPLITS[zlib.crc32(repr(appearance_key(attributes)).encode()) & 1]


def attribute_space_size() -> dict:
    """Number of attribute tuples and of appearances that :func:`~.attributes.sample_identity` can draw.

    Returns:
        ``{"attributes": 2467584000, "appearances": 634521600}``.
    """
    bags = 1 + (len(BAG_TYPES) - 1) * len(BAG_COLOURS)
    common = (len(HEIGHTS) * len(BUILDS) * len(SKIN_TONES) * len(HAIR_LENGTHS) * len(UPPER_COLOURS)
              * len(UPPER_PATTERNS) * len(UPPER_TYPES) * len(LOWER_COLOURS) * len(SHOE_COLOURS) * bags * 2)
    hair = {age: 4 if age == "elderly" else 5 for age in AGES}  # elderly: no blonde / red; others: no white
    lower = {"man": 2, "woman": 3}  # men: no skirt
    attributes = common * sum(hair.values()) * sum(lower.values())
    appearances = common * len(HAIR_COLOURS) * len(LOWER_TYPES)
    return {"attributes": attributes, "appearances": appearances}


@functools.lru_cache(maxsize=None)
def _reserved_for_seed(seed: int, num: int) -> frozenset:
    return frozenset(appearance_key(a) for a in sample_identities(num, seed))


def reserved_reid_appearances(
    seeds: Sequence[int] = RESERVED_REID_SEEDS, num: int = RESERVED_REID_IDS
) -> frozenset:
    """Appearance keys of the first ``num`` SyntheticReID identities of each seed (about 0.4 s per seed, once
    per process)."""
    keys = set()
    for seed in seeds:
        keys |= _reserved_for_seed(int(seed), int(num))
    return frozenset(keys)


@functools.lru_cache(maxsize=8)
def _corpus_identities(num: int, seed: int, split: str) -> tuple:
    reserved = reserved_reid_appearances()
    code = _SPLIT_CODES[split]
    identities, seen = [], set()
    for index in range(num):
        rng = np.random.default_rng([seed, _IDENTITY_STREAM, code, index])
        while True:
            attributes = sample_identity(rng)
            key = appearance_key(attributes)
            if key not in reserved and key not in seen and corpus_split_of(attributes) == split:
                break
        seen.add(key)
        identities.append(attributes)
    return tuple(identities)


def corpus_identities(num: int, seed: int = 1000, split: str = "train") -> list[IdentityAttributes]:
    """The first ``num`` identities of a corpus split, deterministically.

    Identity ``i`` is drawn from its own stream ``(seed, 7, split code, i)`` and redrawn until its appearance
    is not a reserved ReID one (:func:`reserved_reid_appearances`), belongs to ``split``
    (:func:`corpus_split_of`) and differs from identities ``0 .. i-1``; so the first ``m`` identities do not
    depend on ``num >= m``.

    Args:
        num: Number of identities (>= 0).
        seed: Corpus seed.
        split: ``"train"`` or ``"heldout"``.
    """
    if split not in _SPLIT_CODES:
        raise ValueError(f"split must be one of {CORPUS_SPLITS}, got {split!r}")
    if num < 0:
        raise ValueError(f"num must be >= 0, got {num}")
    return list(_corpus_identities(int(num), int(seed), split))


# ----------------------------------------------------------------------------------------------- captions

_GENDER_WORDS = {"man": ("man", "male", "guy", "gentleman"), "woman": ("woman", "female", "lady")}
_PRONOUNS = {"man": "he", "woman": "she"}
_AGE_WORDS = {"young": ("young",), "middle-aged": ("middle-aged",), "elderly": ("elderly", "old", "older")}
_NEUTRAL_SUBJECTS = ("person", "pedestrian")
#: Synonyms of each garment / bag type (the renderer's vocabulary first); "top" stands for any upper garment.
UPPER_WORDS = {"shirt": ("shirt",), "t-shirt": ("t-shirt", "tee", "tee shirt"), "jacket": ("jacket",),
               "coat": ("coat", "overcoat")}
UPPER_GENERIC = "top"
LOWER_WORDS = {"trousers": ("trousers", "pants"), "shorts": ("shorts",), "skirt": ("skirt",)}
BAG_WORDS = {"backpack": ("backpack", "rucksack"), "handbag": ("handbag", "purse")}
GLASSES_WORDS = ("glasses", "eyeglasses", "spectacles")
SHOE_WORDS = ("shoes", "sneakers")
_PREFIXES = ("", "", "a photo of ", "an image of ", "a picture of ")
_FACTS = ("upper", "lower", "shoes", "bag", "glasses", "hair")
_MIN_FACTS = 2


def _a(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _choice(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _upper_np(p: IdentityAttributes, rng: np.random.Generator) -> str:
    words = [p.upper_colour]
    if p.upper_pattern != "plain" and rng.random() < 0.75:
        words.append(p.upper_pattern)
    elif p.upper_pattern == "plain" and rng.random() < 0.15:
        words.append("plain")
    words.append(UPPER_GENERIC if rng.random() < 0.25 else _choice(rng, UPPER_WORDS[p.upper_type]))
    return _a(" ".join(words))


def _lower_np(p: IdentityAttributes, rng: np.random.Generator) -> str:
    noun = _choice(rng, LOWER_WORDS[p.lower_type])
    phrase = noun if rng.random() < 0.15 else f"{p.lower_colour} {noun}"
    return _a(phrase) if p.lower_type == "skirt" else phrase


def _bag_np(p: IdentityAttributes, rng: np.random.Generator) -> str:
    noun = _choice(rng, BAG_WORDS[p.bag_type])
    return _a(noun if rng.random() < 0.15 else f"{p.bag_colour} {noun}")


def _hair_np(p: IdentityAttributes, rng: np.random.Generator) -> str:
    u = rng.random()
    if u < 0.6:
        return f"{p.hair_length} {p.hair_colour} hair"
    return f"{p.hair_colour} hair" if u < 0.85 else f"{p.hair_length} hair"


def _clause(fact: str, p: IdentityAttributes, rng: np.random.Generator) -> tuple[str, str]:
    """(verb, object) of one fact for the one-sentence form, e.g. ("wearing", "a red shirt")."""
    if fact in ("upper", "lower", "shoes"):
        if fact == "upper":
            obj = _upper_np(p, rng)
        elif fact == "lower":
            obj = _lower_np(p, rng)
        else:
            obj = f"{p.shoes_colour} {_choice(rng, SHOE_WORDS)}"
        return _choice(rng, ("wearing", "wearing", "in")), obj
    if fact == "bag":
        if p.bag_type == "none":
            return _choice(rng, (("with", "no bag"), ("without", "a bag"), ("carrying", "nothing")))
        return _choice(rng, ("carrying", "with")), _bag_np(p, rng)
    if fact == "glasses":
        word = _choice(rng, GLASSES_WORDS)
        if not p.glasses:
            return _choice(rng, (("with", f"no {word}"), ("without", word)))
        return _choice(rng, ("wearing", "with")), word
    return "with", _hair_np(p, rng)


def _sentence(fact: str, p: IdentityAttributes, rng: np.random.Generator, subject: str) -> str:
    """One sentence about one fact, e.g. "he carries a black rucksack"."""
    if fact in ("upper", "lower", "shoes"):
        verb, obj = _clause(fact, p, rng)
        return f"{subject} {_choice(rng, ('is wearing', 'wears', 'has on'))} {obj}"
    if fact == "bag":
        if p.bag_type == "none":
            return f"{subject} {_choice(rng, ('carries nothing', 'has no bag', 'is not carrying a bag'))}"
        return f"{subject} {_choice(rng, ('carries', 'is carrying', 'has'))} {_bag_np(p, rng)}"
    if fact == "glasses":
        word = _choice(rng, GLASSES_WORDS)
        if not p.glasses:
            return f"{subject} {_choice(rng, ('wears no ', 'does not wear ', 'has no '))}{word}"
        return f"{subject} {_choice(rng, ('wears ', 'is wearing ', 'has '))}{word}"
    return f"{subject} has {_hair_np(p, rng)}"


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _pick_facts(p: IdentityAttributes, rng: np.random.Generator) -> list[str]:
    """A random subset (at least two) of the facts to mention, in random order."""
    probs = {"upper": 0.9, "lower": 0.75, "shoes": 0.35, "hair": 0.4,
             "bag": 0.7 if p.bag_type != "none" else 0.35, "glasses": 0.7 if p.glasses else 0.3}
    facts = [fact for fact in _FACTS if rng.random() < probs[fact]]
    rest = [fact for fact in _FACTS if fact not in facts]
    while len(facts) < _MIN_FACTS:
        facts.append(rest.pop(int(rng.integers(len(rest)))))
    return [facts[i] for i in rng.permutation(len(facts))]


def _subject(p: IdentityAttributes, rng: np.random.Generator) -> tuple[str, bool]:
    """("young man", gendered?) - gender and age each left out sometimes."""
    if rng.random() < 0.2:
        return _choice(rng, _NEUTRAL_SUBJECTS), False
    noun = _choice(rng, _GENDER_WORDS[p.gender])
    if rng.random() < 0.35:
        noun = f"{_choice(rng, _AGE_WORDS[p.age])} {noun}"
    return noun, True


def _capitalise(text: str) -> str:
    return text[0].upper() + text[1:]


def varied_caption(attributes: IdentityAttributes, rng: np.random.Generator) -> str:
    """A caption of one image of ``attributes``, varied by ``rng``: form, which facts, order and words.

    Forms: one sentence ("A photo of a guy in a red striped tee and blue pants, carrying a black rucksack"),
    several sentences ("A lady. She has long blonde hair. She wears a beige coat."), an attribute list
    ("woman, navy top, grey skirt, no bag") and, one time in ten, the CLIP-SCGI caption of
    :func:`~.attributes.caption`. Except in the latter, a random subset of at least two of the facts
    upper garment, lower garment, shoes, bag, glasses and hair is mentioned, in random order, with
    synonyms (t-shirt / tee, trousers / pants, backpack / rucksack, man / male / guy, ...), sometimes
    without pattern, type ("top") or colour, sometimes as a negative ("no bag", "without glasses").
    Colour names are the renderer's vocabulary, verbatim. At most 77 CLIP tokens.

    Args:
        attributes: The identity shown.
        rng: Source of the variation (one stream per image).
    """
    p = attributes
    form = rng.random()
    if form < 0.1:
        return caption(p)
    facts = _pick_facts(p, rng)
    subject, gendered = _subject(p, rng)
    if form < 0.55:  # one sentence
        clauses = [_clause(fact, p, rng) for fact in facts]
        merged: list[tuple[str, list[str]]] = []
        for verb, obj in clauses:
            if merged and merged[-1][0] == verb:
                merged[-1][1].append(obj)
            else:
                merged.append((verb, [obj]))
        body = _join([f"{verb} {_join(objs)}" for verb, objs in merged])
        text = f"{_choice(rng, _PREFIXES)}{_a(subject)} {body}"
        return _capitalise(text) + ("." if rng.random() < 0.5 else "")
    if form < 0.85:  # several sentences
        pronoun = _PRONOUNS[p.gender] if gendered else f"the {subject}"
        sentences = [f"{_choice(rng, _PREFIXES)}{_a(subject)}"]
        if rng.random() < 0.5:  # the first fact goes into the opening sentence
            sentences = [f"{sentences[0]} {' '.join(_clause(facts[0], p, rng))}"]
            facts = facts[1:]
        sentences += [_sentence(fact, p, rng, pronoun) for fact in facts]
        return " ".join(_capitalise(s) + "." for s in sentences)
    # attribute list
    tags = [subject]
    for fact in facts:
        verb, obj = _clause(fact, p, rng)
        if verb == "without":
            obj = f"no {obj.removeprefix('a ')}"
        elif obj == "nothing":
            obj = "no bag"
        tags.append(obj.removeprefix("a ").removeprefix("an ") if fact in ("upper", "lower", "bag") else obj)
    return ", ".join(tags)


# ---------------------------------------------------------------------------------------------- zero-shot


@dataclass(frozen=True)
class ZeroShotAttribute:
    """One zero-shot classification task over identities.

    Attributes:
        name: Task name, e.g. ``"upper_colour"``.
        field: The :class:`~.attributes.IdentityAttributes` field it reads.
        values: The field's value of each class, in class order.
        classes: Class names, in class order.
        prompts: One text prompt per class.
    """

    name: str
    field: str
    values: tuple
    classes: tuple[str, ...]
    prompts: tuple[str, ...]

    def label(self, attributes: Union[IdentityAttributes, dict]) -> int:
        """Class index of an identity (its attributes, or their ``to_dict()``)."""
        value = attributes[self.field] if isinstance(attributes, dict) else getattr(attributes, self.field)
        return self.values.index(value)


def zero_shot_attributes() -> dict[str, ZeroShotAttribute]:
    """Zero-shot attribute tasks with one text prompt per class (data only).

    Returns:
        ``{name: ZeroShotAttribute}`` for ``upper_colour`` (16 classes), ``upper_type`` (4), ``lower_colour``
        (10), ``lower_type`` (3), ``bag`` (none / backpack / handbag), ``glasses`` (no / yes) and ``gender``
        (2). Prompts read e.g. "a photo of a person wearing a red top", "a photo of a person carrying a
        backpack", "a photo of a person without glasses"; they use the caption vocabulary of
        :func:`varied_caption`.
    """
    person = "a photo of a person"
    tasks = [
        ZeroShotAttribute("upper_colour", "upper_colour", UPPER_COLOURS, UPPER_COLOURS,
                          tuple(f"{person} wearing {_a(c + ' top')}" for c in UPPER_COLOURS)),
        ZeroShotAttribute("upper_type", "upper_type", UPPER_TYPES, UPPER_TYPES,
                          tuple(f"{person} wearing {_a(t)}" for t in UPPER_TYPES)),
        ZeroShotAttribute("lower_colour", "lower_colour", LOWER_COLOURS, LOWER_COLOURS,
                          tuple(f"{person} wearing {c} trousers" for c in LOWER_COLOURS)),
        ZeroShotAttribute("lower_type", "lower_type", LOWER_TYPES, LOWER_TYPES,
                          tuple(f"{person} wearing {_a(t) if t == 'skirt' else t}" for t in LOWER_TYPES)),
        ZeroShotAttribute("bag", "bag_type", BAG_TYPES, ("no bag", "backpack", "handbag"),
                          (f"{person} without a bag", f"{person} carrying a backpack", f"{person} carrying a handbag")),
        ZeroShotAttribute("glasses", "glasses", (False, True), ("no glasses", "glasses"),
                          (f"{person} without glasses", f"{person} wearing glasses")),
        ZeroShotAttribute("gender", "gender", GENDERS, GENDERS, ("a photo of a man", "a photo of a woman")),
    ]
    return {task.name: task for task in tasks}


# ------------------------------------------------------------------------------------------------ images


def letterbox(image: Image.Image, size: int, fill: Union[str, Sequence[int]] = "edge") -> Image.Image:
    """Fits ``image`` into a ``size`` x ``size`` square without distortion (bicubic resize, centred).

    Args:
        image: An RGB image, e.g. a 128 x 256 (W x H) render.
        size: Side of the square output.
        fill: What fills the bars: ``"edge"`` continues the scene, each row of a bar taking the mean colour of
            the outermost 4 columns of that row on its side (wall, horizon and floor carry on, the noise
            averages out); ``"clip_mean"`` is CLIP's mean colour (:data:`CLIP_MEAN_RGB`); or an RGB triple.
    """
    image = image.convert("RGB")
    width, height = image.size
    scale = size / max(width, height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), Image.BICUBIC)
    if new_w == new_h == size:
        return image
    pixels = np.asarray(image)
    if isinstance(fill, str) and fill == "edge":
        canvas = np.empty((size, size, 3), dtype=np.uint8)
        left, top = (size - new_w) // 2, (size - new_h) // 2
        if new_w < size:  # side bars: per-row colours
            canvas[:, :left] = pixels[:, :4].mean(1, keepdims=True).round().astype(np.uint8)
            canvas[:, left + new_w:] = pixels[:, -4:].mean(1, keepdims=True).round().astype(np.uint8)
        else:  # top / bottom bars: per-column colours
            canvas[:top] = pixels[:4].mean(0, keepdims=True).round().astype(np.uint8)
            canvas[top + new_h:] = pixels[-4:].mean(0, keepdims=True).round().astype(np.uint8)
        canvas[top:top + new_h, left:left + new_w] = pixels
        return Image.fromarray(canvas)
    if isinstance(fill, str):
        if fill != "clip_mean":
            raise ValueError(f"fill must be 'edge', 'clip_mean' or an RGB triple, got {fill!r}")
        fill = CLIP_MEAN_RGB
    canvas = Image.new("RGB", (size, size), tuple(int(c) for c in fill))
    canvas.paste(image, ((size - new_w) // 2, (size - new_h) // 2))
    return canvas


def _corpus_digest() -> str:
    """Digest of the drawing and sampling code (cache key)."""
    digest = hashlib.sha1()
    for module in (_attributes_module, _render_module):
        with open(module.__file__, "rb") as f:
            digest.update(f.read())
    with open(__file__, "rb") as f:
        digest.update(f.read())
    return digest.hexdigest()[:12]


class PretrainCorpus(Dataset):
    """Image-caption pairs of synthetic identities that no SyntheticReID split of the reserved seeds has.

    Item ``i`` shows identity ``i // images_per_identity`` (its ``shot = i % images_per_identity``-th image)
    and is a pure function of ``(seed, split, identity, shot)`` and of the constructor's rendering
    arguments: each image picks a random domain (of ``num_domains``, :func:`~.render.domain_style`) and a
    random camera of it (``num_cameras`` per domain, :func:`~.render.sample_camera_style`, the same for
    both splits), is rendered with its own jitter (:func:`~.render.render_image`), passes through a JPEG
    round trip (quality 95, 4:4:4, like the ReID set's files) and gets its own :func:`varied_caption`.

    Item: ``{"image": PIL RGB, "caption": str, "identity": int (index in the split), "attributes":
    IdentityAttributes, "domain": int, "camera": int}`` (``image`` after ``transform`` when given).

    Args:
        split: ``"train"`` (pretraining) or ``"heldout"`` (zero-shot evaluation); disjoint identities.
        num_identities: Identities of the split (see :func:`corpus_identities`).
        images_per_identity: Images (and captions) per identity.
        seed: Corpus seed.
        height: Render height in pixels.
        width: Render width in pixels.
        num_domains: Domains the images are spread over.
        num_cameras: Cameras per domain.
        square: Letterbox the render onto an ``image_size`` square (:func:`letterbox`).
        image_size: Side of the square images (default ``max(height, width)``); only with ``square``.
        fill: Letterbox fill, see :func:`letterbox`.
        cache_dir: When given, each render's JPEG is written once under
            ``<cache_dir>/<digest of parameters and code>/`` and read back afterwards (safe with concurrent
            DataLoader workers); cached and fresh items are identical.
        transform: Optional callable applied to the PIL image.
    """

    def __init__(
        self,
        split: str = "train",
        num_identities: int = 2000,
        images_per_identity: int = 8,
        seed: int = 1000,
        height: int = 256,
        width: int = 128,
        num_domains: int = 4,
        num_cameras: int = 8,
        square: bool = False,
        image_size: Optional[int] = None,
        fill: Union[str, Sequence[int]] = "edge",
        cache_dir: Optional[str] = None,
        transform: Optional[Callable] = None,
    ):
        if split not in _SPLIT_CODES:
            raise ValueError(f"split must be one of {CORPUS_SPLITS}, got {split!r}")
        for name, value, low in (("num_identities", num_identities, 1), ("images_per_identity", images_per_identity, 1),
                                 ("seed", seed, 0), ("height", height, 32), ("width", width, 16),
                                 ("num_domains", num_domains, 1), ("num_cameras", num_cameras, 1)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if image_size is not None and not square:
            raise ValueError("image_size is the side of square images: pass square=True (or set height / width)")
        if image_size is not None and image_size < 16:
            raise ValueError(f"image_size must be >= 16, got {image_size}")
        self.split, self.seed = split, int(seed)
        self.num_identities, self.images_per_identity = int(num_identities), int(images_per_identity)
        self.height, self.width = int(height), int(width)
        self.num_domains, self.num_cameras = int(num_domains), int(num_cameras)
        self.square = bool(square)
        self.image_size = int(image_size) if image_size is not None else max(self.height, self.width)
        self.fill = fill
        self.transform = transform
        self.identities = corpus_identities(self.num_identities, self.seed, split)
        self._code = _SPLIT_CODES[split]
        self._domains = [domain_style(d, self.num_domains) for d in range(self.num_domains)]
        self._cameras = {
            (d, c): sample_camera_style(np.random.default_rng([self.seed, _CAMERA_STREAM, d, c]),
                                        self._domains[d], self.height, self.width)
            for d in range(self.num_domains) for c in range(self.num_cameras)
        }
        self.cache_dir = None
        if cache_dir is not None:
            key = {"code": _corpus_digest(), "seed": self.seed, "split": split, "height": self.height,
                   "width": self.width, "num_domains": self.num_domains, "num_cameras": self.num_cameras}
            signature = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
            self.cache_dir = osp.join(osp.abspath(cache_dir), signature)
            os.makedirs(self.cache_dir, exist_ok=True)
            with open(osp.join(self.cache_dir, "params.json"), "w") as f:
                json.dump(key, f)

    def __len__(self) -> int:
        return self.num_identities * self.images_per_identity

    def _view(self, identity: int, shot: int) -> tuple[int, int]:
        rng = np.random.default_rng([self.seed, _IMAGE_STREAM, self._code, identity, shot])
        return int(rng.integers(self.num_domains)), int(rng.integers(self.num_cameras))

    def _render_jpeg(self, identity: int, shot: int) -> bytes:
        rng = np.random.default_rng([self.seed, _IMAGE_STREAM, self._code, identity, shot])
        domain, camera = int(rng.integers(self.num_domains)), int(rng.integers(self.num_cameras))
        image = render_image(self.identities[identity], self._domains[domain], self._cameras[domain, camera], rng)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=_JPEG_QUALITY, subsampling=0)
        return buffer.getvalue()

    def _jpeg(self, identity: int, shot: int) -> bytes:
        if self.cache_dir is None:
            return self._render_jpeg(identity, shot)
        path = osp.join(self.cache_dir, f"{identity:06d}_{shot:04d}.jpg")
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            pass
        data = self._render_jpeg(identity, shot)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".jpg", dir=self.cache_dir)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return data

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"corpus index {index} out of range [0, {len(self)})")
        identity, shot = divmod(index, self.images_per_identity)
        image = Image.open(io.BytesIO(self._jpeg(identity, shot))).convert("RGB")
        if self.square:
            image = letterbox(image, self.image_size, self.fill)
        if self.transform is not None:
            image = self.transform(image)
        attributes = self.identities[identity]
        rng = np.random.default_rng([self.seed, _CAPTION_STREAM, self._code, identity, shot])
        domain, camera = self._view(identity, shot)
        return {"image": image, "caption": varied_caption(attributes, rng), "identity": identity,
                "attributes": attributes, "domain": domain, "camera": camera}
