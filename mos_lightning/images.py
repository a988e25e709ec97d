"""Image files and grids: PNGs with text chunks (written atomically) and tiled grids."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from .atomic import atomic_path


def save_png(path: Path, image: np.ndarray, text: dict[str, str]) -> None:
    """Write ``image`` (uint8 HWC) atomically with ``text`` as PNG text chunks."""
    info = PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG", pnginfo=info)


def make_grid(images: list[np.ndarray], columns: int | None = None) -> np.ndarray:
    """Tile equally sized uint8 HWC images row by row (``columns`` default: about square)."""
    columns = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    height, width, channels = images[0].shape
    grid = np.zeros((rows * height, columns * width, channels), dtype=np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        grid[r * height : (r + 1) * height, c * width : (c + 1) * width] = image
    return grid
