"""Image and caption augmentation for concept tuning (PIL/numpy/torch; no torchvision).

Three geometries, each with a validity mask marking real pixels (masks undergo the same geometry):

- ``centred`` (:func:`resize_crop_letterbox`): with probability ``crop_prob`` a short-edge resize and a random
  ``size``×``size`` crop; otherwise a long-edge resize letterboxed in the centre (deterministic: its latents cache).
- ``reference`` (:func:`reference_resize_crop`, the reference's ``HumanResizeCropFinalV3``): short-edge resize;
  with probability ``crop_prob`` a portrait keeps a top-anchored crop of random height (a landscape a random
  square); then a long-edge resize placed at a random position on the canvas.
- ``reference_object`` (:func:`reference_object_fill`, the research branch's ``ObjectResizeCrop`` /
  ``ResizeFillMaskNew``): short-edge resize; with probability ``crop_prob`` a random square, else a long-edge
  resize; then shrunk by a random factor in ``scale_range`` (0.5–1 in its object configs) and placed at random.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from PIL import Image


def _resize(img: Image.Image, scale: float, resample) -> Image.Image:
    w, h = img.size
    return img.resize((max(1, round(w * scale)), max(1, round(h * scale))), resample)


def resize_crop_letterbox(
    image: Image.Image,
    mask: Image.Image,
    size: int,
    crop_prob: float,
    rng: random.Random,
    report_crop: bool = False,
):
    """Return (image, mask, valid) as ``size``×``size`` images; ``valid`` is 255 on real pixels.
    With ``report_crop`` a fourth value says whether a random crop was taken (else the result is deterministic)."""
    w, h = image.size
    if rng.random() < crop_prob:
        scale = size / min(w, h)
        image, mask = _resize(image, scale, Image.Resampling.BICUBIC), _resize(mask, scale, Image.Resampling.NEAREST)
        w, h = image.size
        left, top = rng.randint(0, w - size), rng.randint(0, h - size)
        box = (left, top, left + size, top + size)
        out = image.crop(box), mask.crop(box), Image.new("L", (size, size), 255)
        return (*out, True) if report_crop else out
    scale = size / max(w, h)
    image, mask = _resize(image, scale, Image.Resampling.BICUBIC), _resize(mask, scale, Image.Resampling.NEAREST)
    w, h = image.size
    offset = ((size - w) // 2, (size - h) // 2)
    canvas, mask_canvas, valid = (Image.new(m, (size, size), 0) for m in ("RGB", "L", "L"))
    canvas.paste(image, offset)
    mask_canvas.paste(mask, offset)
    valid.paste(Image.new("L", (w, h), 255), offset)
    return (canvas, mask_canvas, valid, False) if report_crop else (canvas, mask_canvas, valid)


def reference_resize_crop(image: Image.Image, mask: Image.Image, size: int, crop_prob: float, rng: random.Random):
    """The reference's geometry (see the module docstring); returns (image, mask, valid), never deterministic."""
    scale = size / min(image.size)
    image, mask = _resize(image, scale, Image.Resampling.BICUBIC), _resize(mask, scale, Image.Resampling.NEAREST)
    w, h = image.size
    if rng.random() < crop_prob:
        if h > w:  # portrait: keep the top (faces), a random amount of the rest
            box = (0, 0, w, w + rng.randint(0, h - w))
        else:
            left, top = rng.randint(0, w - size), rng.randint(0, h - size)
            box = (left, top, left + size, top + size)
        image, mask = image.crop(box), mask.crop(box)
    scale = size / max(image.size)
    image, mask = _resize(image, scale, Image.Resampling.BICUBIC), _resize(mask, scale, Image.Resampling.NEAREST)
    return _place_at_random(image, mask, size, rng)


def reference_object_fill(
    image: Image.Image,
    mask: Image.Image,
    size: int,
    crop_prob: float,
    rng: random.Random,
    scale_range: tuple[float, float] = (0.5, 1.0),
):
    """The research branch's object geometry (see the module docstring); returns (image, mask, valid)."""
    scale = size / min(image.size)
    image, mask = _resize(image, scale, Image.Resampling.BICUBIC), _resize(mask, scale, Image.Resampling.NEAREST)
    if rng.random() < crop_prob:
        w, h = image.size
        left, top = rng.randint(0, w - size), rng.randint(0, h - size)
        box = (left, top, left + size, top + size)
        image, mask = image.crop(box), mask.crop(box)
    scale = size / max(image.size) * rng.uniform(*scale_range)  # long-edge fit, then the random shrink
    image, mask = _resize(image, scale, Image.Resampling.BICUBIC), _resize(mask, scale, Image.Resampling.NEAREST)
    return _place_at_random(image, mask, size, rng)


def _place_at_random(image: Image.Image, mask: Image.Image, size: int, rng: random.Random):
    w, h = image.size
    offset = (rng.randint(0, size - w), rng.randint(0, size - h))
    canvas, mask_canvas, valid = (Image.new(m, (size, size), 0) for m in ("RGB", "L", "L"))
    canvas.paste(image, offset)
    mask_canvas.paste(mask, offset)
    valid.paste(Image.new("L", (w, h), 255), offset)
    return canvas, mask_canvas, valid


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB image → ``[3, H, W]`` float in [-1, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def mask_to_tensor(mask: Image.Image, downsample: int) -> torch.Tensor:
    """L-mode mask → ``[1, H/d, W/d]`` float in [0, 1], area-averaged to latent resolution."""
    array = torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255.0)[None, None]
    if downsample > 1:
        array = torch.nn.functional.avg_pool2d(array, downsample)
    return array[0]


def shuffle_caption(caption: str, keep: int, rng: random.Random) -> str:
    """Keep the first ``keep`` comma-separated tags in place and shuffle the rest."""
    tags = [t.strip() for t in caption.split(",") if t.strip()]
    head, tail = tags[:keep], tags[keep:]
    rng.shuffle(tail)
    return ", ".join(head + tail)
