"""Writes an evaluation's scores as Table-1-shaped reports (the scores come from ``EvalTask``)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from lightning.pytorch.callbacks import Callback

from mos_lightning.atomic import atomic_path, write_json
from mos_lightning.metrics import ALL_GROUPS, EvalResults
from mos_lightning.results_page import write_results_page

METRICS = {"text_alignment": "Text-alignment", "image_alignment": "Image-alignment"}


class EvalReport(Callback):
    """After a ``test`` run, writes the task's :class:`~mos_lightning.metrics.EvalResults` (from its
    ``evaluation_results()``) into ``output_dir`` (default: the evaluation's own folder), on rank 0:

    - ``table.md`` / ``table.csv``: rows = methods, columns = concepts + mean, one block per metric (Table 1);
    - ``groups.md`` / ``groups.csv``: the same per prompt group (recontextualisation, restylisation, …);
    - ``scores.json``: every image's scores, prompt, seed and path.
    """

    def __init__(self, output_dir: str | None = None, print_table: bool = True):
        """
        Args:
            output_dir: Where the reports go (default: the evaluation's ``output_dir``).
            print_table: Also print the Table-1 block to the console.
        """
        super().__init__()
        self.output_dir = output_dir
        self.print_table = print_table

    def on_test_end(self, trainer, pl_module) -> None:
        if not hasattr(pl_module, "evaluation_results"):
            raise TypeError(f"EvalReport needs a task with evaluation_results(); {type(pl_module).__name__} has none")
        if trainer.is_global_zero:
            self.write(Path(self.output_dir or pl_module.evaluation_results().folder), pl_module.evaluation_results())

    def write(self, folder: Path, results: EvalResults) -> None:
        header = ["metric", "method", *results.concepts, "mean"]
        write_csv(folder / "table.csv", header, table(results))
        write_text(folder / "table.md", markdown(table(results), results.concepts))
        group_rows = [[row[0], row[1], group, *row[2:]] for group in results.groups for row in table(results, group)]
        write_csv(folder / "groups.csv", ["metric", "method", "group", *results.concepts, "mean"], group_rows)
        write_text(folder / "groups.md", "\n".join(
            f"### {group}\n\n" + markdown(table(results, group), results.concepts) for group in results.groups))
        write_json(folder / "scores.json", results.rows)
        write_results_page(folder)  # index.html: the tables (and any images) on one page
        if self.print_table:
            print(markdown(table(results), results.concepts))


def table(results: EvalResults, group: str = ALL_GROUPS) -> list[list]:
    """Rows ``[metric, method, *per concept, mean]``."""
    out = []
    for metric in METRICS:
        for method in results.methods:
            values = [results.value(metric, method, c, group) for c in results.concepts]
            out.append([metric, method, *values, sum(values) / len(values)])
    return out


def markdown(table: list[list], concepts: list[str]) -> str:
    """One Markdown table per metric, shaped like the paper's Table 1."""
    blocks = []
    for metric, title in METRICS.items():
        lines = [f"| {title} | " + " | ".join(concepts) + " | mean |", "| --- |" + " --- |" * (len(concepts) + 1)]
        for row in (r for r in table if r[0] == metric):
            lines.append(f"| {row[1]} | " + " | ".join(f"{v:.3f}" for v in row[2:]) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows([[f"{v:.6f}" if isinstance(v, float) else v for v in row] for row in rows])
    write_text(path, buffer.getvalue())


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
