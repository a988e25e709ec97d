"""World pictures: things (class, colour, pattern, size, place) on a background, rendered with PIL and numpy from
a seed, and their exact captions ("a red striped ball and a green cube on the snow", things left to right)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASSES = ("ball", "cube", "cone", "ring")
COLOURS = {
    "red": (215, 35, 35), "green": (40, 165, 60), "blue": (35, 75, 215), "yellow": (240, 210, 35),
    "purple": (135, 55, 180), "orange": (245, 135, 25), "white": (238, 238, 238), "black": (28, 28, 28),
}
PATTERNS = ("plain", "striped", "dotted", "checked")
BACKGROUNDS = {"grass": "on the grass", "snow": "in the snow", "sand": "on the sand", "sky": "in the sky",
               "water": "on the water", "table": "on a wooden table"}
SUPERSAMPLE = 4  # drawn this much larger, then downsampled: smooth edges at small sizes


@dataclass(frozen=True)
class Thing:
    """One thing in a picture; ``x``, ``y``, ``radius`` are fractions of the picture's side."""

    cls: str
    colour: str
    pattern: str = "plain"
    x: float = 0.5
    y: float = 0.55
    radius: float = 0.3
    concept: str | None = None  # a concept's own design (mos_lightning.world.concepts) instead of colour/pattern

    def words(self) -> str:
        pattern = "" if self.pattern == "plain" else f" {self.pattern}"
        article = "an" if self.colour[0] in "aeiou" else "a"
        return f"{article} {self.colour}{pattern} {self.cls}"


@dataclass(frozen=True)
class Scene:
    background: str
    things: tuple[Thing, ...] = field(default_factory=tuple)


def caption(scene: Scene, names: dict[str, str] | None = None) -> str:
    """The exact caption; a concept's thing is written as ``names[concept]`` (e.g. ``<TOK>``)."""
    words = [names[t.concept] if t.concept and names and t.concept in names else t.words() for t in scene.things]
    listed = words[0] if len(words) == 1 else ", ".join(words[:-1]) + f" and {words[-1]}"
    return f"{listed} {BACKGROUNDS[scene.background]}"


THINGS_WEIGHTS = (5, 3.5, 1.5)  # how often a picture has one, two, three things (half have one)


def random_scene(rng: random.Random, max_things: int = 3, weights: tuple[float, ...] = THINGS_WEIGHTS) -> Scene:
    """Background, one to ``max_things`` things (``weights``: how often each count), placed left to right."""
    count = rng.choices(range(1, max_things + 1), weights=list(weights)[:max_things])[0]
    return Scene(rng.choice(sorted(BACKGROUNDS)), place(rng, [random_thing(rng) for _ in range(count)]))


def random_thing(rng: random.Random) -> Thing:
    return Thing(rng.choice(CLASSES), rng.choice(sorted(COLOURS)), rng.choice(PATTERNS))


def place(rng: random.Random, things: list[Thing]) -> tuple[Thing, ...]:
    """Sizes and positions: one slot per thing, left to right, jittered inside the slot; no overlaps."""
    n, placed = len(things), []
    for k, thing in enumerate(things):
        radius = rng.uniform(0.26, 0.36) if n == 1 else rng.uniform(0.17, 0.23) if n == 2 else rng.uniform(0.12, 0.16)
        slot = 1.0 / n
        x = slot * (k + 0.5) + rng.uniform(-1, 1) * max(0.0, slot / 2 - radius) * 0.8
        y = rng.uniform(0.45, 0.62) if n > 1 else rng.uniform(0.42, 0.6)
        placed.append(Thing(thing.cls, thing.colour, thing.pattern, x, y, radius, thing.concept))
    return tuple(placed)


