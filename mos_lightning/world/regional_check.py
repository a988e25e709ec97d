"""Region control on the base's own words: the regional sampler's positive control, with no tuning and no fusion in
the way. Held-out two- and three-thing scenes (:func:`~mos_lightning.world.check.held_out_scenes`, a seed no training
picture uses); each thing's own words as its region prompt in its slot ("a red striped ball on the sand"), the whole
caption as the global prompt; then region prompts with their context (the caption naming this thing's colour alone)
and, given a sketch adapter, region prompts with the scene's outlines (the paper's setting) — against the same
captions and seeds without control, and real pictures of the scenes (the judge's ceiling). Each thing is judged in its slot by the exact detector: its class, its colour, both ("thing");
a picture counts when every thing in it is right. 95 % intervals resample the scenes; each setting minus without
is paired (the same scenes and seeds).

    python -m mos_lightning.world.check regional demo/world/base --sketch demo/world/sketch
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..attention.regions import Region
from ..images import make_grid
from .boxes import Layout
from .check import held_out_scenes, load_base, real_scene_pictures, sample_captions, slot_hits
from .claims_regional import paired_difference, pooled_rates
from .claims_report import save_enlarged
from .data import named_caption
from .scenes import BACKGROUNDS, Scene, caption

JUDGES = ("class", "colour", "thing")


def scene_regions(scene: Scene, context: bool = False) -> list[Region]:
    """One region per thing, in the box a real picture puts it in (the world's slots, left to right, as
    :class:`~mos_lightning.world.boxes.Layout` places them): its words on the scene's background ("a red ball on the
    sand"), or with ``context`` the whole caption naming only this thing's colour and pattern, the others by their
    class ("a red ball and a cube on the sand": the layout from the caption, the colour from the box)."""
    boxes = Layout("slots", tuple(t.cls for t in scene.things), scene.background).boxes
    return [Region(named_caption(scene, k) if context else f"{thing.words()} {BACKGROUNDS[scene.background]}",
                   tuple(box))  # type: ignore[arg-type]  # a box is four floats
            for k, (thing, box) in enumerate(zip(scene.things, boxes, strict=True))]


def judged(scenes: list[Scene], images: list) -> dict[str, list[list[bool]]]:
    """Per judge, per picture, per thing: is it right in its slot (:func:`~mos_lightning.world.check.slot_hits`)."""
    hits = slot_hits(scenes, images)
    return {"class": [[c for c, _ in row] for row in hits], "colour": [[k for _, k in row] for row in hits],
            "thing": [[c and k for c, k in row] for row in hits]}


def summary(hits: dict[str, list[list[bool]]]) -> dict[str, tuple[float, float, float]]:
    """``class``, ``colour``, ``thing`` (share of things, interval) and ``picture`` (every thing right)."""
    out = {judge: pooled_rates([{"hits": hits[judge]}])["boxes"] for judge in JUDGES}
    out["picture"] = pooled_rates([{"hits": hits["thing"]}])["all"]
    return out


def difference(a: dict[str, list[list[bool]]], b: dict[str, list[list[bool]]]) -> dict[str, tuple]:
    """``a`` minus ``b`` on the same scenes and seeds, each ``(value, low, high, verdict)``."""
    out = {judge: paired_difference([{"hits": a[judge]}], [{"hits": b[judge]}])["boxes"] for judge in JUDGES}
    out["picture"] = paired_difference([{"hits": a["thing"]}], [{"hits": b["thing"]}])["all"]
    return out


CONDITIONS = {"with control": False, "control, prompts with context": True}  # name → scene_regions(context=…)
SKETCHED = "control and sketch"  # region prompts and the scene's outlines through a sketch adapter (weight 1)


def save_figure(path: Path, pictures: dict[str, list], columns: int = 8) -> None:
    """One row per setting (in ``pictures``' order), its first ``columns`` pictures, twice the size."""
    columns = min(columns, *(len(found) for found in pictures.values()))
    cells = [np.asarray(p) for found in pictures.values() for p in found[:columns]]
    save_enlarged(make_grid(cells, columns), path)


def regional_check(base: str, count: int = 48, steps: int = 20, guidance: float = 5.0,
                   things: tuple[int, ...] = (2, 3), sketch: str | None = None,
                   figure: Path | None = None) -> dict[str, dict]:
    """Per number of things: the rates of real pictures, of the base without control and under each of
    :data:`CONDITIONS` (scene ``k`` sampled with seed ``k`` every way), and each condition minus without (paired);
    with ``sketch`` (a sketch T2I-Adapter folder) also :data:`SKETCHED`, the paper's setting; ``figure``: a PNG of
    the first scenes of the first number of things, one row per setting (real, without, then each condition)."""
    import torch
    from tqdm.auto import tqdm

    from ..pipelines.regional import AdapterCondition, RegionalPipeline
    from .sketch import scene_sketch

    conditions: dict[str, tuple[bool, object]] = {name: (context, None) for name, context in CONDITIONS.items()}
    if sketch is not None:
        from diffusers import T2IAdapter

        conditions[SKETCHED] = (False, T2IAdapter.from_pretrained(sketch, local_files_only=True))

    pipe = load_base(base)
    regional, out = RegionalPipeline(pipe), {}
    for n in things:
        scenes = held_out_scenes(count, n)
        pictures = {"real": real_scene_pictures(scenes),
                    "without": sample_captions(pipe, [caption(s) for s in scenes], steps, guidance)}
        for name, (context, adapter) in conditions.items():
            pictures[name] = [regional(caption(s), scene_regions(s, context), negative_prompt="",
                                       num_inference_steps=steps, guidance_scale=guidance,
                                       generator=torch.Generator().manual_seed(k),
                                       conditions=[AdapterCondition(adapter, scene_sketch(s))] if adapter else None)
                              for k, s in tqdm(list(enumerate(scenes)), desc=f"{n} things, {name}", leave=False)]
        hits = {name: judged(scenes, found) for name, found in pictures.items()}
        if figure is not None and n == things[0]:
            save_figure(figure, pictures)
        out[f"{n} things"] = {**{name: summary(h) for name, h in hits.items()},
                              **{f"{name} minus without": difference(hits[name], hits["without"]) for name in conditions}}
    return out
