"""How much of what the world draws survives a base's VAE? Real pictures encoded and decoded (the posterior's mean),
read by the exact detector before and after: the world's own single things (class, colour, background), each concept
alone (its signature), and (c)'s layouts (boxes and whole pictures; the same real pictures as CLAIMS.md (c)'s "real"
column). Every picture a base draws leaves through its VAE's decoder, so the round trip bounds what any tuning,
fusion or sampler can show: it is the ceiling (c)'s rates are to be read against, not the real pictures'.

    python -m mos_lightning.world.check vae demo/world/base           # a few seconds
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..resources import locate
from .boxes import box_hits, reading, real_pictures, signature, summarise
from .concepts import CONCEPTS, concept_thing
from .identity import bootstrap, mean_score
from .scenes import BACKGROUNDS, Scene, place, render


@torch.no_grad()
def round_trip(vae, images: list[Image.Image], batch: int = 64) -> list[Image.Image]:
    """``images`` encoded (the posterior's mean) and decoded by ``vae``, as 8-bit pictures."""
    out = []
    for start in range(0, len(images), batch):
        pixels = torch.from_numpy(np.stack([np.asarray(i, np.float32) for i in images[start:start + batch]]))
        x = (pixels / 127.5 - 1).permute(0, 3, 1, 2).to(vae.device, vae.dtype)
        decoded = vae.decode(vae.encode(x).latent_dist.mean).sample.float().clamp(-1, 1)
        out += [Image.fromarray(((d.permute(1, 2, 0) + 1) * 127.5).round().byte().cpu().numpy()) for d in decoded]
    return out


def concept_pictures(concept: str, count: int) -> list[Image.Image]:
    """Real pictures of ``concept`` alone, on random backgrounds and places (seeds no other check uses)."""
    rng = random.Random(f"vae-check-{concept}")
    return [render(Scene(rng.choice(sorted(BACKGROUNDS)), place(rng, [concept_thing(concept)])), seed=900_000 + k)[0]
            for k in range(count)]


def vae_check(vae, concepts: list[str] | None = None, count: int = 24, real: int = 16, things: int = 240,
              scenes: int = 96, layouts: list | None = None, figure: Path | None = None) -> dict:
    """Detector rates of real pictures and of their round trip through ``vae`` (an ``AutoencoderKL``): ``things``
    (``things`` held-out single things: class, colour, background), ``2 things`` / ``3 things`` (``scenes`` held-out
    scenes of the several-things check, each thing read in its slot: class, colour, both; whole pictures),
    ``concepts`` (each concept's signature on ``count`` pictures of it alone, and pooled, with 95 % intervals) and
    ``layouts`` (``layouts``, default (c)'s, ``real`` pictures each: boxes and whole pictures; pooled with intervals).
    ``figure``: a PNG, a row per layout: its first four real pictures, then the same through the VAE."""
    from .check import detector_labels, held_out, held_out_pictures, held_out_scenes, rates, real_scene_pictures, thing_rates
    from .claims_regional import LAYOUTS, pooled_rates
    from .regional_check import save_figure

    concepts, layouts = concepts or sorted(CONCEPTS), layouts or list(LAYOUTS)
    result: dict = {"things": {}, "concepts": {}, "layouts": {}}
    truth = held_out(things)
    pictures = held_out_pictures(truth)
    for name, images in (("real", pictures), ("round_trip", round_trip(vae, pictures))):
        result["things"][name] = rates(truth, detector_labels(images))
    for count_things in (2, 3):  # the several-things check's held-out scenes, each thing read in its slot
        held = held_out_scenes(scenes, count_things)
        images = real_scene_pictures(held)
        result[f"{count_things} things"] = {name: thing_rates(held, shown) for name, shown in
                                            (("real", images), ("round_trip", round_trip(vae, images)))}
    signatures = {c: signature(c) for c in {*concepts, *(c for lay in layouts for c in lay.concepts)}}
    hits: dict[str, dict[str, np.ndarray]] = {"real": {}, "round_trip": {}}
    for concept in concepts:
        images = concept_pictures(concept, count)
        for name, shown in (("real", images), ("round_trip", round_trip(vae, images))):
            hits[name][concept] = np.array([float(reading(i) in signatures[concept]) for i in shown])
        result["concepts"][concept] = {n: bootstrap(mean_score, {concept: h[concept]}) for n, h in hits.items()}
    result["concepts"]["pooled"] = {n: bootstrap(mean_score, h) for n, h in hits.items()}
    rows: dict[str, list[dict]] = {"real": [], "round_trip": []}
    shown_rows: dict[str, list] = {}
    for layout in layouts:
        images = real_pictures(layout, real)
        result["layouts"][layout.name] = {}
        decoded = round_trip(vae, images)
        shown_rows[layout.name] = images[:4] + decoded[:4]
        for name, shown in (("real", images), ("round_trip", decoded)):
            boxes = box_hits(shown, layout, signatures)
            rows[name].append({"hits": boxes})
            result["layouts"][layout.name][name] = summarise(boxes)
    result["layouts"]["pooled"] = {n: pooled_rates(r) for n, r in rows.items()}
    if figure is not None:
        save_figure(figure, shown_rows)
    return result


def load_vae(base: str):
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(Path(locate(base)) / "vae").eval()
