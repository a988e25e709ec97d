"""Draw the two bundled demo concepts (run once; the PNGs are committed under demo/concepts/).

``redball``: a red ball with a white stripe; ``bluecube``: a blue box with a yellow corner. Each has
six small non-square photos on varied backgrounds, captions with the ``<TOK>`` placeholder, and
foreground masks, so every data path (captions, masks, letterbox, crop) is exercised.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from PIL import Image, ImageDraw

BACKGROUNDS = [
    ((120, 180, 90), "on the grass"),
    ((200, 190, 150), "on the sand"),
    ((90, 120, 200), "by the sea"),
    ((230, 230, 230), "in a white room"),
    ((60, 60, 70), "at night"),
    ((170, 120, 80), "on a wooden table"),
]


def draw(kind: str, index: int, rng: random.Random) -> tuple[Image.Image, Image.Image, str]:
    w, h = (96, 72) if index % 2 == 0 else (72, 96)
    color, place = BACKGROUNDS[index]
    image = Image.new("RGB", (w, h), color)
    mask = Image.new("L", (w, h), 0)
    d, m = ImageDraw.Draw(image), ImageDraw.Draw(mask)
    for _ in range(6):  # background clutter
        x, y = rng.randrange(w), rng.randrange(h)
        shade = tuple(max(0, min(255, c + rng.randint(-40, 40))) for c in color)
        d.rectangle((x, y, x + rng.randint(4, 14), y + rng.randint(4, 14)), fill=shade)
    size = rng.randint(30, 42)
    x0, y0 = rng.randint(4, w - size - 4), rng.randint(4, h - size - 4)
    box = (x0, y0, x0 + size, y0 + size)
    if kind == "redball":
        d.ellipse(box, fill=(210, 30, 40))
        d.rectangle((x0 + 4, y0 + size // 2 - 2, x0 + size - 4, y0 + size // 2 + 2), fill=(250, 250, 250))
        m.ellipse(box, fill=255)
    else:
        d.rectangle(box, fill=(30, 60, 200))
        d.polygon([(x0, y0), (x0 + size // 3, y0), (x0, y0 + size // 3)], fill=(240, 210, 40))
        m.rectangle(box, fill=255)
    return image, mask, f"a photo of <TOK>, {place}"


def main(root: str = "demo/concepts") -> None:
    for seed, kind in enumerate(("redball", "bluecube")):
        rng = random.Random(seed)
        out = Path(root) / kind
        for sub in ("captions", "masks"):
            (out / sub).mkdir(parents=True, exist_ok=True)
        for i in range(len(BACKGROUNDS)):
            image, mask, caption = draw(kind, i, rng)
            image.save(out / f"{i:02d}.png")
            mask.save(out / "masks" / f"{i:02d}.png")
            (out / "captions" / f"{i:02d}.txt").write_text(caption + "\n")
    print(f"wrote demo concepts under {root}")


if __name__ == "__main__":
    main(*sys.argv[1:])
