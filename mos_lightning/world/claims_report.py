"""The claims run's report: the three tables (single-concept, fusion, regional), plain statements of what agrees
with the paper, and two contact sheets (``figures/methods.png``, ``figures/regional.png``)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

from ..atomic import write_json
from ..images import make_grid
from .boxes import Layout, box_hits, real_pictures, signature, summarise

SINGLE = ("ed-lora", "lora", "p-plus", "bound")
FUSED = ("ed-lora", "fused-closed-form", "fused-naive", "fused-l-bfgs")


def composed_images(out: Path, condition: str, index: int) -> list[Path]:
    """The pictures of layout ``index`` made with (``with``) or without region control (not the box overlays)."""
    return sorted(p for p in (out / "regional" / condition).glob(f"{index:04d}-*/seed*.png")
                  if not p.name.endswith(".boxes.png"))


def regional_scores(out: Path, layouts: list[Layout], concepts: list[str], real: int = 16) -> dict:
    """Per layout: box and whole-picture rates with region control, without, and on real pictures (the ceiling)."""
    signatures = {c: signature(c) for c in concepts}
    scores = {"signatures": {c: sorted(map(list, s)) for c, s in signatures.items()}, "layouts": {}}
    for index, layout in enumerate(layouts):
        row = {"real": summarise(box_hits(real_pictures(layout, real), layout, signatures))}
        for condition in ("with", "without"):
            images = [Image.open(p).convert("RGB") for p in composed_images(out, condition, index)]
            row[condition] = {**summarise(box_hits(images, layout, signatures)), "images": len(images)}
        scores["layouts"][layout.name] = row
    return scores


def read_table(path: Path) -> dict[tuple[str, str], dict[str, float]]:
    """``(metric, method) → {concept: value, "mean": value}`` from the evaluation's ``table.csv``."""
    with path.open() as f:
        rows = list(csv.reader(f))
    header = rows[0]
    return {(r[0], r[1]): {k: float(v) for k, v in zip(header[2:], r[2:])} for r in rows[1:]}


def _table(title: str, columns: list[str], rows: list[tuple[str, list[float]]], digits: int = 3) -> str:
    lines = [f"| {title} | " + " | ".join(columns) + " |", "| --- |" + " ---: |" * len(columns)]
    lines += [f"| {name} | " + " | ".join(f"{v:.{digits}f}" for v in values) + " |" for name, values in rows]
    return "\n".join(lines)


def single_section(table: dict, concepts: list[str]) -> tuple[str, list[str]]:
    text = [_table("text alignment ↑", [*concepts, "mean"], [(m, [table["text_alignment", m][c] for c in
                                                              [*concepts, "mean"]]) for m in SINGLE]),
            _table("image alignment ↑", [*concepts, "mean"], [(m, [table["image_alignment", m][c] for c in
                                                               [*concepts, "mean"]]) for m in SINGLE])]
    image = {m: table["image_alignment", m]["mean"] for m in SINGLE}
    said = [f"ED-LoRA's image alignment {image['ed-lora']:.3f} vs the class-word bound {image['bound']:.3f} "
            f"({'above' if image['ed-lora'] > image['bound'] else 'NOT above'} it, as the paper's Table 1 expects)",
            f"ED-LoRA vs LoRA (one shared embedding): {image['ed-lora']:.3f} vs {image['lora']:.3f}; "
            f"vs P+ (no LoRA): {image['p-plus']:.3f}"]
    return "\n\n".join(text), said


def fidelity_rows(out: Path, concepts: list[str]) -> list[tuple[str, list[float]]]:
    """Per solver, from its ``fusion_report.json``: the fused model's relative error against each concept's own
    model (UNet noise predictions along the concept's trajectory; text-encoder outputs), mean over concepts,
    against the base on prompts without concepts, and the fusion's seconds."""
    rows = []
    for solver in FUSED[1:]:
        report = json.loads((out / "fused" / solver.removeprefix("fused-") / "fusion_report.json").read_text())
        which = "naive" if solver == "fused-naive" else "fused"
        rows.append((solver, [float(np.mean([report["fidelity"][c]["unet"][which] for c in concepts])),
                              float(np.mean([report["fidelity"][c]["text_encoder"][which] for c in concepts])),
                              report["base_preservation"][which]["unet"], report["timing"]["total_s"]]))
    return rows


