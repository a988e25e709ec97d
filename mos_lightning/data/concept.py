"""Concept images (+ optional captions and masks) as a torch Dataset, validated up front.

A concept source is a folder of images with optional caption and mask folders matched by file
stem (``captions/<stem>.txt``, ``masks/<stem>.png``), or an entry of the reference
implementation's concept-list JSON (``instance_prompt``, ``instance_data_dir``, ``caption_dir``,
``mask_dir``). Every problem is reported before training starts, naming the file.
"""

from __future__ import annotations

import json
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ..defaults import PLACEHOLDER
from .caption_templates import resolve_templates
from .transforms import (
    image_to_tensor,
    mask_to_tensor,
    reference_object_fill,
    reference_resize_crop,
    resize_crop_letterbox,
    shuffle_caption,
)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
NOT_IMAGES = {".txt", ".json", ".yaml", ".yml", ".md"}  # sidecar files an image folder may hold without a word
# How a training view is cut from an image (mos_lightning.data.transforms); the reference's is the default.
Geometry = Literal["reference", "reference_object", "centred"]


@dataclass
class ConceptSource:
    """Where one concept's training data lives."""

    image_dir: str
    caption_dir: str | None = None
    mask_dir: str | None = None
    instance_prompt: str = PLACEHOLDER


@dataclass
class ConceptItem:
    image: Path
    caption: str
    mask: Path | None


def _check_dir(path: str | None, what: str) -> Path | None:
    if path is None:
        return None
    p = Path(path).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(f"{what} {p} does not exist or is not a folder")
    return p


MAX_ASPECT = 3.0  # beyond this a letterboxed image is mostly padding (a 4:1 image keeps 25 % of the canvas)


def _to_8bit(img: Image.Image) -> Image.Image:
    """16- and 32-bit integer images (``I;16``, ``I``) scaled to 8 bits: PIL's own conversion clips them to white."""
    if img.mode.startswith("I;16") or img.mode == "I":
        array = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or array.max() > 255 else 255.0
        return Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    return img


def open_image(path: Path, mode: str) -> Image.Image:
    """Read a whole image (any bit depth) as ``mode``; a damaged or unknown file gets an error naming it."""
    try:
        with Image.open(path) as img:
            img.load()
            return _to_8bit(img).convert(mode)
    except Image.DecompressionBombError as err:
        raise ValueError(f"image {path} is too large to read safely ({err}); downscale it (a few megapixels is plenty "
                         "for tuning)") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"cannot read image {path}: {err}; remove or replace the file") from err


def has_transparency(path: Path) -> bool:
    try:
        with Image.open(path) as img:
            return img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
    except Exception:  # noqa: BLE001 — an unreadable file is reported by open_image, by name
        return False


def scan_concept(source: ConceptSource, placeholder: str, require_placeholder: bool) -> list[ConceptItem]:
    """List and validate one concept's files; raise a clear error for each kind of bad input."""
    image_dir = _check_dir(source.image_dir, "image folder")
    caption_dir = _check_dir(source.caption_dir, "caption folder")
    mask_dir = _check_dir(source.mask_dir, "mask folder")
    images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise FileNotFoundError(f"image folder {image_dir} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    skipped = sorted(p.name for p in image_dir.iterdir() if p.is_file() and not p.name.startswith(".")
                     and p.suffix.lower() not in IMAGE_SUFFIXES | NOT_IMAGES)
    if skipped:
        warnings.warn(f"image folder {image_dir}: skipping {', '.join(skipped)} (not one of "
                      f"{', '.join(sorted(IMAGE_SUFFIXES))}); convert them to PNG to tune on them", stacklevel=2)
    transparent = [p.name for p in images if has_transparency(p)]
    if transparent:
        warnings.warn(f"image folder {image_dir}: {', '.join(transparent)} have transparent pixels, which tuning reads "
                      "as their stored colour (often black); flatten them onto a background, and give the concept's "
                      "outline as a mask (mask_dir) if it should be learned alone", stacklevel=2)
    items = []
    for path in images:
        size = open_image(path, "RGB").size
        if max(size) / min(size) > MAX_ASPECT:
            warnings.warn(f"image {path.name} is {size[0]}x{size[1]}: letterboxed to a square it keeps only "
                          f"{min(size) / max(size):.0%} of the canvas as image (the rest is padding the loss ignores); "
                          "crop it nearer to square for more signal per step", stacklevel=2)
        caption = source.instance_prompt
        caption_file = caption_dir / f"{path.stem}.txt" if caption_dir else None
        if caption_file is not None and caption_file.is_file():
            caption = caption_file.read_text().strip()
        if require_placeholder and placeholder not in caption:
            origin = caption_file if caption_file is not None and caption_file.is_file() else "instance_prompt"
            raise ValueError(
                f"caption of {path.name} ({origin}: {caption!r}) does not contain the placeholder "
                f"{placeholder!r}; add it where the concept should appear"
            )
        mask = None
        if mask_dir is not None:
            mask = mask_dir / f"{path.stem}.png"
            if not mask.is_file():
                raise FileNotFoundError(f"mask {mask} for image {path.name} is missing")
            mask_size = open_image(mask, "L").size
            if mask_size != size:
                raise ValueError(f"mask {mask} is {mask_size[0]}x{mask_size[1]} but image {path.name} is {size[0]}x{size[1]}")
        items.append(ConceptItem(path, caption, mask))
    return items


