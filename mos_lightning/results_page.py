"""One page to look at: ``index.html`` beside a run's results, built from the files the run wrote.

It finds, anywhere under the folder: the sample grids logged while tuning (``samples/step*.png``: LoRA scales
side by side), the grids of ``predict`` runs (``grids/*.png``), regional images with their boxes
(``*.boxes.png``), fusion reports (``fusion_report.json``: per-concept fidelity as a chart, fused against the
naive merge) and evaluation tables (``table.csv``). Static HTML with relative links: open it from disk, copy
the folder anywhere. Written after the demo, by ``EvalReport`` and by fusion, or by hand::

    python -m mos_lightning.results_page outputs/demo
"""

from __future__ import annotations

import argparse
import csv
import html
import json
from pathlib import Path
from urllib.parse import quote

from PIL import Image

from .atomic import atomic_path

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1400px; }}
h2 {{ border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }}
figure {{ display: inline-block; margin: .5em 1em .5em 0; vertical-align: top; }}
figure img {{ image-rendering: pixelated; min-height: 128px; border: 1px solid #ddd; }}
figcaption {{ font-size: .85em; color: #555; max-width: 520px; }}
table {{ border-collapse: collapse; margin: .5em 0 1em; }}
td, th {{ border: 1px solid #ccc; padding: .25em .6em; text-align: right; }}
th:first-child, td:first-child, th:nth-child(2), td:nth-child(2) {{ text-align: left; }}
.note {{ color: #666; font-size: .9em; }}
</style></head>
<body>
<h1>{title}</h1>
<p class="note">Made from the files under this folder by <code>python -m mos_lightning.results_page</code>.</p>
{body}
<script>
// for automated checks: how many images loaded
window.addEventListener("load", () => {{
  const images = [...document.images];
  document.body.dataset.images = images.filter(i => i.complete && i.naturalWidth > 0).length + "/" + images.length;
}});
</script>
</body></html>
"""


def _link(path: Path, root: Path) -> str:
    return quote(path.relative_to(root).as_posix())


def _figure(path: Path, root: Path, caption: str, scale: int = 1) -> str:
    width = Image.open(path).width * scale
    return (f'<figure><img src="{_link(path, root)}" width="{width}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _scale(path: Path) -> int:
    """Small images (the tiny demo model's 64 px) are shown enlarged."""
    return min(4, max(1, 256 // Image.open(path).height))


def _tuning_section(root: Path) -> str:
    grids = sorted(root.rglob("samples/step*.png"))
    latest: dict[Path, Path] = {}
    for path in grids:  # the last grid of each run
        latest[path.parent] = max(latest.get(path.parent, path), path)
    if not latest:
        return ""
    parts = ["<h2>While tuning: sample grids</h2>",
             '<p class="note">Rows: prompt × seed; columns: LoRA scale (0 = the embeddings alone).</p>']
    for folder, path in sorted(latest.items()):
        caption = Image.open(path).text.get("caption", "")  # type: ignore[attr-defined]  # a PNG's text chunks
        parts.append(_figure(path, root, f"{folder.relative_to(root).as_posix()} — {path.stem}: {caption}",
                             _scale(path)))
    return "\n".join(parts)


def _samples_section(root: Path) -> str:
    by_run: dict[Path, list[Path]] = {}
    for path in sorted(root.rglob("grids/*.png")):
        by_run.setdefault(path.parent.parent, []).append(path)
    if not by_run:
        return ""
    parts = ["<h2>Samples</h2>"]
    for run, paths in sorted(by_run.items()):
        parts.append(f"<h3>{html.escape(run.relative_to(root).as_posix() or '.')}</h3>")
        parts += [_figure(p, root, p.stem.split("-", 1)[-1].replace("-", " "), _scale(p)) for p in paths]
    return "\n".join(parts)


def _regional_section(root: Path) -> str:
    boxes = sorted(root.rglob("*.boxes.png"))
    if not boxes:
        return ""
    parts = ["<h2>Regional sampling</h2>", '<p class="note">Each image beside its regions.</p>']
    for path in boxes:
        image = path.with_name(path.name.replace(".boxes.png", ".png"))
        if not image.is_file():
            continue
        text = Image.open(image).text  # type: ignore[attr-defined]  # a PNG's text chunks
        caption = f"{text.get('context_prompt', '')} — {text.get('regions', '')}"
        parts.append(f"<div>{_figure(image, root, caption, _scale(image))}{_figure(path, root, 'regions', _scale(path))}"
                     "</div>")
    return "\n".join(parts)


def _bars(rows: list[tuple[str, float, float]]) -> str:
    """Horizontal bars, fused (blue) against the naive merge (grey), for (label, fused, naive) rows."""
    top = max([abs(v) for _, a, b in rows for v in (a, b)] + [1e-9])
    height, width, left = 22 * len(rows) * 2 + 30, 640, 220
    items = []
    for k, (label, fused, naive) in enumerate(rows):
        y = 10 + 44 * k
        items.append(f'<text x="0" y="{y + 14}" font-size="12">{html.escape(label)}</text>')
        for j, (value, colour) in enumerate(((fused, "#3b6fd8"), (naive, "#aaa"))):
            w = (width - left - 80) * max(value, 0.0) / top  # a negative score draws no bar, its number shows
            items.append(f'<rect x="{left}" y="{y + 20 * j}" width="{w:.1f}" height="16" fill="{colour}"/>')
            items.append(f'<text x="{left + w + 4:.1f}" y="{y + 20 * j + 12}" font-size="11">{value:.4f}</text>')
    legend = (f'<text x="{left}" y="{height - 4}" font-size="11" fill="#3b6fd8">fused</text>'
              f'<text x="{left + 50}" y="{height - 4}" font-size="11" fill="#777">naive merge</text>')
    return f'<svg width="{width}" height="{height}" role="img">{"".join(items)}{legend}</svg>'


def _fusion_section(root: Path) -> str:
    reports = [p for p in sorted(root.rglob("fusion_report.json")) if p.parent.name != "model"]
    if not reports:
        return ""
    parts = ["<h2>Fusion</h2>"]
    for path in reports:
        report = json.loads(path.read_text())
        solver = report.get("solver", {})
        solver = solver.get("class_path", solver) if isinstance(solver, dict) else solver
        parts.append(f"<h3>{html.escape(path.parent.relative_to(root).as_posix() or '.')} "
                     f"({len(report.get('concepts', []))} concepts, {html.escape(str(solver))})</h3>")
        fidelity = report.get("fidelity", {})
        held_out = [(name, f["held_out"]["fused"]["net"], f["held_out"]["naive"]["net"]) for name, f in fidelity.items()
                    if "held_out" in f]
        if held_out:  # the number that tracks identity: lead with it
            parts += ['<p class="note">Identity on held-out prompts and seeds, sampled with guidance as you sample '
                      "(higher is better): the share of each concept's LoRA effect on its pictures that the model "
                      "reproduces, less half of what it adds besides (1 = the concept's own model; 0 = as if its LoRA "
                      "were dropped), beside the naive merge of the same ED-LoRAs.</p>", _bars(held_out)]
        rows = [(f"{name} · {part}", f[part]["fused"], f[part]["naive"])
                for name, f in fidelity.items() for part in ("text_encoder", "unet")]
        base = report.get("base_preservation")
        if base:
            rows += [(f"base (no concept) · {part}", base["fused"][part], base["naive"][part])
                     for part in ("text_encoder", "unet")]
        parts += ['<p class="note">Diagnostics: relative error against each concept\'s own model on the statistics\' '
                  "own prompts and seeds, without guidance (lower is better), and against the base on prompts "
                  "without concepts.</p>", _bars(rows)]
    return "\n".join(parts)


def _evaluation_section(root: Path) -> str:
    tables = sorted(root.rglob("table.csv"))
    if not tables:
        return ""
    parts = ["<h2>Evaluation (Table 1)</h2>"]
    for path in tables:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        if not rows:
            continue
        head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows[1:])
        parts.append(f"<h3>{html.escape(path.parent.relative_to(root).as_posix() or '.')}</h3>"
                     f"<table><tr>{head}</tr>{body}</table>")
    return "\n".join(parts)


def write_results_page(folder: str | Path, title: str | None = None) -> Path:
    """Write ``<folder>/index.html`` from the results under ``folder``; returns its path."""
    root = Path(folder)
    sections = [s for s in (_tuning_section(root), _samples_section(root), _regional_section(root),
                            _fusion_section(root), _evaluation_section(root)) if s]
    body = "\n".join(sections) or '<p class="note">No results found under this folder yet.</p>'
    path = root / "index.html"
    with atomic_path(path) as tmp:
        tmp.write_text(PAGE.format(title=html.escape(title or f"mos-lightning results: {root.name}"), body=body))
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write index.html beside a run's results.")
    parser.add_argument("folder", help="a results folder, e.g. outputs/demo")
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    print(f"results page: {write_results_page(args.folder, args.title)}")


if __name__ == "__main__":
    main()
