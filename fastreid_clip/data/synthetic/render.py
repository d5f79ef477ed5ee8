"""Procedural drawing of one synthetic person image with PIL primitives.

An image is the composition of three levels of appearance:

* the **domain** (:class:`DomainStyle`, :func:`domain_style`): background palette family, colour
  temperature, contrast, sensor noise and blur, i.e. the look of a whole "dataset";
* the **camera** (:class:`CameraStyle`, :func:`sample_camera_style`): its background picture within the
  domain's palette, its illumination (brightness and colour cast), where and how large people appear,
  how much they stride, which way they mostly walk and how often something occludes them;
* the **image** (:func:`render_image`): seeded jitter around the camera's values (scale, position, walking
  phase, horizontal flip, brightness, an occluder or not, noise).

The person is drawn from its :class:`~.attributes.IdentityAttributes` only, so every image of an identity
shows the same clothes, hair, bag and body shape.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .attributes import COLOURS, HAIR_COLOURS, SKIN_TONES, IdentityAttributes

__all__ = ["CameraStyle", "DomainStyle", "domain_style", "render_image", "sample_camera_style"]

RGB = tuple[int, int, int]

#: Domain looks, cycled over domain indices: (background value, background saturation, contrast,
#: noise standard deviation in grey levels, box blur radius in pixels).
_DOMAIN_LOOKS = (
    (0.82, 0.35, 1.00, 2.0, 0.0),  # bright, crisp
    (0.42, 0.50, 0.78, 7.0, 0.9),  # dim, washed-out, noisy, soft
    (0.64, 0.30, 1.22, 4.0, 0.4),  # medium, contrasty
)
_BACKGROUND_TEXTURES = ("plain", "tiles", "stripes", "bricks")
_HEIGHT_FACTORS = {"short": 0.9, "average": 0.96, "tall": 1.02}
_BUILD_FACTORS = {"slim": 0.82, "average": 1.0, "heavy": 1.22}


@dataclass(frozen=True)
class DomainStyle:
    """Global look shared by all cameras and images of one domain.

    Attributes:
        hue: Hue of the background palette family, in [0, 1).
        value: Mean background brightness, in [0, 1].
        saturation: Mean background saturation, in [0, 1].
        tint: Per-channel RGB gains (colour temperature), shape (3,), around 1.
        contrast: Contrast factor around mid-grey applied to the whole image.
        noise_std: Standard deviation of the additive luminance noise, in grey levels.
        blur_radius: Box blur radius in pixels, may be fractional (0: none).
    """

    hue: float
    value: float
    saturation: float
    tint: tuple[float, float, float]
    contrast: float
    noise_std: float
    blur_radius: float


@dataclass
class CameraStyle:
    """What one camera of one domain does to every image it takes.

    Attributes:
        background: The camera's empty scene, RGB, size (width, height) of the images.
        gain: Illumination as per-channel RGB gains (brightness times colour cast), shape (3,).
        scale: Mean person height as a fraction of the image height.
        x_offset: Mean horizontal offset of the person centre, as a fraction of the image width.
        foot_y: Mean vertical position of the feet, as a fraction of the image height.
        stride: Largest leg swing angle in radians (pose).
        p_flip: Probability that a person faces left rather than right.
        p_occlusion: Probability that an object occludes part of the person.
    """

    background: Image.Image
    gain: np.ndarray
    scale: float
    x_offset: float
    foot_y: float
    stride: float
    p_flip: float
    p_occlusion: float


def _hsv(hue: float, saturation: float, value: float) -> RGB:
    r, g, b = colorsys.hsv_to_rgb(hue % 1.0, min(max(saturation, 0.0), 1.0), min(max(value, 0.0), 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


def _shade(colour: RGB, factor: float) -> RGB:
    """Darkens (``factor < 1``) or lightens (``factor > 1``, towards white) a colour."""
    if factor <= 1.0:
        return tuple(int(c * factor) for c in colour)
    return tuple(int(c + (255 - c) * (factor - 1.0)) for c in colour)


def domain_style(domain: int, num_domains: int) -> DomainStyle:
    """The fixed look of domain ``domain`` out of ``num_domains``.

    Background hues are spread evenly around the colour wheel and the other properties cycle through
    three contrasting looks, so that any two domains differ visibly.

    Args:
        domain: Domain index, ``0 <= domain < num_domains``.
        num_domains: Number of domains.

    Returns:
        The domain's style (independent of the generation seed).
    """
    hue = (0.08 + domain / num_domains) % 1.0
    value, saturation, contrast, noise_std, blur_radius = _DOMAIN_LOOKS[domain % len(_DOMAIN_LOOKS)]
    pure = np.array(colorsys.hsv_to_rgb(hue, 1.0, 1.0))
    tint = 1.0 + 0.2 * (pure - pure.mean())
    return DomainStyle(
        hue=hue,
        value=value,
        saturation=saturation,
        tint=tuple(float(t) for t in tint / tint.mean()),
        contrast=contrast,
        noise_std=noise_std,
        blur_radius=blur_radius,
    )


def _draw_background(rng: np.random.Generator, style: DomainStyle, height: int, width: int) -> Image.Image:
    """Draws an empty scene (wall and floor with one of a few textures) in the domain's palette."""

    def palette_colour(value_scale: float) -> RGB:
        return _hsv(
            style.hue + rng.normal(0.0, 0.05),
            style.saturation * rng.uniform(0.6, 1.4),
            style.value * value_scale * rng.uniform(0.8, 1.2),
        )

    wall, floor, detail = palette_colour(1.0), palette_colour(0.7), palette_colour(0.8)
    horizon = int(height * rng.uniform(0.55, 0.8))
    # Vertical light gradient on the wall, flat floor.
    ramp = np.linspace(1.08, 0.92, horizon, dtype=np.float32)[:, None, None]
    canvas = np.empty((height, width, 3), dtype=np.float32)
    canvas[:horizon] = ramp * np.asarray(wall, dtype=np.float32)
    canvas[horizon:] = np.asarray(floor, dtype=np.float32)
    image = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    texture = _BACKGROUND_TEXTURES[int(rng.integers(len(_BACKGROUND_TEXTURES)))]
    if texture == "tiles":
        step = int(rng.integers(10, 22))
        for x in range(int(rng.integers(step)), width, step):
            draw.line([(x, horizon), (x, height)], fill=detail, width=1)
        for y in range(horizon, height, step // 2):
            draw.line([(0, y), (width, y)], fill=detail, width=1)
    elif texture == "stripes":
        step = int(rng.integers(14, 40))
        for x in range(int(rng.integers(step)), width, step):
            draw.rectangle([x, 0, x + step // 2, horizon], fill=detail)
    elif texture == "bricks":
        brick_h = int(rng.integers(8, 16))
        brick_w = 2 * brick_h
        for row, y in enumerate(range(0, horizon, brick_h)):
            shift = (row % 2) * brick_w // 2
            draw.line([(0, y), (width, y)], fill=detail, width=1)
            for x in range(-shift, width, brick_w):
                draw.line([(x, y), (x, y + brick_h)], fill=detail, width=1)
    draw.line([(0, horizon), (width, horizon)], fill=_shade(floor, 0.6), width=2)
    return image


def sample_camera_style(rng: np.random.Generator, style: DomainStyle, height: int, width: int) -> CameraStyle:
    """Draws a camera of a domain: its scene, lighting, framing, pose and occlusion habits.

    Args:
        rng: Source of randomness (one stream per domain and camera).
        style: The domain the camera belongs to.
        height: Image height in pixels.
        width: Image width in pixels.

    Returns:
        The camera's style.
    """
    background = _draw_background(rng, style, height, width)
    cast = 1.0 + rng.normal(0.0, 0.06, size=3)
    return CameraStyle(
        background=background,
        gain=(rng.uniform(0.75, 1.2) * cast / cast.mean()).astype(np.float32),
        scale=float(rng.uniform(0.7, 0.92)),
        x_offset=float(rng.uniform(-0.08, 0.08)),
        foot_y=float(rng.uniform(0.93, 0.99)),
        stride=float(rng.uniform(0.05, 0.4)),
        p_flip=float(rng.uniform(0.0, 1.0)),
        p_occlusion=float(rng.uniform(0.0, 0.35)),
    )


class _Figure:
    """Draws body parts in person-relative coordinates (fractions of the person height ``P``).

    ``x`` is measured from the body's vertical axis, positive towards the side the person faces, and
    ``y`` downwards from the top of the head.
    """

    def __init__(self, draw: ImageDraw.ImageDraw, centre_x: float, top_y: float, person_h: float, facing: int):
        self.draw = draw
        self.cx = centre_x
        self.top = top_y
        self.p = person_h
        self.facing = facing

    def pt(self, x: float, y: float) -> tuple[float, float]:
        return self.cx + self.facing * x * self.p, self.top + y * self.p

    def rect(self, x0: float, y0: float, x1: float, y1: float, fill: RGB) -> None:
        (ax, ay), (bx, by) = self.pt(x0, y0), self.pt(x1, y1)
        self.draw.rectangle([min(ax, bx), ay, max(ax, bx), by], fill=fill)

    def ellipse(self, x: float, y: float, rx: float, ry: float, fill: RGB) -> None:
        (ax, ay), (bx, by) = self.pt(x - rx, y - ry), self.pt(x + rx, y + ry)
        self.draw.ellipse([min(ax, bx), ay, max(ax, bx), by], fill=fill)

    def limb(self, start: tuple[float, float], end: tuple[float, float], half_width: float, fill: RGB) -> None:
        """A straight limb segment of the given half width from ``start`` to ``end`` (both ``(x, y)``)."""
        (x0, y0), (x1, y1) = start, end
        length = math.hypot(x1 - x0, y1 - y0) or 1.0
        nx, ny = (y1 - y0) / length * half_width, -(x1 - x0) / length * half_width
        corners = [(x0 + nx, y0 + ny), (x1 + nx, y1 + ny), (x1 - nx, y1 - ny), (x0 - nx, y0 - ny)]
        self.draw.polygon([self.pt(x, y) for x, y in corners], fill=fill)


def _along(start: tuple[float, float], end: tuple[float, float], t: float) -> tuple[float, float]:
    return start[0] + t * (end[0] - start[0]), start[1] + t * (end[1] - start[1])


def _draw_person(fig: _Figure, person: IdentityAttributes, phase: float, stride: float) -> None:
    """Draws a person facing ``fig.facing`` in a walking pose given by ``phase`` and ``stride``."""
    skin = SKIN_TONES[person.skin_tone]
    hair = HAIR_COLOURS[person.hair_colour]
    upper = COLOURS[person.upper_colour]
    lower = COLOURS[person.lower_colour]
    shoes = COLOURS[person.shoes_colour]
    bag = COLOURS[person.bag_colour] if person.bag_type != "none" else None
    build = _BUILD_FACTORS[person.build]

    torso_w = 0.11 * build
    shoulder_y, hip_y = 0.155, 0.5
    torso_bottom = 0.7 if person.upper_type == "coat" else 0.52
    swing = stride * math.sin(phase)

    # Legs, hands and arms move in opposition: (x, y) of joints, then extremities.
    hips = [(-0.05 * build, hip_y), (0.05 * build, hip_y)]
    leg_len = 0.44
    feet = [(hx + leg_len * math.sin(a), hip_y + leg_len * math.cos(a)) for (hx, _), a in zip(hips, (swing, -swing))]
    shoulders = [(-(torso_w + 0.025 * build), shoulder_y + 0.02), (torso_w + 0.025 * build, shoulder_y + 0.02)]
    arm_len = 0.36
    hands = [
        (sx + arm_len * math.sin(a), sy + arm_len * math.cos(a))
        for (sx, sy), a in zip(shoulders, (-0.8 * swing - 0.06, 0.8 * swing + 0.06))
    ]

    if person.bag_type == "backpack":
        fig.rect(-torso_w - 0.06, 0.19, -torso_w + 0.02, 0.46, bag)
    if person.hair_length == "long":
        fig.rect(-0.055, 0.05, 0.055, 0.27, hair)

    leg_hw = 0.038 * build
    for hip, foot in zip(hips, feet):
        fig.limb(hip, foot, leg_hw, skin if person.lower_type != "trousers" else lower)
        if person.lower_type == "shorts":
            fig.limb(hip, _along(hip, foot, 0.42), leg_hw + 0.005, lower)
        fig.ellipse(foot[0] + 0.018, foot[1] + 0.012, 0.038, 0.02, shoes)
    if person.lower_type == "skirt":
        flare = torso_w * 1.45 + abs(swing) * 0.1
        fig.draw.polygon(
            [fig.pt(-torso_w, 0.47), fig.pt(torso_w, 0.47), fig.pt(flare, 0.72), fig.pt(-flare, 0.72)], fill=lower
        )
    else:
        fig.rect(-torso_w, 0.47, torso_w, 0.56, lower)

    _draw_torso(fig, person, upper, torso_w, shoulder_y, torso_bottom)
    long_sleeves = person.upper_type != "t-shirt"
    arm_hw = 0.03 * build
    for shoulder, hand in zip(shoulders, hands):
        fig.limb(shoulder, hand, arm_hw, upper if long_sleeves else skin)
        if not long_sleeves:
            fig.limb(shoulder, _along(shoulder, hand, 0.35), arm_hw + 0.006, upper)
        fig.ellipse(hand[0], hand[1], 0.024, 0.024, skin)
    if person.bag_type == "backpack":
        fig.limb((-torso_w * 0.7, shoulder_y), (-torso_w * 0.5, 0.42), 0.012, _shade(bag, 0.7))
    elif person.bag_type == "handbag":
        hx, hy = hands[1]
        fig.rect(hx - 0.045, hy + 0.01, hx + 0.045, hy + 0.1, bag)

    _draw_head(fig, person, skin, hair)


def _draw_torso(
    fig: _Figure, person: IdentityAttributes, colour: RGB, half_w: float, top: float, bottom: float
) -> None:
    """Upper garment: the pattern first, then the details of its type (zip, buttons, collar)."""
    second = _shade(colour, 0.45) if sum(colour) > 300 else _shade(colour, 1.7)
    fig.rect(-half_w, top, half_w, bottom, colour)
    if person.upper_pattern == "striped":
        y = top + 0.02
        while y < bottom - 0.01:
            fig.rect(-half_w, y, half_w, min(y + 0.018, bottom), second)
            y += 0.042
    elif person.upper_pattern == "checked":
        cell = half_w / 2.5
        for row, y in enumerate(np.arange(top, bottom - 1e-6, cell)):
            for col, x in enumerate(np.arange(-half_w, half_w - 1e-6, cell)):
                if (row + col) % 2:
                    fig.rect(x, y, min(x + cell, half_w), min(y + cell, bottom), second)
    if person.upper_type == "jacket":
        fig.rect(-0.008, top, 0.008, bottom, _shade(colour, 0.55))
    elif person.upper_type == "coat":
        for y in np.arange(top + 0.06, bottom - 0.02, 0.09):
            fig.ellipse(0.0, y, 0.012, 0.008, _shade(colour, 0.5))
    elif person.upper_type == "shirt":
        fig.draw.polygon([fig.pt(-0.05, top), fig.pt(0.05, top), fig.pt(0.0, top + 0.05)], fill=_shade(colour, 1.5))


def _draw_head(fig: _Figure, person: IdentityAttributes, skin: RGB, hair: RGB) -> None:
    fig.rect(-0.02, 0.11, 0.02, 0.17, skin)  # neck
    fig.ellipse(0.0, 0.068, 0.046, 0.066, skin)
    (ax, ay), (bx, by) = fig.pt(-0.052, -0.004), fig.pt(0.052, 0.09)
    fig.draw.chord([min(ax, bx), ay, max(ax, bx), by], start=180, end=360, fill=hair)
    if person.glasses:
        for x in (-0.022, 0.022):
            fig.rect(x - 0.016, 0.06, x + 0.016, 0.076, (20, 20, 25))
        fig.rect(-0.046, 0.064, 0.046, 0.068, (20, 20, 25))


def _draw_occluder(draw: ImageDraw.ImageDraw, rng: np.random.Generator, box: tuple[float, float, float, float]) -> None:
    """Covers part of the person bounding ``box`` = (left, top, right, bottom) with a pole, a low
    obstacle (car, bench) or a panel."""
    left, top, right, bottom = box
    person_w, person_h = right - left, bottom - top
    colour = _hsv(rng.uniform(), rng.uniform(0.0, 0.6), rng.uniform(0.2, 0.9))
    kind = int(rng.integers(3))
    if kind == 0:  # pole
        x = rng.uniform(left, right)
        half = person_w * rng.uniform(0.08, 0.18)
        draw.rectangle([x - half, 0, x + half, bottom + 10], fill=colour)
    elif kind == 1:  # low obstacle from the bottom
        y = bottom - person_h * rng.uniform(0.2, 0.45)
        draw.rectangle([left - person_w, y, right + person_w, bottom + 10], fill=colour)
        draw.line([(left - person_w, y), (right + person_w, y)], fill=_shade(colour, 0.6), width=2)
    else:  # panel from one side
        x = left + person_w * rng.uniform(0.25, 0.6)
        y = top + person_h * rng.uniform(0.0, 0.5)
        if rng.random() < 0.5:
            draw.rectangle([left - person_w, y, x, y + person_h * 0.5], fill=colour)
        else:
            draw.rectangle([x, y, right + person_w, y + person_h * 0.5], fill=colour)


def render_image(
    person: IdentityAttributes, domain: DomainStyle, camera: CameraStyle, rng: np.random.Generator
) -> Image.Image:
    """Renders one image of ``person`` seen by ``camera`` in ``domain``, with per-image jitter from ``rng``.

    Args:
        person: The identity to draw.
        domain: The identity's domain.
        camera: The camera (of that domain) taking the picture; fixes the image size.
        rng: Source of the per-image jitter (one stream per image).

    Returns:
        An RGB image of the camera background's size (PIL size (W, H), e.g. (128, 256)).
    """
    width, height = camera.background.size
    image = camera.background.copy()
    draw = ImageDraw.Draw(image)

    person_h = height * camera.scale * _HEIGHT_FACTORS[person.height] * rng.uniform(0.95, 1.05)
    foot_y = height * (camera.foot_y + rng.uniform(-0.02, 0.02))
    centre_x = width * (0.5 + camera.x_offset + rng.uniform(-0.05, 0.05))
    facing = -1 if rng.random() < camera.p_flip else 1
    phase = rng.uniform(0.0, 2.0 * math.pi)
    stride = camera.stride * rng.uniform(0.7, 1.3)
    top_y = foot_y - person_h
    _draw_person(_Figure(draw, centre_x, top_y, person_h, facing), person, phase, stride)

    if rng.random() < camera.p_occlusion:
        half_w = 0.2 * person_h
        _draw_occluder(draw, rng, (centre_x - half_w, top_y, centre_x + half_w, foot_y))
    if domain.blur_radius > 0:
        image = image.filter(ImageFilter.BoxBlur(domain.blur_radius))

    # Illumination and colour temperature, contrast around mid-grey, luminance noise: one affine map + noise.
    gain = camera.gain * np.asarray(domain.tint, dtype=np.float32) * np.float32(rng.uniform(0.93, 1.07))
    pixels = np.asarray(image, dtype=np.float32) * (gain * domain.contrast)
    pixels += 128.0 * (1.0 - domain.contrast)
    pixels += rng.standard_normal((height, width, 1), dtype=np.float32) * np.float32(domain.noise_std)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
