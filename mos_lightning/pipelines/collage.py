"""A collage to start regional sampling from: each region's prompt drawn alone, in a picture of its own, shrunk into
its box over the regional picture; region control then denoises the collage again from part-way.

Why: a region prompt ("<starbox> on the grass") asks the model for one thing filling the picture. Under region
control each box keeps its part of such a picture, and the parts of neighbouring boxes merge into one thing of mixed
colours (CLAIMS.md (c)); drawn alone, the same prompt shows its concept twice as often. The collage starts every box
from its concept drawn whole, at the box's size, and the last steps (SDEdit, Meng et al. 2022; Collage Diffusion,
Sarukkai et al. 2023, composes from given layers the same way) make one picture of the pieces. Not the paper's:
``RegionalPipeline(collage_strength=0)``, the default, is the reference's sampling.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..attention.regions import box_fractions


def paste_into_boxes(canvas: np.ndarray, pictures: list[np.ndarray], boxes: list) -> np.ndarray:
    """``canvas`` (uint8 ``[H, W, 3]``) with each picture scaled to cover its box (``[top, left, bottom, right]``,
    fractions or pixels), centred and cropped to it, pasted over it; later boxes over earlier ones."""
    height, width = canvas.shape[:2]
    out = canvas.copy()
    for picture, box in zip(pictures, boxes, strict=True):
        top, left, bottom, right = box_fractions(box, height, width)
        y0, y1 = round(top * height), max(round(top * height) + 1, round(bottom * height))
        x0, x1 = round(left * width), max(round(left * width) + 1, round(right * width))
        box_height, box_width = y1 - y0, x1 - x0
        scale = max(box_height / picture.shape[0], box_width / picture.shape[1])  # cover the box, keep the aspect
        size = (max(box_width, round(picture.shape[1] * scale)), max(box_height, round(picture.shape[0] * scale)))
        scaled = np.asarray(Image.fromarray(picture).resize(size, Image.Resampling.LANCZOS))
        dy, dx = (size[1] - box_height) // 2, (size[0] - box_width) // 2
        out[y0:y1, x0:x1] = scaled[dy:dy + box_height, dx:dx + box_width]
    return out


def plain_canvas(pieces: list[np.ndarray], height: int, width: int, border: float = 0.0625) -> np.ndarray:
    """A ``height × width`` canvas of one colour: the mean of the pieces' borders (the outer ``border`` of each
    side), where a region drawn alone shows its background, not its thing."""
    rings = []
    for piece in pieces:
        h, w = piece.shape[:2]
        dy, dx = max(1, round(border * h)), max(1, round(border * w))
        ring = np.ones((h, w), bool)
        ring[dy:h - dy, dx:w - dx] = False
        rings.append(piece[ring].astype(np.float64))
    colour = np.concatenate(rings).mean(0)
    return np.broadcast_to(np.round(colour).astype(np.uint8), (height, width, 3)).copy()


CANVASES = ("regional", "plain")  # what a collage's pieces are pasted on (RegionalPipeline's collage_canvas)


def check_canvas(name: str) -> str:
    if name not in CANVASES:
        raise ValueError(f"collage_canvas must be 'regional' or 'plain', got {name!r}")
    return name


def start_index(num_inference_steps: int, strength: float) -> int:
    """The step the collage is denoised from: the last ``strength`` of the steps run (at least one)."""
    if not 0 < strength <= 1:
        raise ValueError(f"collage_strength must be in (0, 1], got {strength}")
    return min(num_inference_steps - 1, num_inference_steps - round(strength * num_inference_steps))
