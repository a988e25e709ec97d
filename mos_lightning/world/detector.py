"""An exact detector of the world's single things, for judging generated pictures without a learned model:
background from the picture's border, the thing's silhouette from what differs from it, its colour from the
silhouette's pixels and its class from the silhouette's shape (a hole → ring; how much of its bounding box it
fills: ball ≈ 0.79, cube ≈ 0.9, cone ≈ 0.6)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image

from .scenes import BACKGROUNDS, COLOURS, background

BORDER = 4  # pixels of the border that show the background


@lru_cache(maxsize=1)
def background_colours(size: int = 64) -> dict[str, np.ndarray]:
    return {name: background(name, size, np.random.default_rng(0)).reshape(-1, 3).mean(0) for name in BACKGROUNDS}


def _border(pixels: np.ndarray) -> np.ndarray:
    return np.concatenate([pixels[:BORDER].reshape(-1, 3), pixels[-BORDER:].reshape(-1, 3),
                           pixels[:, :BORDER].reshape(-1, 3), pixels[:, -BORDER:].reshape(-1, 3)])


def detect(image: Image.Image | np.ndarray, box: list[float] | None = None) -> dict[str, str]:
    """``{"background", "colour", "class"}`` of a picture with one thing, or of the one thing inside ``box``
    (``[top, left, bottom, right]`` fractions; the background is still read from the whole picture's border)."""
    pixels = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image).astype(float)
    border = _border(pixels)
    refs = background_colours(pixels.shape[0])
    bg = min(refs, key=lambda n: np.linalg.norm(np.median(border, 0) - refs[n]))
    spread = np.linalg.norm(border - border.mean(0), axis=1)
    distance = np.linalg.norm(pixels - np.median(border, 0), axis=2)
    mask = distance > max(60.0, np.percentile(spread, 95) * 1.5)
    if box is not None:
        h, w = mask.shape
        top, left, bottom, right = round(box[0] * h), round(box[1] * w), round(box[2] * h), round(box[3] * w)
        pixels, mask = pixels[top:bottom, left:right], mask[top:bottom, left:right]
    if mask.sum() < 20:
        return {"background": bg, "colour": "none", "class": "none"}
    names = sorted(COLOURS)
    palette = np.array([COLOURS[n] for n in names], float)
    labels = np.argmin(np.linalg.norm(pixels[mask][:, None] - palette[None], axis=2), axis=1)
    counts = np.bincount(labels, minlength=len(names))
    plain = [i for i, n in enumerate(names) if n not in ("white", "black")]
    coloured = counts[plain].sum()
    colour = names[plain[int(np.argmax(counts[plain]))]] if coloured > 0.3 * counts.sum() else names[int(np.argmax(counts))]
    return {"background": bg, "colour": colour, "class": _shape(mask)}


def _shape(mask: np.ndarray) -> str:
    from PIL import ImageFilter

    # close the small gaps a pattern's background-coloured stripes or dots leave in the silhouette
    closed = Image.fromarray((mask * 255).astype(np.uint8)).filter(ImageFilter.MaxFilter(3)).filter(ImageFilter.MinFilter(3))
    mask = np.asarray(closed) > 127
    rows, cols = np.nonzero(mask)
    top, bottom, left, right = rows.min(), rows.max(), cols.min(), cols.max()
    box = mask[top:bottom + 1, left:right + 1]
    h, w = box.shape
    centre = box[h * 3 // 8: h * 5 // 8 + 1, w * 3 // 8: w * 5 // 8 + 1]
    if h > 6 and w > 6 and centre.mean() < 0.3:
        return "ring"
    if box[: max(1, h // 5)].mean() < 0.35:  # a narrow top: the cone's apex
        return "cone"
    ch, cw = max(1, h // 5), max(1, w // 5)
    corners = [box[:ch, :cw], box[:ch, -cw:], box[-ch:, :cw], box[-ch:, -cw:]]
    return "cube" if max(c.mean() for c in corners) > 0.6 else "ball"  # a ball leaves every corner empty
