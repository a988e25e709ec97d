"""World pictures in bulk for training: a seeded set of (picture, caption), rendered once and cached as ``.npz``."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from .scenes import caption, random_scene, render


def world_pictures(count: int, seed: int = 0, size: int = 64, cache: str | Path | None = None,
                   progress: bool = True) -> tuple[np.ndarray, list[str]]:
    """``(uint8 [count, size, size, 3], captions)``; picture ``k`` depends only on ``(seed, k)``."""
    if cache is not None and Path(cache).is_file():
        data = np.load(cache, allow_pickle=False)
        if data["images"].shape == (count, size, size, 3) and int(data["seed"]) == seed:
            return data["images"], [str(c) for c in data["captions"]]
    from tqdm.auto import tqdm

    images, captions = np.empty((count, size, size, 3), np.uint8), []
    for k in tqdm(range(count), desc="rendering world pictures", disable=not progress, leave=False):
        scene = random_scene(random.Random(f"world-{seed}-{k}"))
        image, _ = render(scene, size, seed=seed * 1_000_003 + k)
        images[k] = np.asarray(image)
        captions.append(caption(scene))
    if cache is not None:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, images=images, captions=np.array(captions), seed=seed)
    return images, captions
