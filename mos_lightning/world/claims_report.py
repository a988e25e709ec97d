"""The claims run's report: the three tables (single-concept, fusion, regional), plain statements of what agrees
with the paper, and two contact sheets (``figures/methods.png``, ``figures/regional.png``)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

from ..atomic import atomic_path, write_json
from ..images import make_grid
from .boxes import reading, signature
from .claims_regional import REGIONAL_NAMES, composed_images, regional_section
from .identity import bootstrap, difference, kept_above_bound, kept_of_own, mean_score, tie_or_order
from .markdown import interval_text, markdown_table

SINGLE = ("ed-lora", "lora", "p-plus", "bound")
FUSION_FIGURE = ("ed-lora", "fused-weak-default", "fused-weak-exact", "fused-weak-naive", "ed-lora-strong",
                 "fused-strong-default", "fused-strong-exact", "fused-strong-naive", "bound")


def readmarkdown_table(path: Path) -> dict[tuple[str, str], dict[str, float]]:
    """``(metric, method) → {concept: value, "mean": value}`` from the evaluation's ``table.csv``."""
    with path.open() as f:
        rows = list(csv.reader(f))
    header = rows[0]
    return {(r[0], r[1]): {k: float(v) for k, v in zip(header[2:], r[2:], strict=True)} for r in rows[1:]}


def single_section(table: dict, concepts: list[str]) -> tuple[str, list[str]]:
    text = [markdown_table("text alignment ↑", [*concepts, "mean"], [(m, [table["text_alignment", m][c] for c in
                                                              [*concepts, "mean"]]) for m in SINGLE]),
            markdown_table("image alignment ↑", [*concepts, "mean"], [(m, [table["image_alignment", m][c] for c in
                                                               [*concepts, "mean"]]) for m in SINGLE])]
    image = {m: table["image_alignment", m]["mean"] for m in SINGLE}
    said = [f"ED-LoRA's image alignment {image['ed-lora']:.3f} vs the class-word bound {image['bound']:.3f} "
            f"({'above' if image['ed-lora'] > image['bound'] else 'NOT above'} it, as the paper's Table 1 expects)",
            f"ED-LoRA vs LoRA (one shared embedding): {image['ed-lora']:.3f} vs {image['lora']:.3f}; "
            f"vs P+ (no LoRA): {image['p-plus']:.3f}"]
    return "\n\n".join(text), said


def _by_item(rows: list[dict], method: str, concept: str) -> list[dict]:
    return [r for r in rows if r["method"] == method and r["concept"] == concept]


def judged_items(rows: list[dict], method: str, concepts: list[str], signatures: dict) -> dict[str, dict[str, np.ndarray]]:
    """One method's items of an evaluation's ``scores.json``, per judge and concept (the items' order, the same for
    every method): ``clip`` and ``detector`` on one-thing prompts (the recontextualization group; NaN elsewhere),
    ``clip_two_things`` on the rest, ``text`` on all."""
    items = {c: _by_item(rows, method, c) for c in concepts}
    one = {c: [r["group"] == "recontextualization" for r in v] for c, v in items.items()}
    return {"clip": {c: np.array([r["image_alignment"] if o else np.nan for r, o in zip(v, one[c], strict=True)])
                     for c, v in items.items()},
            "clip_two_things": {c: np.array([np.nan if o else r["image_alignment"]
                                             for r, o in zip(v, one[c], strict=True)]) for c, v in items.items()},
            "text": {c: np.array([r["text_alignment"] for r in v]) for c, v in items.items()},
            "detector": {c: np.array([float(reading(Image.open(r["path"]).convert("RGB")) in signatures[c])
                                      if o else np.nan for r, o in zip(v, one[c], strict=True)])
                         for c, v in items.items()}}


