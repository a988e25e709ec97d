"""The claims run's (c): regional composition scored box by box with the exact detector, per condition (each setting
of :data:`REGIONAL_CONDITIONS`, and without control), pooled over layouts with bootstrap intervals, paired differences."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from .boxes import Layout, box_hits, class_judges, layout_scenes, reading, real_pictures, signature, summarise
from .markdown import interval_text, markdown_table, signed_text

LAYOUTS = (
    Layout("starbox-bandball", ("starbox", "bandball"), "grass"),
    Layout("zigcone-buoyring", ("zigcone", "buoyring"), "snow"),
    Layout("heartcube-moonball", ("heartcube", "moonball"), "snow"),
    Layout("starbox-zigcone-buoyring", ("starbox", "zigcone", "buoyring"), "table"),
    Layout("bandball-heartcube-zigcone", ("bandball", "heartcube", "zigcone"), "sky"),
    # boxes of other sizes and places than the world's slots
    Layout("moonball-large-buoyring-small", ("moonball", "buoyring"), "grass", ((0.1, 0.0, 0.9, 0.6), (0.45, 0.65, 0.85, 1.0))),
    Layout("starbox-bandball-corners", ("starbox", "bandball"), "snow", ((0.05, 0.05, 0.5, 0.45), (0.5, 0.55, 0.95, 0.95))),
    Layout("zigcone-over-heartcube", ("zigcone", "heartcube"), "sand", ((0.0, 0.25, 0.5, 0.75), (0.5, 0.25, 1.0, 0.75))),
)
REGIONAL_SEEDS = list(range(1, 9))
# the reference's regional sampling in full: what a condition leaves out (configs/world/regional.yaml composes otherwise)
REFERENCE_SAMPLING = {"box_rounding": "inward", "bounded_steps": 0, "collage_strength": 0.0, "collage_canvas": "regional",
                      "collage_guidance": None, "collage_fit": "cover", "collage_scale": 1}
_PLAIN = {"collage_strength": 0.2, "collage_canvas": "plain", "collage_guidance": 1.0}
_THINGS, _HELD_OUT = {**_PLAIN, "collage_fit": "thing"}, {"seeds": list(range(9, 17))}
REGIONAL_CONDITIONS: dict[str, dict[str, Any]] = {  # (c): folder → RegionalTask options and scene (context, sketch, regions); the first is
    "with": REFERENCE_SAMPLING,  # the reference's region control, which the others are compared with
    "with-outward": {"box_rounding": "outward"},  # every cell a box touches (ours before 0.2)
    "bounded": {"bounded_steps": 10},  # bounded self-attention for the first half of the 20 steps
    "context": {"context": True},  # region prompts with their context (Layout.region_prompt)
    "sketch": {"sketch": True},  # the paper's setting: region prompts and a spatial condition (the things' outlines)
    # the sketch at weight 2 (picked among 1-4 on seeds 1-8; on seeds 9-16 it held: CLAIMS.md (c))
    "context-sketch": {"context": True, "sketch": True, "sketch_weight": 2.0},
    "sketch-only": {"sketch": True, "regions": False},  # the sketch and the whole prompt, no region prompts
    # each region drawn alone, shrunk into its box over the regional picture, the last fifth of the steps again
    # (picked among 0.1-0.5 on seeds 1-8; it held on seeds 9-16: CLAIMS.md (c), "Composing from a collage")
    "collage": {"collage_strength": 0.2},
    # the same pieces on one colour (their borders'; no regional picture first), the last steps unguided (picked among
    # strengths 0.1-0.4, guidance 1-5 on seeds 1-8; held on 9-16: CLAIMS.md (c), "A plain canvas, unguided")
    "collage-plain": _PLAIN,
    "collage-plain-held-out": {**_PLAIN, **_HELD_OUT},
    # the same, each piece's thing found, centred and fitted in its box, only its pixels pasted (collage.paste_things)
    "collage-things": _THINGS,
    "collage-things-held-out": {**_THINGS, **_HELD_OUT},
    # the same made and denoised at twice the picture's size, then resized to it (collage_scale)
    "collage-things-x2": {**_THINGS, "collage_scale": 2},
    "collage-things-x2-held-out": {**_THINGS, "collage_scale": 2, **_HELD_OUT},
    # the chosen setting against the reference again, on seeds no choice above looked at
    "with-held-out": {"box_rounding": "inward", **_HELD_OUT},
    "context-sketch-held-out": {"context": True, "sketch": True, "sketch_weight": 2.0, **_HELD_OUT},
}


def write_scene_file(out: Path, layouts: list[Layout], names: dict[str, str], context: bool = False,
                     sketch: bool = False, regions: bool = True, sketch_weight: float = 1.0,
                     seeds: list[int] | None = None) -> Path:
    """The layouts as a scene file in ``out``: region prompts with each concept alone or with its context
    (:meth:`~mos_lightning.world.boxes.Layout.region_prompt`), or no regions; with ``sketch``, the condition of an
    adapter named ``sketch`` at ``sketch_weight``: the outlines of the layout's real scene
    (:func:`~mos_lightning.world.sketch.scene_sketch`); ``seeds`` (default :data:`REGIONAL_SEEDS`) per scene."""
    from .sketch import scene_sketch

    sketches, scenes = out / "regional" / "sketches", []
    for layout in layouts:
        scene = {"name": layout.name, "prompt": layout.prompt(names), "seeds": seeds or REGIONAL_SEEDS, "regions": [
            {"prompt": layout.region_prompt(k, names, context), "box": box} for k, box in enumerate(layout.boxes)
        ] if regions else []}
        if sketch:
            sketches.mkdir(parents=True, exist_ok=True)
            scene_sketch(layout_scenes(layout, 1)[0]).save(sketches / f"{layout.name}.png")
            scene["conditions"] = [{"adapter": "sketch", "image": str(sketches / f"{layout.name}.png"),
                                    "weight": sketch_weight}]
        scenes.append(scene)
    weight = f"-w{sketch_weight:g}" if sketch and sketch_weight != 1 else ""
    held_out = "-seeds" + "_".join(map(str, seeds)) if seeds else ""
    path = out / f"scenes{'-context' * context}{'-sketch' * sketch}{weight}{'-no-regions' * (not regions)}{held_out}.yaml"
    path.write_text(yaml.safe_dump({"scenes": scenes}, sort_keys=False))
    return path


def composed_images(out: Path, condition: str, index: int) -> list[Path]:
    """The pictures of layout ``index`` made with (``with``) or without region control (not the box overlays)."""
    return sorted(p for p in (out / "regional" / condition).glob(f"{index:04d}-*/seed*.png")
                  if not p.name.endswith(".boxes.png"))


def regional_conditions() -> list[str]:
    """The claims run's regional folders: each region-control setting, then without control."""
    return [*REGIONAL_CONDITIONS, "without"]