# ----------------------------------------------------------------------------------------------- rendering
def background(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """``[size, size, 3]`` float RGB in 0..255."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    noise = rng.normal(0, 1, (size, size))
    if name == "grass":
        base = np.array([70, 145, 55]) + (18 * noise)[..., None] + np.stack([0 * yy, 25 * yy, 0 * yy], -1)
    elif name == "snow":
        base = np.array([232, 238, 246]) + (6 * noise)[..., None] - np.stack([10 * yy, 6 * yy, 0 * yy], -1)
    elif name == "sand":
        base = np.array([222, 196, 140]) + (14 * noise)[..., None]
    elif name == "sky":
        base = np.stack([90 + 90 * yy, 150 + 70 * yy, 230 + 0 * yy], -1) + (3 * noise)[..., None]
    elif name == "water":
        waves = 14 * np.sin(yy * 40 + 3 * np.sin(xx * 9))
        base = np.array([30, 110, 160]) + waves[..., None] + (5 * noise)[..., None]
    elif name == "table":
        grain = 20 * np.sin(yy * 60 + 2 * np.sin(xx * 5)) + 8 * noise
        base = np.array([150, 95, 55]) + grain[..., None]
    else:
        raise ValueError(f"unknown background {name!r}; known: {sorted(BACKGROUNDS)}")
    return np.clip(base, 0, 255)


def shape_mask(thing: Thing, size: int) -> np.ndarray:
    """``[size, size]`` bool silhouette of ``thing`` on a ``size`` canvas."""
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    cx, cy, r = thing.x * size, thing.y * size, thing.radius * size
    if thing.cls == "ball":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    elif thing.cls == "cube":
        s, d = r * 0.8, r * 0.35  # front face half-side, depth offset
        draw.rectangle((cx - s, cy - s + d, cx + s - d, cy + s), fill=255)  # front
        draw.polygon([(cx - s, cy - s + d), (cx - s + d, cy - s), (cx + s, cy - s), (cx + s - d, cy - s + d)], fill=255)
        draw.polygon([(cx + s - d, cy - s + d), (cx + s, cy - s), (cx + s, cy + s - d), (cx + s - d, cy + s)], fill=255)
    elif thing.cls == "cone":
        draw.polygon([(cx, cy - r), (cx - r * 0.8, cy + r * 0.75), (cx + r * 0.8, cy + r * 0.75)], fill=255)
        draw.ellipse((cx - r * 0.8, cy + r * 0.55, cx + r * 0.8, cy + r * 0.95), fill=255)
    elif thing.cls == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        draw.ellipse((cx - r * 0.55, cy - r * 0.55, cx + r * 0.55, cy + r * 0.55), fill=0)
    else:
        raise ValueError(f"unknown class {thing.cls!r}; known: {CLASSES}")
    return np.asarray(mask) > 127


def shading(thing: Thing, size: int) -> np.ndarray:
    """A light from the upper left: brighter there, darker at the far side (and a cube's faces differ)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    cx, cy, r = thing.x, thing.y, thing.radius
    dist = np.sqrt((xx - (cx - 0.35 * r)) ** 2 + (yy - (cy - 0.35 * r)) ** 2) / (2 * r)
    light = 1.15 - 0.55 * np.clip(dist, 0, 1)
    if thing.cls == "cube":
        s, d = r * 0.8, r * 0.35
        top, side = yy < cy - s + d, xx > cx + s - d  # the faces above and right of the front face
        light = np.where(top & ~side, 1.2, np.where(side, 0.75, 0.95))
    return light


def pattern_layer(thing: Thing, size: int) -> np.ndarray:
    """``[size, size]`` bool: where the pattern's second colour shows."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    period = thing.radius * 0.5
    if thing.pattern == "plain":
        return np.zeros((size, size), bool)
    if thing.pattern == "striped":
        return ((yy - thing.y) / period % 1.0) < 0.45
    if thing.pattern == "checked":
        return (np.floor((xx - thing.x) / period) + np.floor((yy - thing.y) / period)) % 2 == 0
    if thing.pattern == "dotted":
        u, v = ((xx - thing.x) / period) % 1.0 - 0.5, ((yy - thing.y) / period) % 1.0 - 0.5
        return u * u + v * v < 0.07
    raise ValueError(f"unknown pattern {thing.pattern!r}; known: {PATTERNS}")


def paint_thing(canvas: np.ndarray, thing: Thing, size: int) -> np.ndarray:
    """Draw ``thing`` onto ``canvas`` (float RGB, in place); returns its silhouette."""
    from .concepts import CONCEPTS

    mask = shape_mask(thing, size)
    if thing.concept:
        colours = CONCEPTS[thing.concept].paint(thing, size)
    else:
        base = np.array(COLOURS[thing.colour], float)
        second = np.array((25, 25, 25) if thing.colour in ("white", "yellow") else (245, 245, 245), float)
        colours = np.where(pattern_layer(thing, size)[..., None], second, base)
    shaded = np.clip(colours * shading(thing, size)[..., None], 0, 255)
    canvas[mask] = shaded[mask]
    return mask


def render(scene: Scene, size: int = 64, seed: int = 0) -> tuple[Image.Image, list[Image.Image]]:
    """The picture and one ``L`` mask per thing (white = the thing), at ``size``×``size``."""
    big = size * SUPERSAMPLE
    canvas = background(scene.background, big, np.random.default_rng(seed))
    masks = []
    for thing in scene.things:
        shadow = Thing(thing.cls, thing.colour, "plain", thing.x + 0.03, thing.y + 0.04, thing.radius)
        dark = shape_mask(shadow, big)
        canvas[dark] *= 0.7  # a soft drop shadow grounds the thing
        masks.append(paint_thing(canvas, thing, big))
    image = Image.fromarray(canvas.astype(np.uint8)).filter(ImageFilter.GaussianBlur(SUPERSAMPLE * 0.3))
    image = image.resize((size, size), Image.Resampling.LANCZOS)
    return image, [Image.fromarray((m * 255).astype(np.uint8)).resize((size, size), Image.Resampling.BILINEAR) for m in masks]
