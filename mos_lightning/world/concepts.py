"""Concepts: particular things no caption of the world can ask for — each a class with its own two- or
three-colour design — and their views: photo-like pictures (varied background, size, place, sometimes another
thing beside it) with captions that say ``<TOK>`` where the concept is, and masks, as a concept folder."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .scenes import BACKGROUNDS, Scene, Thing, caption, place, random_thing, render

Paint = Callable[[Thing, int], np.ndarray]


def _grid(thing: Thing, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates relative to the thing's centre, in units of its radius."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    return (xx - thing.x) / thing.radius, (yy - thing.y) / thing.radius


def _fill(size: int, colour) -> np.ndarray:
    return np.broadcast_to(np.array(colour, float), (size, size, 3)).copy()


def _star(u: np.ndarray, v: np.ndarray, radius: float) -> np.ndarray:
    """A five-pointed star of ``radius`` around (0, 0)."""
    angle, dist = np.arctan2(v, u) + np.pi / 2, np.sqrt(u * u + v * v)
    edge = radius * (0.5 + 0.5 * np.abs(np.cos(2.5 * angle)) ** 3)
    return dist < edge


def paint_starbox(thing: Thing, size: int) -> np.ndarray:  # a yellow cube with a purple star on its face
    u, v = _grid(thing, size)
    out = _fill(size, (245, 205, 40))
    out[_star(u + 0.14, v - 0.14, 0.5)] = (120, 40, 170)
    return out


def paint_bandball(thing: Thing, size: int) -> np.ndarray:  # red above, white below, a black band and button
    u, v = _grid(thing, size)
    out = np.where((v < 0)[..., None], np.array((220, 30, 40), float), np.array((245, 245, 245), float))
    out[np.abs(v) < 0.12] = (20, 20, 20)
    out[u * u + v * v < 0.09] = (20, 20, 20)
    out[u * u + v * v < 0.04] = (245, 245, 245)
    return out


def paint_zigcone(thing: Thing, size: int) -> np.ndarray:  # a green cone with an orange zigzag band
    u, v = _grid(thing, size)
    out = _fill(size, (30, 150, 70))
    zig = 0.15 * np.abs(((u * 3) % 2) - 1)
    out[np.abs(v - 0.1 - zig) < 0.12] = (250, 140, 20)
    return out


def paint_buoyring(thing: Thing, size: int) -> np.ndarray:  # a ring in red and white quarters, like a lifebuoy
    u, v = _grid(thing, size)
    quarter = (np.floor((np.arctan2(v, u) + np.pi / 4) / (np.pi / 2)) % 2) == 0
    return np.where(quarter[..., None], np.array((225, 35, 35), float), np.array((245, 245, 245), float))


def paint_moonball(thing: Thing, size: int) -> np.ndarray:  # a dark blue ball with a yellow crescent moon
    u, v = _grid(thing, size)
    out = _fill(size, (25, 35, 110))
    moon = (u * u + v * v < 0.3) & ((u - 0.22) ** 2 + (v + 0.1) ** 2 > 0.2)
    out[moon] = (250, 225, 60)
    return out


def paint_heartcube(thing: Thing, size: int) -> np.ndarray:  # a pink cube with a red heart
    u, v = _grid(thing, size)
    x, y = (u + 0.14) / 0.45, -(v - 0.18) / 0.45
    heart = (x * x + y * y - 1) ** 3 - x * x * y ** 3 < 0
    out = _fill(size, (245, 150, 190))
    out[heart] = (200, 20, 50)
    return out


@dataclass(frozen=True)
class ConceptSpec:
    name: str
    cls: str  # the class word: what the concept is an instance of
    paint: Paint
    look: str  # in words, for people (never in a caption)


CONCEPTS = {c.name: c for c in (
    ConceptSpec("starbox", "cube", paint_starbox, "a yellow cube with a purple star on its face"),
    ConceptSpec("bandball", "ball", paint_bandball, "red above, white below, a black band and button"),
    ConceptSpec("zigcone", "cone", paint_zigcone, "a green cone with an orange zigzag band"),
    ConceptSpec("buoyring", "ring", paint_buoyring, "a ring in red and white quarters"),
    ConceptSpec("moonball", "ball", paint_moonball, "a dark blue ball with a yellow crescent"),
    ConceptSpec("heartcube", "cube", paint_heartcube, "a pink cube with a red heart"),
)}


def concept_thing(name: str) -> Thing:
    spec = CONCEPTS[name]
    return Thing(spec.cls, "white", concept=name)


def concept_views(name: str, count: int = 8, seed: int = 0, size: int = 64, placeholder: str = "<TOK>",
                  beside_every: int = 3) -> list[tuple[Image.Image, Image.Image, str]]:
    """``count`` views ``(image, mask, caption)`` of concept ``name``: backgrounds cycle, sizes and places vary,
    every ``beside_every``-th view has an ordinary thing beside it (captioned), the concept's mask only."""
    if name not in CONCEPTS:
        raise ValueError(f"unknown concept {name!r}; known: {sorted(CONCEPTS)}")
    if beside_every < 1:
        raise ValueError(f"beside_every must be 1 or more (1: every view has another thing), not {beside_every}")
    rng = random.Random(f"{name}-{seed}")
    backgrounds = sorted(BACKGROUNDS)
    rng.shuffle(backgrounds)
    views = []
    for k in range(count):
        things = [concept_thing(name)]
        if k % beside_every == beside_every - 1:
            other = random_thing(rng)
            things = [*things, other] if rng.random() < 0.5 else [other, *things]
        scene = Scene(backgrounds[k % len(backgrounds)], place(rng, things))
        image, masks = render(scene, size, seed=rng.randrange(2**31))
        index = next(i for i, t in enumerate(scene.things) if t.concept == name)
        text = caption(scene, {name: placeholder})
        views.append((image, masks[index], text))  # the world's own words: its base never saw "a photo of"
    return views


def write_concept(name: str, folder: str | Path, count: int = 8, seed: int = 0, size: int = 64,
                  beside_every: int = 3) -> Path:
    """A concept folder: ``<k>.png``, ``captions/<k>.txt`` (with ``<TOK>``) and ``masks/<k>.png``."""
    folder = Path(folder)
    (folder / "captions").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(exist_ok=True)
    for k, (image, mask, text) in enumerate(concept_views(name, count, seed, size, beside_every=beside_every)):
        image.save(folder / f"{k}.png")
        mask.save(folder / "masks" / f"{k}.png")
        (folder / "captions" / f"{k}.txt").write_text(text + "\n")
    return folder