def fusion_scores(out: Path, concepts: list[str], clip: str) -> dict:
    """(b) from the held-out evaluation (``eval-held-out/scores.json``, items in the same order for every method):
    per regime and method, identity kept above the class-word bound by the world CLIP and by the exact detector, with
    paired bootstrap intervals, the difference to the naive merge, text alignment, and what each fusion's report said
    (its held-out ``net`` and the old in-sample error). Both judges read identity on the prompts with one thing (the
    recontextualization group): on two-thing prompts the concepts' own models are not above the class-word bound
    (their pictures' image alignment is diluted by the other thing), so "kept above the bound" is undefined there;
    their mean image alignment is reported on its own (``clip_two_things``)."""
    from .claims import REGIMES, SOLVERS

    rows = json.loads((out / "eval-held-out" / "scores.json").read_text())
    signatures = {c: signature(c) for c in concepts}

    def arrays(method: str) -> dict[str, dict[str, np.ndarray]]:
        return judged_items(rows, method, concepts, signatures)

    bound = arrays("bound")
    judges = ("clip", "detector", "text", "clip_two_things")
    result: dict = {"bound": {j: mean_score(bound[j]) for j in judges}, "regimes": {}}
    for regime, own_method in REGIMES.items():
        own = arrays(own_method)
        methods = {s: arrays(f"fused-{regime}-{s}") for s in SOLVERS}
        table = {"own": {j: mean_score(own[j]) for j in judges}}
        for solver, scores in methods.items():
            report = json.loads((out / "fused" / regime / solver / "fusion_report.json").read_text())
            row: dict = {j: mean_score(scores[j]) for j in judges}
            for judge in ("clip", "detector"):
                row[f"kept_{judge}"] = bootstrap(kept_above_bound, scores[judge], own[judge], bound[judge])
                if solver != "naive":
                    value, low, high = difference(kept_above_bound, (scores[judge], own[judge], bound[judge]),
                                                  (methods["naive"][judge], own[judge], bound[judge]))
                    row[f"vs_naive_{judge}"] = (value, low, high, tie_or_order(low, high))
            row["kept_of_own_clip"] = kept_of_own(scores["clip"], own["clip"])
            row["report_net"] = float(np.mean([report["fidelity"][c]["held_out"]["fused"]["net"] for c in concepts]))
            row["report_in_sample"] = float(np.mean([report["fidelity"][c]["unet"]["fused"] for c in concepts]))
            row["base_drift"] = report["base_preservation"]["fused"]["unet"]  # vs the base, prompts without concepts
            row["fusion_s"] = report["timing"]["total_s"]
            table[solver] = row
        result["regimes"][regime] = table
    fusions = [(r, s) for r in REGIMES for s in SOLVERS]
    identity = [min(result["regimes"][r][s]["kept_clip"][0], result["regimes"][r][s]["kept_detector"][0])
                for r, s in fusions]
    result["report_ranking"] = {
        "net": spearman([result["regimes"][r][s]["report_net"] for r, s in fusions], identity),
        "in_sample": spearman([-result["regimes"][r][s]["report_in_sample"] for r, s in fusions], identity)}
    return result


def spearman(a, b) -> float:
    """Rank correlation (ties broken by order)."""
    rank = lambda v: np.argsort(np.argsort(np.asarray(v, float))).astype(float)  # noqa: E731
    return float(np.corrcoef(rank(a), rank(b))[0, 1])


def fusion_section(fusion: dict, concepts: list[str]) -> tuple[str, list[str]]:
    from .claims import REGIMES, SOLVERS

    header = ["CLIP image alignment", "kept above bound (CLIP)", "vs naive (CLIP)", "detector hits",
              "kept above bound (detector)", "vs naive (detector)", "text alignment", "CLIP, two-thing prompts",
              "drift from base", "report: net", "fusion s"]
    text, said = [], []
    for regime, table in fusion["regimes"].items():
        lines = [f"**{regime} LoRAs** (`{REGIMES[regime]}`) — own models: CLIP {table['own']['clip']:.3f}, detector "
                 f"{table['own']['detector']:.0%}, text {table['own']['text']:.3f}; class-word bound: CLIP "
                 f"{fusion['bound']['clip']:.3f}, detector {fusion['bound']['detector']:.0%}, text "
                 f"{fusion['bound']['text']:.3f}; on two-thing prompts CLIP own {table['own']['clip_two_things']:.3f}, "
                 f"bound {fusion['bound']['clip_two_things']:.3f}", "",
                 "| fusion | " + " | ".join(header) + " |", "| --- |" + " ---: |" * len(header)]
        for solver in SOLVERS:
            r = table[solver]
            cells = [f"{r['clip']:.3f}", interval_text(r["kept_clip"]), interval_text(r["vs_naive_clip"]) if "vs_naive_clip" in r
                     else "", f"{r['detector']:.0%}", interval_text(r["kept_detector"]),
                     interval_text(r["vs_naive_detector"]) if "vs_naive_detector" in r else "", f"{r['text']:.3f}",
                     f"{r['clip_two_things']:.3f}",
                     f"{r['base_drift']:.3f}", f"{r['report_net']:.3f}", f"{r['fusion_s']:.0f}"]
            lines.append(f"| {solver} | " + " | ".join(cells) + " |")
        text.append("\n".join(lines))
        d, n = table["default"], table["naive"]
        said.append(f"{regime} LoRAs, {len(concepts)} concepts: the default fusion keeps {d['kept_clip'][0]:.0%} (CLIP) "
                    f"/ {d['kept_detector'][0]:.0%} (detector) of the identity above the bound on held-out prompts, the "
                    f"naive merge {n['kept_clip'][0]:.0%} / {n['kept_detector'][0]:.0%} (default vs naive: "
                    f"{d['vs_naive_clip'][3]} by CLIP, {d['vs_naive_detector'][3]} by the detector)")
    ranking = fusion["report_ranking"]
    said.append(f"the report's held-out net ranks the {len(fusion['regimes']) * len(SOLVERS)} fusions by identity with "
                f"Spearman {ranking['net']:+.2f}; the old in-sample error with {ranking['in_sample']:+.2f}")
    return "\n\n".join(text), said


