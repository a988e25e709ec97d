"""World pictures in bulk for training: a seeded set of (picture, caption), rendered once and cached as ``.npz``."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import numpy as np

from .scenes import CLASSES, COLOURS, PATTERNS, THINGS_WEIGHTS, Scene, caption, random_scene, render

TWIN_CHANGES = {"cls": 0.5, "colour": 0.3, "pattern": 0.2}  # which attribute of one thing a twin changes


def twin(scene: Scene, rng: random.Random) -> Scene:
    """The same picture with one attribute of one thing changed: a class, a colour or a pattern."""
    k = rng.randrange(len(scene.things))
    thing, attribute = scene.things[k], rng.choices(list(TWIN_CHANGES), weights=list(TWIN_CHANGES.values()))[0]
    choices = {"cls": CLASSES, "colour": sorted(COLOURS), "pattern": PATTERNS}[attribute]
    new = rng.choice([c for c in choices if c != getattr(thing, attribute)])
    changed = dataclasses.replace(thing, **{attribute: new})  # type: ignore[arg-type]  # attribute names a str field
    return Scene(scene.background, scene.things[:k] + (changed,) + scene.things[k + 1:])


def world_scenes(count: int, seed: int = 0, things_weights: tuple[float, ...] = THINGS_WEIGHTS) -> list[Scene]:
    """The scenes of :func:`world_pictures` (picture ``k``'s scene depends only on ``(seed, k)``)."""
    return [random_scene(random.Random(f"world-{seed}-{k}"), weights=things_weights) for k in range(count)]


def named_caption(scene: Scene, named: int) -> str:
    """``scene``'s caption with thing ``named``'s colour and pattern named and every other thing by its class alone
    ("a red ball and a ring on the sand")."""
    words = {f"<{k}>": t.words() if k == named else f"a {t.cls}" for k, t in enumerate(scene.things)}
    keyed = Scene(scene.background, tuple(dataclasses.replace(t, concept=f"<{k}>") for k, t in enumerate(scene.things)))
    return caption(keyed, words)


def sparse_caption(scene: Scene, rng: random.Random) -> str:
    """:func:`named_caption` of one thing drawn at random."""
    return named_caption(scene, rng.randrange(len(scene.things)))


def caption_variants(scenes: list[Scene], captions: list[str], sparse: bool, seed: int = 0) -> list[list[str]]:
    """Per picture, the captions training draws from: its exact caption, and with ``sparse`` for a picture of
    several things also a :func:`sparse_caption` (one colour named: a colour word is then seen to belong to its
    noun, where the exact captions let a model read colours as the picture's, not the things')."""
    rng = random.Random(f"sparse-{seed}")
    return [[c, sparse_caption(s, rng)] if sparse and len(s.things) > 1 else [c]
            for s, c in zip(scenes, captions, strict=True)]


def world_pictures(count: int, seed: int = 0, size: int = 64, cache: str | Path | None = None,
                   progress: bool = True, twins: bool = False,
                   things_weights: tuple[float, ...] = THINGS_WEIGHTS) -> tuple[np.ndarray, list[str]]:
    """``(uint8 [count, size, size, 3], captions)``; picture ``k`` depends only on ``(seed, k)``. With ``twins``,
    picture ``k``'s :func:`twin` instead (same background, places and noise; one attribute of one thing changed):
    hard negatives for contrastive training, which otherwise tells captions apart by background and colour alone.
    ``things_weights``: how often a picture has one, two, three things."""
    if cache is not None and Path(cache).is_file():
        data = np.load(cache, allow_pickle=False)
        made_as = (data["images"].shape, int(data["seed"]), bool(data["twins"]) if "twins" in data.files else False,
                   tuple(data["things_weights"].tolist()) if "things_weights" in data.files else THINGS_WEIGHTS)
        if made_as == ((count, size, size, 3), seed, twins, tuple(map(float, things_weights))):
            return data["images"], [str(c) for c in data["captions"]]
    from tqdm.auto import tqdm

    images, captions = np.empty((count, size, size, 3), np.uint8), []
    scenes = world_scenes(count, seed, things_weights)
    for k in tqdm(range(count), desc="rendering world pictures", disable=not progress, leave=False):
        scene = scenes[k]
        if twins:
            scene = twin(scene, random.Random(f"twin-{seed}-{k}"))
        image, _ = render(scene, size, seed=seed * 1_000_003 + k)
        images[k] = np.asarray(image)
        captions.append(caption(scene))
    if cache is not None:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, images=images, captions=np.array(captions), seed=seed, twins=twins,
                 things_weights=np.array(things_weights, float))
    return images, captions