def alone_prompts(layouts: list[Layout], names: dict[str, str]) -> list[str]:
    """Every box's prompt with its concept alone, once ("<starbox> on the grass"): what the fused model draws for
    it in a whole picture of its own is the most its box can show."""
    return sorted({layout.region_prompt(k, names) for layout in layouts for k in range(len(layout.concepts))})


def in_place_prompts(layouts: list[Layout], names: dict[str, str]) -> list[str]:
    """Every box's concept in its layout's caption, the others as class words ("a cube and <bandball> on the
    grass"), for the layouts in the world's slots (a caption lists things left to right, so only there does it say
    where each box is)."""
    return sorted({layout.region_prompt(k, names, context=True) for layout in layouts if layout.given_boxes is None
                   for k in range(len(layout.concepts))})


def sampled_hits(out: Path, layout: Layout, judges: dict, prompts: list[str], names: dict[str, str],
                 in_place: bool = False) -> list[list[bool]]:
    """Per seed, per box, from the fused model's own pictures (no region control) of each box's prompt, found by its
    index in ``prompts``: ``regional/alone`` (the concept alone, read in the whole picture: a layout then counts as
    having all its concepts when each was drawn alone with the same seed, the rate a perfect composer of this
    model's concepts would reach) or, ``in_place``, ``regional/in-place`` (the concept in its place in the caption,
    read in its box: what the model does on its own at the size of a box)."""
    folder = out / "regional" / ("in-place" if in_place else "alone")
    columns = []
    for k, (concept, box) in enumerate(zip(layout.concepts, layout.boxes, strict=True)):
        index = prompts.index(layout.region_prompt(k, names, context=in_place))
        paths = sorted(folder.glob(f"{index:04d}-*/seed*.png"))
        columns.append([reading(Image.open(p).convert("RGB"), box if in_place else None) in judges[concept]
                        for p in paths])
    return [list(row) for row in zip(*columns, strict=True)]


def in_place_scores(out: Path, layouts: list[Layout], concepts: list[str], names: dict[str, str]) -> dict:
    """Per world-slot layout, :func:`sampled_hits` in place by the concept's signature and by its class alone; empty when
    the run has no ``regional/in-place`` (runs made before it)."""
    if not (out / "regional" / "in-place").is_dir():
        return {}
    signatures = {c: signature(c) for c in concepts}
    prompts, rows = in_place_prompts(layouts, names), {}
    for layout in (lay for lay in layouts if lay.given_boxes is None):
        hits, kinds = (sampled_hits(out, layout, j, prompts, names, in_place=True)
                       for j in (signatures, class_judges(signatures)))
        rows[layout.name] = {**summarise(hits), "hits": hits, "classes": {**summarise(kinds), "hits": kinds}}
    return rows