# the reference's concept-list keys (class_* are its DreamBooth-era prior-preservation keys, read and ignored)
CONCEPT_LIST_KEYS = ("instance_prompt", "instance_data_dir", "caption_dir", "mask_dir", "class_prompt", "class_data_dir")


def refuse_unknown_keys(entry: dict, known, where: str) -> None:
    """A misspelt key would be ignored silently (every caption then ``<TOK>``): refuse it by name, with the likely
    intended key."""
    import difflib

    unknown = sorted(set(entry) - set(known))
    if unknown:
        hints = [f"{k!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(k, known, 1)) else repr(k)
                 for k in unknown]
        raise ValueError(f"{where}: unknown key(s) {', '.join(hints)}; known keys: {', '.join(known)}")


def read_concept_list(path: str | Path) -> list[ConceptSource]:
    """Read the reference implementation's concept-list JSON; relative paths resolve against its folder."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"concept list {path} does not exist")
    try:
        entries = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"concept list {path} is not a readable JSON file: {error}") from error
    if isinstance(entries, dict):
        entries = [entries]
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValueError(f"concept list {path} must be a JSON list of objects, each with an 'instance_data_dir'")
    if not entries:
        raise ValueError(f"concept list {path} is empty")

    def resolve(p: str | None) -> str | None:
        if p is None or Path(p).expanduser().exists():
            return p
        return str(path.parent / p)

    sources = []
    for i, e in enumerate(entries):
        refuse_unknown_keys(e, CONCEPT_LIST_KEYS, f"entry {i} of {path}")
        if "instance_data_dir" not in e:
            raise ValueError(f"entry {i} of {path} has no 'instance_data_dir'")
        sources.append(
            ConceptSource(
                image_dir=resolve(e["instance_data_dir"]),
                caption_dir=resolve(e.get("caption_dir")),
                mask_dir=resolve(e.get("mask_dir")),
                instance_prompt=e.get("instance_prompt", PLACEHOLDER),
            )
        )
    return sources


class ConceptDataset(Dataset):
    """Augmented concept samples: ``pixel_values`` [3,S,S] in [-1,1], ``caption`` (with the placeholder),
    ``mask`` (foreground × valid, latent resolution), ``valid_mask`` (latent resolution), ``has_mask``,
    ``view``: ``"<index>:<flipped>"`` when the pixels are a deterministic function of it (letterboxed, not
    randomly cropped) so their VAE latents may be cached, else ``""``."""

    def __init__(
        self,
        sources: list[ConceptSource],
        resolution: int = 512,
        crop_prob: float = 0.5,
        flip_prob: float = 0.0,
        keep_tags: int = 1,
        shuffle_tags: bool = True,
        prompt_templates: list[str] | str | None = "object",
        placeholder: str = PLACEHOLDER,
        require_placeholder: bool = True,
        mask_downsample: int = 8,
        geometry: Geometry = "reference",
    ):
        if resolution % mask_downsample:
            raise ValueError(f"resolution {resolution} must be divisible by mask_downsample {mask_downsample}")
        self.items = [item for s in sources for item in scan_concept(s, placeholder, require_placeholder)]
        self.placeholder = placeholder  # what the task replaces with the concept's tokens
        self.resolution = resolution
        self.crop_prob = crop_prob
        self.flip_prob = flip_prob
        self.keep_tags = keep_tags
        self.shuffle_tags = shuffle_tags
        self.prompt_templates = resolve_templates(prompt_templates)
        self.geometry = geometry
        self.mask_downsample = mask_downsample
        self.rng: Any = random  # for plain indexing; training passes each sample its own generator (see sample)

    @property
    def has_masks(self) -> bool:
        return all(item.mask is not None for item in self.items)

    def __len__(self) -> int:
        return len(self.items)

    def caption(self, text: str, rng: random.Random) -> str:
        if self.shuffle_tags:
            text = shuffle_caption(text, self.keep_tags, rng)
        if self.prompt_templates:
            text = rng.choice(self.prompt_templates).format(text)
        return text

    def __getitem__(self, index: int) -> dict:
        return self.sample(index, self.rng)

    def sample(self, index: int, rng: random.Random) -> dict:
        """Image ``index`` augmented with draws from ``rng`` (one per training draw: :mod:`.draws`)."""
        item = self.items[index]
        image = open_image(item.image, "RGB")
        mask = open_image(item.mask, "L") if item.mask else Image.new("L", image.size, 255)
        if self.geometry == "reference":
            image, mask, valid = reference_resize_crop(image, mask, self.resolution, self.crop_prob, rng)
            cropped = True  # randomly placed: never a cacheable view
        elif self.geometry == "reference_object":
            image, mask, valid = reference_object_fill(image, mask, self.resolution, self.crop_prob, rng)
            cropped = True
        else:
            image, mask, valid, cropped = resize_crop_letterbox(image, mask, self.resolution, self.crop_prob, rng,
                                                                report_crop=True)
        flipped = rng.random() < self.flip_prob
        if flipped:
            image, mask, valid = (x.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for x in (image, mask, valid))
        valid_mask = mask_to_tensor(valid, self.mask_downsample)
        return {
            "pixel_values": image_to_tensor(image),
            "caption": self.caption(item.caption, rng),
            "mask": mask_to_tensor(mask, self.mask_downsample) * valid_mask,
            "valid_mask": valid_mask,
            "has_mask": torch.tensor(item.mask is not None),
            "view": "" if cropped else f"{index}:{int(flipped)}",
        }
