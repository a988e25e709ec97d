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
from PIL import Image, ImageFilter

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


def border_pixels(piece: np.ndarray, border: float = 0.0625) -> np.ndarray:
    """``[N, 3]`` float: the pixels of the outer ``border`` of each side of ``piece``, where a region drawn alone
    shows its background, not its thing."""
    h, w = piece.shape[:2]
    dy, dx = max(1, round(border * h)), max(1, round(border * w))
    ring = np.ones((h, w), bool)
    ring[dy:h - dy, dx:w - dx] = False
    return piece[ring].astype(np.float64)


def plain_canvas(pieces: list[np.ndarray], height: int, width: int, border: float = 0.0625) -> np.ndarray:
    """A ``height × width`` canvas of one colour: the mean of the pieces' :func:`border_pixels`."""
    colour = np.concatenate([border_pixels(piece, border) for piece in pieces]).mean(0)
    return np.broadcast_to(np.round(colour).astype(np.uint8), (height, width, 3)).copy()


THING_FILL = 0.8  # a fitted thing's height and width at most this share of its box's: as the world's real layouts


def thing_mask(piece: np.ndarray, border: float = 0.0625, threshold: float = 60.0) -> np.ndarray | None:
    """The thing of a picture drawn alone: the pixels far (> ``threshold`` in RGB, or 1.5 × the 95th percentile of
    the border's own spread) from the median colour of its :func:`border_pixels`, less specks smaller than 3 × 3
    pixels — the world's exact detector's rule. None when that finds no thing, or one spanning the whole picture (all
    thing, or a busy background): no silhouette to trust."""
    ring = border_pixels(piece, border)
    spread = np.percentile(np.linalg.norm(ring - ring.mean(0), axis=1), 95)
    h, w = piece.shape[:2]
    far = np.linalg.norm(piece.astype(np.float64) - np.median(ring, 0), axis=2) > max(threshold, 1.5 * spread)
    opened = Image.fromarray(far.astype(np.uint8) * 255).filter(ImageFilter.MinFilter(3)).filter(ImageFilter.MaxFilter(3))
    mask = np.asarray(opened) > 127  # specks of a noisy background gone, so they neither move nor widen the thing
    rows, cols = np.nonzero(mask)
    if len(rows) < 0.005 * h * w or (rows.min() == 0 and cols.min() == 0 and rows.max() == h - 1 and cols.max() == w - 1):
        return None
    return mask


def paste_things(canvas: np.ndarray, pieces: list[np.ndarray], boxes: list, fill: float = THING_FILL) -> np.ndarray:
    """``canvas`` with each piece's *thing* (:func:`thing_mask`) in its box: the piece scaled so that its thing spans
    at most ``fill`` of the box's height and width (never more than :func:`paste_into_boxes` would scale it), the
    thing's middle on the box's middle, and only the thing's pixels (one pixel wider) pasted, clipped to the box.
    Why: a thing drawn alone is rarely in the middle of its picture; covering a narrow box with the whole picture cuts
    into it, and the rest of the box shows the piece's own background, not the canvas. A piece without a silhouette
    is pasted as :func:`paste_into_boxes` does."""
    height, width = canvas.shape[:2]
    out = canvas.copy()
    for piece, box in zip(pieces, boxes, strict=True):
        mask = thing_mask(piece)
        if mask is None:
            out = paste_into_boxes(out, [piece], [box])
            continue
        top, left, bottom, right = box_fractions(box, height, width)
        y0, y1 = round(top * height), max(round(top * height) + 1, round(bottom * height))
        x0, x1 = round(left * width), max(round(left * width) + 1, round(right * width))
        rows, cols = np.nonzero(mask)
        thing_height, thing_width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        cover = max((y1 - y0) / piece.shape[0], (x1 - x0) / piece.shape[1])
        scale = min(cover, fill * (y1 - y0) / thing_height, fill * (x1 - x0) / thing_width)
        size = (max(1, round(piece.shape[1] * scale)), max(1, round(piece.shape[0] * scale)))
        scaled = np.asarray(Image.fromarray(piece).resize(size, Image.Resampling.LANCZOS))
        shrunk = Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.Resampling.BILINEAR)
        keep = np.asarray(shrunk.filter(ImageFilter.MaxFilter(3))) > 63
        # where the scaled piece's corner lands so that its thing's middle is the box's middle
        oy = round((y0 + y1) / 2 - (rows.min() + rows.max() + 1) / 2 * scale)
        ox = round((x0 + x1) / 2 - (cols.min() + cols.max() + 1) / 2 * scale)
        ty0, ty1, tx0, tx1 = max(y0, oy), min(y1, oy + size[1]), max(x0, ox), min(x1, ox + size[0])
        if ty0 >= ty1 or tx0 >= tx1:
            continue
        source, where = scaled[ty0 - oy:ty1 - oy, tx0 - ox:tx1 - ox], keep[ty0 - oy:ty1 - oy, tx0 - ox:tx1 - ox]
        out[ty0:ty1, tx0:tx1][where] = source[where]
    return out


FITS = ("cover", "thing")  # how a piece goes into its box (RegionalPipeline's collage_fit)


def check_fit(name: str) -> str:
    if name not in FITS:
        raise ValueError(f"collage_fit must be 'cover' or 'thing', got {name!r}")
    return name


def check_scale(scale: int) -> int:
    if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
        raise ValueError(f"collage_scale must be a whole number >= 1 (1: the picture's own size), got {scale!r}")
    return scale


def paste(canvas: np.ndarray, pieces: list[np.ndarray], boxes: list, fit: str = "cover") -> np.ndarray:
    """The collage: :func:`paste_into_boxes` (``cover``) or :func:`paste_things` (``thing``)."""
    return paste_things(canvas, pieces, boxes) if check_fit(fit) == "thing" else paste_into_boxes(canvas, pieces, boxes)


CANVASES = ("regional", "plain")  # what a collage's pieces are pasted on (RegionalPipeline's collage_canvas)


def check_canvas(name: str) -> str:
    if name not in CANVASES:
        raise ValueError(f"collage_canvas must be 'regional' or 'plain', got {name!r}")
    return name


def resized(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``image`` (uint8 ``[H, W, 3]``) at ``height × width`` (itself when it is that size already)."""
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.LANCZOS))


def start_index(num_inference_steps: int, strength: float) -> int:
    """The step the collage is denoised from: the last ``strength`` of the steps run (at least one)."""
    if not 0 < strength <= 1:
        raise ValueError(f"collage_strength must be in (0, 1], got {strength}")
    return min(num_inference_steps - 1, num_inference_steps - round(strength * num_inference_steps))