def regional_scores(out: Path, layouts: list[Layout], concepts: list[str], names: dict[str, str],
                    real: int = 16, conditions: list[str] | None = None) -> dict:
    """Per layout: box and whole-picture rates for each of ``conditions`` (default :func:`regional_conditions`), on
    real pictures (the judge's ceiling) and for each concept drawn alone (:func:`sampled_hits`, the model's ceiling); under
    ``classes`` the same rates for the concept's class in any colour (a thing of the right kind in the box)."""
    signatures = {c: signature(c) for c in concepts}
    judges: dict[str, dict] = {"signatures": signatures, "classes": class_judges(signatures)}
    scores: dict = {"signatures": {c: sorted(map(list, s)) for c, s in signatures.items()}, "layouts": {}}
    prompts, conditions = alone_prompts(layouts, names), conditions or regional_conditions()
    for index, layout in enumerate(layouts):
        pictures = {"real": real_pictures(layout, real)}
        for condition in conditions:
            pictures[condition] = [Image.open(p).convert("RGB") for p in composed_images(out, condition, index)]
        row = {}
        for condition in ["real", "alone", *conditions]:
            rates = {}
            for name, judge in judges.items():
                hits = (sampled_hits(out, layout, judge, prompts, names) if condition == "alone"
                        else box_hits(pictures[condition], layout, judge))
                rates[name] = {**summarise(hits), "hits": hits}
            row[condition] = {**rates["signatures"], "classes": rates["classes"]}
            if condition not in ("real", "alone"):
                row[condition]["images"] = len(pictures[condition])
        scores["layouts"][layout.name] = row
    scores["in_place"] = in_place_scores(out, layouts, concepts, names)
    return scores