def fusion_section(table: dict, concepts: list[str], out: Path) -> tuple[str, list[str]]:
    rows = [(m, [table["image_alignment", m][c] for c in [*concepts, "mean"]]) for m in FUSED]
    single = table["image_alignment", "ed-lora"]
    kept = {m: np.mean([table["image_alignment", m][c] / single[c] for c in concepts]) for m in FUSED[1:]}
    fidelity = fidelity_rows(out, concepts)
    text_rows = [(m, [table["text_alignment", m][c] for c in [*concepts, "mean"]]) for m in FUSED]
    text = "\n\n".join([
        _table("image alignment ↑", [*concepts, "mean"], rows),
        _table("text alignment ↑", [*concepts, "mean"], text_rows),
        _table("kept (fused ÷ own model, mean over concepts)", ["kept"], [(m, [v]) for m, v in kept.items()]),
        _table("relative error ↓ (fusion_report.json)", ["UNet vs own models", "text encoder vs own models",
                                                         "UNet vs base, no concept", "fusion s"], fidelity)])
    error = {name: values[0] for name, values in fidelity}
    said = [f"fusion of {len(concepts)} concepts keeps {kept['fused-closed-form']:.0%} of the single-concept image "
            f"alignment with our closed form, {kept['fused-l-bfgs']:.0%} with L-BFGS and {kept['fused-naive']:.0%} "
            f"with the naive merge; the fused UNet's error against each concept's own model is "
            f"{error['fused-closed-form']:.3f} (closed form), {error['fused-l-bfgs']:.3f} (L-BFGS), "
            f"{error['fused-naive']:.3f} (naive)"]
    return text, said


def regional_section(regional: dict) -> tuple[str, list[str]]:
    rows = [(name, [r["real"]["boxes"], r["with"]["boxes"], r["without"]["boxes"], r["real"]["all"], r["with"]["all"],
                    r["without"]["all"]]) for name, r in regional["layouts"].items()]
    mean = [float(np.mean([r[1][k] for r in rows])) for k in range(6)]
    text = _table("layout", ["boxes: real", "boxes: with control", "boxes: without", "all boxes: real",
                             "all: with control", "all: without"], [*rows, ("mean", mean)], 2)
    said = [f"regional control: each box shows its concept {mean[1]:.0%} of the time with region control, "
            f"{mean[2]:.0%} without (the judge reads {mean[0]:.0%} on real pictures of the same layouts)"]
    return text, said


def save_enlarged(grid: np.ndarray, path: Path, factor: int = 2) -> None:
    """64 px pictures are small on a page: twice the size, pixels kept sharp."""
    image = Image.fromarray(grid)
    image.resize((image.width * factor, image.height * factor), Image.NEAREST).save(path)


def contact_sheets(out: Path, concepts: list[str], layouts: int) -> list[str]:
    """``figures/methods.png``: per concept a row — a training view, then one sample of every method (first prompt,
    first seed); ``figures/regional.png``: per layout, the first seed with and without region control."""
    figures = out / "figures"
    figures.mkdir(exist_ok=True)
    methods = [*SINGLE[:3], *FUSED[1:], "bound"]
    cells = []
    for concept in concepts:
        cells.append(np.asarray(Image.open(out / "concepts" / concept / "0.png").convert("RGB")))
        for method in methods:
            found = sorted((out / "eval" / "images" / method / concept).glob("*/seed*.png"))
            cells.append(np.asarray(Image.open(found[0]).convert("RGB")) if found else np.zeros_like(cells[-1]))
    save_enlarged(make_grid(cells, len(methods) + 1), figures / "methods.png")
    regional = []
    for index in range(layouts):
        for condition in ("with", "without"):
            regional += [np.asarray(Image.open(p).convert("RGB")) for p in composed_images(out, condition, index)[:2]]
    if regional:
        save_enlarged(make_grid(regional, 4), figures / "regional.png")
    return [f"columns: a training view, {', '.join(methods)}", "per layout: two seeds with control, two without"]


def write_report(out: Path, results: dict) -> Path:
    table = read_table(out / "eval" / "table.csv")
    concepts = results["concepts"]
    single, said_a = single_section(table, concepts)
    fusion, said_b = fusion_section(table, concepts, out)
    regional, said_c = regional_section(results["regional"])
    notes = contact_sheets(out, concepts, len(results["regional"]["layouts"]))
    results["statements"] = [*said_a, *said_b, *said_c]
    write_json(out / "claims.json", results)
    text = "\n\n".join([
        "# The paper's claims in the miniature world", "Made by `python -m mos_lightning.world.claims`; "
        f"concepts {', '.join(concepts)}; seeds {results['seeds']}; judged by `{Path(results['clip']).name}` CLIP.",
        "## What the numbers say", "\n".join(f"- {s}" for s in results["statements"]),
        "## (a) single concept: ED-LoRA vs LoRA vs P+, with the class-word bound", single,
        f"## (b) fusion of {len(concepts)} concepts: image alignment of the fused model against each concept's own",
        fusion, "## (c) regional composition: share of boxes showing their concept (exact detector)", regional,
        "## Figures", f"![methods](figures/methods.png)\n\n{notes[0]}", f"![regional](figures/regional.png)\n\n{notes[1]}",
    ])
    (out / "claims.md").write_text(text + "\n")
    return out / "claims.md"
