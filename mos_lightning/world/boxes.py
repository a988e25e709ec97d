"""Does each box of a composed picture show its concept? Judged by the world's exact detector
(:mod:`mos_lightning.world.detector`) on the box's crop, against the concept's *signature*: the (class, colour)
the detector reads on real pictures of that concept alone. The same test on real pictures of the same layout
gives the judge's ceiling, so a rate is read against what a perfect composer would score."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .concepts import concept_thing
from .detector import detect
from .scenes import BACKGROUNDS, Scene, caption, place, render


@dataclass(frozen=True)
class Layout:
    """Concepts on a background, each in its box ``[top, left, bottom, right]`` (fractions): given, or the world's
    slots (left to right, as its captions list things)."""

    name: str
    concepts: tuple[str, ...]
    background: str
    given_boxes: tuple[tuple[float, float, float, float], ...] | None = None

    @property
    def boxes(self) -> list[list[float]]:
        if self.given_boxes is not None:
            return [list(b) for b in self.given_boxes]
        n = len(self.concepts)
        top, bottom = (0.2, 0.85) if n < 3 else (0.25, 0.8)  # the world puts things of 3-thing pictures smaller
        return [[top, round(k / n, 4), bottom, round((k + 1) / n, 4)] for k in range(n)]

    def prompt(self, names: dict[str, str]) -> str:
        """The whole picture's caption in the world's words, each concept written as ``names[concept]``."""
        return caption(Scene(self.background, tuple(concept_thing(c) for c in self.concepts)), names)

    def region_prompt(self, index: int, names: dict[str, str], context: bool = False) -> str:
        """Box ``index``'s prompt: its concept alone on the background ("<starbox> on the grass"), or with its
        context — the whole caption with every other concept as its class word ("a ball and <starbox> on the
        grass"): the world lists things left to right, so the context also says where the concept stands."""
        if not context:
            return Layout(self.name, (self.concepts[index],), self.background).prompt(names)
        words = {c: f"a {concept_thing(c).cls}" for c in self.concepts}  # world classes take "a"
        words[self.concepts[index]] = names[self.concepts[index]]
        return self.prompt(words)


Signature = frozenset  # of (class, colour) readings


def reading(image, box: list[float] | None = None) -> tuple[str, str]:
    found = detect(np.asarray(image), box)
    return found["class"], found["colour"]


def signature(concept: str, count: int = 24, share: float = 0.15) -> Signature:
    """The (class, colour) readings the detector gives on at least ``share`` of ``count`` real single pictures of
    ``concept`` (held-out places and backgrounds): a two-colour design can read as either colour (heartcube: red
    heart or its pink read as purple), so a signature is a set."""
    rng = random.Random(f"signature-{concept}")
    readings = Counter(reading(render(Scene(rng.choice(sorted(BACKGROUNDS)), place(rng, [concept_thing(concept)])),
                                      seed=700_000 + k)[0]) for k in range(count))
    return frozenset(r for r, n in readings.items() if n >= share * count and r[0] != "none")


@dataclass(frozen=True)
class ClassOnly:
    """A judge that asks for the concept's kind of thing alone, in any colour (``reading in judge``): whether
    composition put a thing of the right kind in the box, apart from whether it kept the concept's colours."""

    classes: frozenset  # the classes the detector reads on real pictures of the concept

    def __contains__(self, found: object) -> bool:
        return isinstance(found, tuple) and found[0] in self.classes


def class_judges(signatures: dict[str, Signature]) -> dict[str, ClassOnly]:
    """Per concept, the classes of its signature: what the detector reads for it on real pictures (zigcone, a cone
    with a wide zigzag band, reads as a ring as often as a cone), the same ground the concept judge stands on."""
    return {c: ClassOnly(frozenset(found[0] for found in signature)) for c, signature in signatures.items()}


def layout_scenes(layout: Layout, count: int) -> list[Scene]:
    """``count`` real scenes of ``layout``: the concepts' own designs, in the world's slots (places jittered per
    scene) or, with given boxes, each thing filling its box."""
    rng = random.Random(f"layout-{layout.name}")
    if layout.given_boxes is None:
        return [Scene(layout.background, place(rng, [concept_thing(c) for c in layout.concepts])) for _ in range(count)]
    things = tuple(dataclasses.replace(concept_thing(c), x=(b[1] + b[3]) / 2, y=(b[0] + b[2]) / 2,
                                       radius=0.42 * min(b[2] - b[0], b[3] - b[1]))
                   for c, b in zip(layout.concepts, layout.given_boxes, strict=True))
    return [Scene(layout.background, things)] * count


def real_pictures(layout: Layout, count: int) -> list[Image.Image]:
    """Real world pictures of ``layout`` (:func:`layout_scenes`)."""
    return [render(scene, seed=800_000 + k)[0] for k, scene in enumerate(layout_scenes(layout, count))]


def box_hits(images: list, layout: Layout, signatures: dict[str, Signature] | dict[str, ClassOnly]) -> list[list[bool]]:
    """Per image, per box: does the detector read one of the box's concept's signature there?"""
    return [[reading(image, box) in signatures[c] for c, box in zip(layout.concepts, layout.boxes, strict=True)]
            for image in images]


def summarise(hits: list[list[bool]]) -> dict[str, float]:
    """``boxes``: share of boxes showing their concept; ``all``: share of pictures where every box does."""
    flat = [h for row in hits for h in row]
    return {"boxes": float(np.mean(flat)) if flat else float("nan"),
            "all": float(np.mean([all(row) for row in hits])) if hits else float("nan")}
