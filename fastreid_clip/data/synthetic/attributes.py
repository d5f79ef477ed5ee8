"""Identity attributes of the synthetic ReID data and their CLIP-SCGI-style captions.

An identity *is* its attributes: every image of a person is drawn from the same
:class:`IdentityAttributes`, and the caption depends on nothing else. The vocabularies below are shared
with the renderer (:mod:`.render`), which maps every colour name to an RGB triple through
:data:`COLOURS` and :data:`HAIR_COLOURS`.

The caption follows the CLIP-SCGI template::

    A [age] [gender] is wearing [upper clothes]. [He/She] is wearing [upper clothes] and [lower clothes].
    The [gender] is wearing [shoes] and carrying [others]. The [gender] has [hair] [and glasses or not].
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
from dataclasses import dataclass

import numpy as np

__all__ = [
    "AGES",
    "BAG_COLOURS",
    "BAG_TYPES",
    "BUILDS",
    "COLOURS",
    "GENDERS",
    "HAIR_COLOURS",
    "HAIR_LENGTHS",
    "HEIGHTS",
    "IdentityAttributes",
    "LOWER_COLOURS",
    "LOWER_TYPES",
    "SHOE_COLOURS",
    "SKIN_TONES",
    "UPPER_COLOURS",
    "UPPER_PATTERNS",
    "UPPER_TYPES",
    "caption",
    "sample_identities",
    "sample_identity",
]

#: Clothing / bag / shoe colour name -> RGB (uint8 range). Near-duplicates (blue / light blue / navy,
#: red / dark red / pink) are deliberate: they make some identities hard to tell apart.
COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (28, 28, 30),
    "white": (232, 232, 228),
    "grey": (128, 128, 130),
    "red": (200, 30, 35),
    "dark red": (120, 20, 30),
    "pink": (235, 130, 170),
    "orange": (240, 130, 20),
    "yellow": (235, 210, 40),
    "green": (40, 150, 60),
    "dark green": (25, 80, 40),
    "light blue": (120, 175, 230),
    "blue": (35, 70, 190),
    "navy": (25, 30, 90),
    "purple": (120, 50, 150),
    "brown": (110, 70, 40),
    "beige": (210, 190, 150),
}

AGES = ("young", "middle-aged", "elderly")
GENDERS = ("man", "woman")
HEIGHTS = ("short", "average", "tall")
BUILDS = ("slim", "average", "heavy")
#: Skin tones, light to dark, as RGB.
SKIN_TONES: tuple[tuple[int, int, int], ...] = (
    (241, 204, 178),
    (224, 178, 140),
    (190, 140, 100),
    (140, 95, 65),
    (95, 62, 42),
)
#: Hair colour name -> RGB.
HAIR_COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (22, 20, 20),
    "brown": (90, 55, 30),
    "blonde": (225, 195, 120),
    "grey": (150, 150, 150),
    "white": (225, 225, 220),
    "red": (170, 70, 30),
}
HAIR_LENGTHS = ("short", "long")
UPPER_COLOURS = (
    "black", "white", "grey", "red", "dark red", "pink", "orange", "yellow",
    "green", "dark green", "light blue", "blue", "navy", "purple", "brown", "beige",
)
UPPER_PATTERNS = ("plain", "striped", "checked")
UPPER_TYPES = ("shirt", "t-shirt", "jacket", "coat")
LOWER_COLOURS = ("black", "grey", "blue", "navy", "light blue", "brown", "beige", "white", "dark green", "red")
LOWER_TYPES = ("trousers", "shorts", "skirt")
SHOE_COLOURS = ("black", "white", "brown", "grey", "red", "blue")
BAG_TYPES = ("none", "backpack", "handbag")
BAG_COLOURS = ("black", "brown", "red", "blue", "green", "grey", "pink", "yellow")


@dataclass(frozen=True)
class IdentityAttributes:
    """Everything that defines one synthetic person.

    Attributes:
        age: One of :data:`AGES`.
        gender: One of :data:`GENDERS`.
        height: Body height class, one of :data:`HEIGHTS`.
        build: Body width class, one of :data:`BUILDS`.
        skin_tone: Index into :data:`SKIN_TONES`.
        hair_colour: A key of :data:`HAIR_COLOURS`.
        hair_length: One of :data:`HAIR_LENGTHS`.
        upper_colour: One of :data:`UPPER_COLOURS`.
        upper_pattern: One of :data:`UPPER_PATTERNS`.
        upper_type: One of :data:`UPPER_TYPES`.
        lower_colour: One of :data:`LOWER_COLOURS`.
        lower_type: One of :data:`LOWER_TYPES`.
        shoes_colour: One of :data:`SHOE_COLOURS`.
        bag_type: One of :data:`BAG_TYPES`.
        bag_colour: One of :data:`BAG_COLOURS`, or ``""`` when ``bag_type == "none"``.
        glasses: Whether the person wears glasses.
    """

    age: str
    gender: str
    height: str
    build: str
    skin_tone: int
    hair_colour: str
    hair_length: str
    upper_colour: str
    upper_pattern: str
    upper_type: str
    lower_colour: str
    lower_type: str
    shoes_colour: str
    bag_type: str
    bag_colour: str
    glasses: bool

    def to_dict(self) -> dict:
        """Returns the attributes as a JSON-serialisable ``dict`` (field name -> value)."""
        return dataclasses.asdict(self)


@functools.lru_cache(maxsize=None)
def _cdf(probs: tuple[float, ...]) -> tuple[float, ...]:
    values = np.cumsum(np.asarray(probs, dtype=np.float64))
    return tuple(float(v) for v in values / values[-1])


def _pick(rng: np.random.Generator, options: tuple, probs: tuple[float, ...] | None = None):
    """Draws one element of ``options`` (uniformly, or with the given probabilities).

    The same draws as ``options[rng.choice(len(options), p=probs)]`` (numpy's ``Generator.choice`` takes
    ``integers(0, n)`` without ``p``, and with ``p`` the right-bisection of one ``random()`` in the normalised
    cumulative sum), without its per-call argument checks: about 3x faster, which matters when the pretraining
    corpus reserves the tens of thousands of identities the ReID data can use (tested equal to ``choice``).
    """
    if probs is None:
        return options[int(rng.integers(0, len(options)))]
    return options[bisect.bisect_right(_cdf(probs), rng.random())]


def sample_identity(rng: np.random.Generator) -> IdentityAttributes:
    """Draws one identity, with a few realistic correlations (e.g. elderly people mostly have grey hair).

    Args:
        rng: Source of randomness; the result is a pure function of its state.

    Returns:
        The sampled attributes.
    """
    gender = _pick(rng, GENDERS)
    age = _pick(rng, AGES, (0.45, 0.35, 0.2))
    woman = gender == "woman"
    if age == "elderly":
        hair_colour = _pick(rng, tuple(HAIR_COLOURS), (0.1, 0.05, 0.0, 0.5, 0.35, 0.0))
    else:
        hair_colour = _pick(rng, tuple(HAIR_COLOURS), (0.4, 0.3, 0.15, 0.05, 0.0, 0.1))
    lower_type = _pick(rng, LOWER_TYPES, (0.55, 0.15, 0.3) if woman else (0.75, 0.25, 0.0))
    bag_type = _pick(rng, BAG_TYPES, (0.4, 0.3, 0.3) if woman else (0.5, 0.4, 0.1))
    return IdentityAttributes(
        age=age,
        gender=gender,
        height=_pick(rng, HEIGHTS, (0.35, 0.4, 0.25) if woman else (0.2, 0.4, 0.4)),
        build=_pick(rng, BUILDS),
        skin_tone=int(rng.integers(len(SKIN_TONES))),
        hair_colour=hair_colour,
        hair_length=_pick(rng, HAIR_LENGTHS, (0.3, 0.7) if woman else (0.85, 0.15)),
        upper_colour=_pick(rng, UPPER_COLOURS),
        upper_pattern=_pick(rng, UPPER_PATTERNS, (0.5, 0.3, 0.2)),
        upper_type=_pick(rng, UPPER_TYPES),
        lower_colour=_pick(rng, LOWER_COLOURS),
        lower_type=lower_type,
        shoes_colour=_pick(rng, SHOE_COLOURS),
        bag_type=bag_type,
        bag_colour="" if bag_type == "none" else _pick(rng, BAG_COLOURS),
        glasses=bool(rng.random() < (0.5 if age == "elderly" else 0.2)),
    )


def sample_identities(num: int, seed: int) -> list[IdentityAttributes]:
    """Draws ``num`` pairwise-different identities, deterministically.

    Identity ``i`` is drawn from its own stream (``seed``, ``i``) and redrawn from it until it differs from
    identities ``0 .. i-1``.

    Args:
        num: Number of identities.
        seed: Generation seed.

    Returns:
        ``num`` distinct attribute sets, in identity order.
    """
    identities: list[IdentityAttributes] = []
    seen: set[IdentityAttributes] = set()
    for index in range(num):
        rng = np.random.default_rng([seed, 0, index])
        attributes = sample_identity(rng)
        while attributes in seen:
            attributes = sample_identity(rng)
        seen.add(attributes)
        identities.append(attributes)
    return identities


def _with_article(phrase: str) -> str:
    """Prefixes ``phrase`` with "a" or "an"."""
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _upper_phrase(attributes: IdentityAttributes) -> str:
    pattern = "" if attributes.upper_pattern == "plain" else attributes.upper_pattern + " "
    return _with_article(f"{attributes.upper_colour} {pattern}{attributes.upper_type}")


def _lower_phrase(attributes: IdentityAttributes) -> str:
    phrase = f"{attributes.lower_colour} {attributes.lower_type}"
    return _with_article(phrase) if attributes.lower_type == "skirt" else phrase


def caption(attributes: IdentityAttributes) -> str:
    """Writes the CLIP-SCGI attribute caption of an identity.

    Args:
        attributes: The identity.

    Returns:
        E.g. "A young man is wearing a red striped shirt. He is wearing a red striped shirt and blue trousers.
        The man is wearing black shoes and carrying a green backpack. The man has short black hair and wears
        glasses." At most 77 CLIP tokens for every possible identity.
    """
    gender = attributes.gender
    pronoun = "He" if gender == "man" else "She"
    upper = _upper_phrase(attributes)
    others = "nothing" if attributes.bag_type == "none" else _with_article(
        f"{attributes.bag_colour} {attributes.bag_type}"
    )
    glasses = "wears glasses" if attributes.glasses else "wears no glasses"
    age_gender = _with_article(f"{attributes.age} {gender}")
    return (
        f"{age_gender[0].upper()}{age_gender[1:]} is wearing {upper}. "
        f"{pronoun} is wearing {upper} and {_lower_phrase(attributes)}. "
        f"The {gender} is wearing {attributes.shoes_colour} shoes and carrying {others}. "
        f"The {gender} has {attributes.hair_length} {attributes.hair_colour} hair and {glasses}."
    )