def save_enlarged(grid: np.ndarray, path: Path, factor: int = 2) -> None:
    """64 px pictures are small on a page: twice the size, pixels kept sharp."""
    image = Image.fromarray(grid)
    with atomic_path(path) as tmp:
        image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST).save(tmp, format="PNG")


def _row(out: Path, folder: str, concept: str, methods) -> list[np.ndarray]:
    """A training view of ``concept``, then each method's first picture (first prompt, first seed) in ``folder``."""
    cells = [np.asarray(Image.open(out / "concepts" / concept / "0.png").convert("RGB"))]
    for method in methods:
        found = sorted((out / folder / "images" / method / concept).glob("*/seed*.png"))
        cells.append(np.asarray(Image.open(found[0]).convert("RGB")) if found else np.zeros_like(cells[0]))
    return cells


def contact_sheets(out: Path, concepts: list[str], layouts: int) -> list[str]:
    """``figures/methods.png`` (single-concept methods), ``figures/fusion.png`` (held-out prompt, own models and
    fusions of both LoRA strengths): per concept a row; ``figures/regional.png``: per layout, two seeds with region
    control, with control and the sketch (the paper's setting), from a collage of fitted things at twice the size (the
    best measured), and without."""
    figures = out / "figures"
    figures.mkdir(exist_ok=True)
    for name, folder, methods in (("methods", "eval", SINGLE), ("fusion", "eval-held-out", FUSION_FIGURE)):
        cells = [cell for concept in concepts for cell in _row(out, folder, concept, methods)]
        save_enlarged(make_grid(cells, len(methods) + 1), figures / f"{name}.png")
    regional = []
    shown = [c for c in ("with", "sketch", "collage-things-x2", "without") if (out / "regional" / c).is_dir()]
    for index in range(layouts):
        for condition in shown:
            regional += [np.asarray(Image.open(p).convert("RGB")) for p in composed_images(out, condition, index)[:2]]
    if regional:
        save_enlarged(make_grid(regional, 2 * len(shown)), figures / "regional.png")
    return [f"columns: a training view, {', '.join(SINGLE)}", f"columns: a training view, {', '.join(FUSION_FIGURE)}",
            "per layout (a row): two seeds each " + ", ".join(REGIONAL_NAMES[c] for c in shown)]


def write_report(out: Path, results: dict) -> Path:
    table = readmarkdown_table(out / "eval" / "table.csv")
    concepts = results["concepts"]
    single, said_a = single_section(table, concepts)
    fusion, said_b = fusion_section(results["fusion"], concepts)
    regional, said_c = regional_section(results["regional"])
    notes = contact_sheets(out, concepts, len(results["regional"]["layouts"]))
    results["statements"] = [*said_a, *said_b, *said_c]
    write_json(out / "claims.json", results)
    text = "\n\n".join([
        "# The paper's claims in the miniature world", "Made by `python -m mos_lightning.world.claims`; "
        f"concepts {', '.join(concepts)}; seeds {results['seeds']}; judged by `{Path(results['clip']).name}` CLIP.",
        "## What the numbers say", "\n".join(f"- {s}" for s in results["statements"]),
        "## (a) single concept: ED-LoRA vs LoRA vs P+, with the class-word bound", single,
        f"## (b) fusion of {len(concepts)} concepts: identity on held-out prompts and seeds {results['held_out_seeds']}",
        fusion, "## (c) regional composition: share of boxes showing their concept (exact detector)", regional,
        "## Figures", f"![methods](figures/methods.png)\n\n{notes[0]}", f"![fusion](figures/fusion.png)\n\n{notes[1]}",
        f"![regional](figures/regional.png)\n\n{notes[2]}",
    ])
    (out / "claims.md").write_text(text + "\n")
    return out / "claims.md"