def pooled_rates(rows: list[dict], samples: int = 1000, seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """Boxes and whole pictures over every layout's pictures, each ``(value, low, high)``: a 95 % interval from
    resampling each layout's pictures."""
    rng = np.random.default_rng(seed)
    pictures = [[list(map(bool, h)) for h in row["hits"]] for row in rows]

    def rates(sets) -> tuple[float, float]:
        flat = [b for s in sets for p in s for b in p]
        return float(np.mean(flat)), float(np.mean([all(p) for s in sets for p in s]))

    value = rates(pictures)
    draws = np.array([rates([[s[i] for i in rng.integers(0, len(s), len(s))] for s in pictures if s])
                      for _ in range(samples)])
    low, high = np.percentile(draws, [2.5, 97.5], axis=0)
    return {"boxes": (value[0], float(low[0]), float(high[0])), "all": (value[1], float(low[1]), float(high[1]))}


def paired_difference(rows_a: list[dict], rows_b: list[dict], samples: int = 1000, seed: int = 0) -> dict:
    """Rates of ``a`` minus ``b`` over the same layouts and seeds, each ``(value, low, high, verdict)``: the same
    pictures' indices are resampled for both (paired), within each layout."""
    rng = np.random.default_rng(seed)
    a = [np.array(row["hits"], bool) for row in rows_a]
    b = [np.array(row["hits"], bool) for row in rows_b]

    def rates(sets, picks) -> np.ndarray:
        chosen = [s[i] for s, i in zip(sets, picks, strict=True)]
        return np.array([np.mean(np.concatenate([c.ravel() for c in chosen])),
                         np.mean(np.concatenate([c.all(1) for c in chosen]))])

    whole = [np.arange(len(s)) for s in a]
    value = rates(a, whole) - rates(b, whole)
    draws = []
    for _ in range(samples):
        picks = [rng.integers(0, len(s), len(s)) for s in a]
        draws.append(rates(a, picks) - rates(b, picks))
    low, high = np.percentile(np.array(draws), [2.5, 97.5], axis=0)
    return {k: (float(value[i]), float(low[i]), float(high[i]),
                "better" if low[i] > 0 else "worse" if high[i] < 0 else "tie") for i, k in enumerate(("boxes", "all"))}


REGIONAL_NAMES = {"real": "real", "alone": "each concept alone", "with": "with control", "with-outward": "control, outward cells",
                  "bounded": "control, bounded self-attention", "context": "control, prompts with context",
                  "context-sketch": "control, context and sketch ×2", "sketch": "control and sketch",
                  "sketch-only": "sketch, no regions", "collage": "control from a collage",
                  "collage-plain": "collage on a plain canvas, unguided",
                  "collage-plain-held-out": "collage on a plain canvas, unguided, seeds 9-16",
                  "collage-things": "collage of fitted things, unguided",
                  "collage-things-held-out": "collage of fitted things, unguided, seeds 9-16",
                  "collage-things-x2": "collage of fitted things at twice the size",
                  "collage-things-x2-held-out": "collage of fitted things at twice the size, seeds 9-16",
                  "with-held-out": "with control, seeds 9-16",
                  "context-sketch-held-out": "control, context and sketch ×2, seeds 9-16", "without": "without"}


def regional_section(regional: dict) -> tuple[str, list[str]]:
    layouts = regional["layouts"]
    conditions = ["real", "alone", *regional_conditions()]
    names = [REGIONAL_NAMES.get(c, c) for c in conditions]
    classes = all("classes" in r[c] for r in layouts.values() for c in conditions)  # claims runs scored before the class judge lack them
    tables = [("boxes showing their concept", lambda r: r["boxes"]), ("pictures with every concept", lambda r: r["all"])]
    if classes:
        tables.append(("boxes showing their concept's class, in any colour", lambda r: r["classes"]["boxes"]))
    text = []
    for title, rate in tables:
        rows = [(name, [rate(r[c]) for c in conditions]) for name, r in layouts.items()]
        mean = [float(np.mean([r[1][k] for r in rows])) for k in range(len(conditions))]
        text.append(f"{title}:\n\n" + markdown_table("layout", names, [*rows, ("mean", mean)], 2))
    pooled = {c: pooled_rates([r[c] for r in layouts.values()]) for c in conditions}
    kinds = {c: pooled_rates([r[c]["classes"] for r in layouts.values()]) for c in conditions} if classes else {}
    text.append("All layouts' pictures pooled, with 95 % intervals (pictures resampled within each layout):\n\n" +
                "\n".join(f"- {REGIONAL_NAMES.get(c, c)}: boxes {interval_text(p['boxes'])}, whole pictures "
                          f"{interval_text(p['all'])}" + (f"; the class in its box {interval_text(kinds[c]['boxes'])}"
                                                          if classes else "") for c, p in pooled.items()))
    if regional.get("in_place"):  # what the model does on its own at a box's size
        here = list(regional["in_place"].values())
        fit = pooled_rates(here)
        text[-1] += (f"\n- each concept in its place, no control (world-slot layouts only; their control: "
                     f"{interval_text(pooled_rates([layouts[n]['with'] for n in regional['in_place']])['boxes'])}): "
                     f"boxes {interval_text(fit['boxes'])}; the class in its box "
                     f"{interval_text(pooled_rates([r['classes'] for r in here])['boxes'])}")
    said = [f"regional control: each box shows its concept {interval_text(pooled['with']['boxes'])} of the time with "
            f"the reference's region control, {interval_text(pooled['without']['boxes'])} without; the same fused "
            f"model drawing each concept alone in a picture of its own: {interval_text(pooled['alone']['boxes'])} (the "
            f"judge reads {pooled['real']['boxes'][0]:.0%} on real pictures of the layouts); all concepts of a picture: "
            f"{interval_text(pooled['with']['all'])} with control, {interval_text(pooled['without']['all'])} without "
            f"(each alone: {pooled['alone']['all'][0]:.0%}, real: {pooled['real']['all'][0]:.0%})"]
    lines = []
    for option in REGIONAL_CONDITIONS:
        reference = "with-held-out" if option.endswith("-held-out") else "with"  # the same seeds as the option's
        if option == reference:
            continue
        rows_a, rows_b = [r[option] for r in layouts.values()], [r[reference] for r in layouts.values()]
        diff = paired_difference(rows_a, rows_b)
        kind = ""
        if classes:
            kind_diff = paired_difference([r["classes"] for r in rows_a], [r["classes"] for r in rows_b])
            kind = f"; the class in its box {signed_text(kind_diff['boxes'])}"
        lines.append(f"- {REGIONAL_NAMES.get(option, option)}: boxes {signed_text(diff['boxes'])}, whole pictures "
                     f"{signed_text(diff['all'])}{kind}")
        said.append(f"{REGIONAL_NAMES.get(option, option)} against the reference's control: boxes "
                    f"{signed_text(diff['boxes'])}, whole pictures {signed_text(diff['all'])}")
    text.append("Each option minus the reference's control (paired: the same layouts and seeds, pictures resampled "
                "within each layout; a difference whose interval holds 0 is a tie):\n\n" + "\n".join(lines))
    return "\n\n".join(text), said
