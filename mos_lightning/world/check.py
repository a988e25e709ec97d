"""Does the world's CLIP see the world, and does the base model draw what it is asked?

    python -m mos_lightning.world.check detector                      # the exact detector on held-out pictures
    python -m mos_lightning.world.check clip demo/world/clip           # the CLIP's zero-shot accuracy on them
    python -m mos_lightning.world.check base demo/world/base           # generation check, judged by the detector
    python -m mos_lightning.world.check things demo/world/base         # two- and three-thing captions, each in its slot
    python -m mos_lightning.world.check regional demo/world/base       # the same with region control (regional_check)
    python -m mos_lightning.world.check attention demo/world/base      # where its cross-attention reads each thing's words
    python -m mos_lightning.world.check vae demo/world/base            # what survives its VAE (the ceiling of every picture)

Zero-shot: a picture's class (colour, background) is the one whose *prompt ensemble* — the mean text embedding of
every world caption with that class, over all colours and backgrounds — is nearest. The generation check samples
held-out single-thing captions with the base model and asks the CLIP which class, colour and background it drew;
it reports the rates beside the judge's own accuracy on real pictures (the check cannot be better than its judge).
The default judge is the exact detector (``mos_lightning.world.detector``); ``--clip`` uses the world CLIP.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
from pathlib import Path

import numpy as np
import torch

from .scenes import BACKGROUNDS, CLASSES, COLOURS, PATTERNS, Scene, Thing, caption, place, render

ATTRIBUTES = {"class": CLASSES, "colour": tuple(sorted(COLOURS)), "background": tuple(sorted(BACKGROUNDS))}


def single_caption(cls: str, colour: str, background: str) -> str:
    return caption(Scene(background, (Thing(cls, colour),)))


def prototypes(clip) -> dict[str, torch.Tensor]:
    """Per attribute ``[values, D]``: the normalised mean embedding of every single-thing caption with that value."""
    combos = list(itertools.product(CLASSES, sorted(COLOURS), sorted(BACKGROUNDS)))
    texts = clip.texts([single_caption(*c) for c in combos])
    out = {}
    for k, (attribute, values) in enumerate(ATTRIBUTES.items()):
        rows = [texts[[i for i, c in enumerate(combos) if c[k] == v]].mean(0) for v in values]
        out[attribute] = torch.nn.functional.normalize(torch.stack(rows), dim=-1)
    return out


def classify(clip, images, protos: dict[str, torch.Tensor]) -> dict[str, list[str]]:
    features = clip.images(images)
    return {a: [ATTRIBUTES[a][i] for i in (features @ p.T).argmax(-1).tolist()] for a, p in protos.items()}


def held_out(count: int, seed: int = 12345) -> list[tuple[str, str, str]]:
    """(class, colour, background) triples drawn with a seed the training pictures never use."""
    rng = random.Random(f"held-out-{seed}")
    return [(rng.choice(CLASSES), rng.choice(sorted(COLOURS)), rng.choice(sorted(BACKGROUNDS))) for _ in range(count)]


def held_out_pictures(truth: list[tuple[str, str, str]]) -> list:
    """Real world pictures of ``truth``'s (class, colour, background), each with a random pattern and place."""
    rng = random.Random("held-out-places")
    return [render(Scene(bg, place(rng, [Thing(cls, colour, rng.choice(PATTERNS))])), seed=900_000 + k)[0]
            for k, (cls, colour, bg) in enumerate(truth)]


def rates(truth: list[tuple[str, str, str]], predicted: dict[str, list[str]]) -> dict[str, float]:
    out = {a: float(np.mean([t[k] == p for t, p in zip(truth, predicted[a], strict=True)])) for k, a in enumerate(ATTRIBUTES)}
    out["all three"] = float(np.mean([all(t[k] == predicted[a][j] for k, a in enumerate(ATTRIBUTES))
                                      for j, t in enumerate(truth)]))
    return out


def clip_accuracy(clip, count: int = 240) -> dict[str, float]:
    truth = held_out(count)
    images = held_out_pictures(truth)
    return rates(truth, classify(clip, images, prototypes(clip)))


def detector_labels(images) -> dict[str, list[str]]:
    from .detector import detect

    found = [detect(np.asarray(i)) for i in images]
    return {a: [f[a] for f in found] for a in ATTRIBUTES}


def detector_accuracy(count: int = 240) -> dict[str, float]:
    """The exact detector on real held-out pictures (the same ones as :func:`clip_accuracy`)."""
    truth = held_out(count)
    images = held_out_pictures(truth)
    return rates(truth, detector_labels(images))


def load_base(base: str):
    """The base model folder as an :class:`~mos_lightning.pipelines.EDLoRAPipeline`, offline, no progress bars."""
    from ..pipelines import EDLoRAPipeline

    pipe = EDLoRAPipeline.from_pretrained(base, local_files_only=True, safety_checker=None,
                                          requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sample_captions(pipe, captions: list[str], steps: int = 20, guidance: float = 5.0) -> list:
    """Caption ``k`` sampled with seed ``k``, no negative prompt, 16 at a time."""
    images: list = []
    for start in range(0, len(captions), 16):
        chunk = captions[start:start + 16]
        images += list(pipe.sample(chunk, list(range(start, start + len(chunk))), "", num_inference_steps=steps,
                                   guidance_scale=guidance, height=64, width=64))
    return images


def generation_rates(base: str, clip=None, count: int = 96, steps: int = 20, guidance: float = 5.0) -> dict[str, float]:
    """Held-out single-thing captions sampled by ``base``, judged by ``clip`` or (``None``) the exact detector."""
    truth = held_out(count, seed=54321)
    images = sample_captions(load_base(base), [single_caption(*t) for t in truth], steps, guidance)
    return rates(truth, detector_labels(images) if clip is None else classify(clip, images, prototypes(clip)))


def slot_boxes(count: int) -> list[list[float]]:
    """Where the k-th of ``count`` listed things stands (captions list things left to right, one slot each)."""
    return [[0.2, k / count, 0.9, (k + 1) / count] for k in range(count)]


def held_out_scenes(count: int, things: int, seed: int = 2468) -> list[Scene]:
    """``count`` scenes of ``things`` things of different classes, drawn with a seed no training picture uses."""
    rng = random.Random(f"held-out-things-{things}-{seed}")
    scenes = []
    for _ in range(count):
        classes = rng.sample(CLASSES, things)
        scenes.append(Scene(rng.choice(sorted(BACKGROUNDS)),
                            place(rng, [Thing(c, rng.choice(sorted(COLOURS)), rng.choice(PATTERNS)) for c in classes])))
    return scenes


def slot_hits(scenes: list[Scene], images: list) -> list[list[tuple[bool, bool]]]:
    """Per picture, per thing: (class right, colour right), read by the exact detector inside the thing's slot."""
    from .detector import detect

    hits = []
    for scene, image in zip(scenes, images, strict=True):
        found = [detect(np.asarray(image), box) for box in slot_boxes(len(scene.things))]
        hits.append([(f["class"] == t.cls, f["colour"] == t.colour) for t, f in zip(scene.things, found, strict=True)])
    return hits


def thing_rates(scenes: list[Scene], images: list) -> dict[str, float]:
    """Per thing: class, colour, both right in its slot; per picture: every thing right."""
    hits = slot_hits(scenes, images)
    flat = [h for row in hits for h in row]
    return {"class": float(np.mean([c for c, _ in flat])), "colour": float(np.mean([c for _, c in flat])),
            "thing": float(np.mean([c and k for c, k in flat])),
            "picture": float(np.mean([all(c and k for c, k in row) for row in hits]))}


def real_scene_pictures(scenes: list[Scene]) -> list:
    """Real world pictures of ``scenes`` (the judge's ceiling of the several-things checks)."""
    return [render(s, seed=950_000 + k)[0] for k, s in enumerate(scenes)]


def things_check(base: str, count: int = 48, steps: int = 20, guidance: float = 5.0) -> dict[str, dict]:
    """Two- and three-thing held-out captions: the base's pictures and real pictures (the judge's ceiling)."""
    pipe, out = load_base(base), {}
    for things in (2, 3):
        scenes = held_out_scenes(count, things)
        drawn = sample_captions(pipe, [caption(s) for s in scenes], steps, guidance)
        out[f"{things} things"] = {"base": thing_rates(scenes, drawn), "real": thing_rates(scenes, real_scene_pictures(scenes))}
    return out


def main(argv: list[str] | None = None) -> None:
    from ..metrics import CLIPFeatures

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["clip", "detector", "base", "things", "regional", "attention", "vae"])
    parser.add_argument("folder", nargs="?", help="the CLIP folder (clip) or the base model folder (the others)")
    parser.add_argument("--clip", help="judge the base with this world CLIP instead of the exact detector")
    parser.add_argument("--count", type=int, default=96)
    parser.add_argument("--sketch", help="regional: also region control with this sketch adapter (demo/world/sketch)")
    parser.add_argument("--figure", type=Path, help="regional: a PNG of the first two-thing scenes, a row per setting; vae: a row "
                        "per layout of (c), four real pictures, then their round trip")
    args = parser.parse_args(argv)
    result: dict
    if args.what == "detector":
        result = detector_accuracy()
    elif args.what == "clip":
        result = clip_accuracy(CLIPFeatures(args.folder))
    elif args.what == "things":
        result = things_check(args.folder, args.count)
    elif args.what == "attention":
        from .attention_check import attention_check

        result = attention_check(args.folder, args.count)
    elif args.what == "vae":
        from .vae_check import load_vae, vae_check

        result = vae_check(load_vae(args.folder), figure=args.figure)
    elif args.what == "regional":
        from .regional_check import regional_check

        result = regional_check(args.folder, args.count, sketch=args.sketch, figure=args.figure)
    else:
        result = generation_rates(args.folder, CLIPFeatures(args.clip) if args.clip else None, args.count)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
