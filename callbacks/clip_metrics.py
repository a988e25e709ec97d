"""Scores ``test`` images with the paper's CLIP metrics and writes Table-1-shaped reports."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

from mos_lightning.data.evaluation import reference_images
from mos_lightning.io import atomic_path, write_json
from mos_lightning.models import all_gather_objects
from mos_lightning.metrics import (
    TEXT_PREFIX, CLIPFeatures, ImageAlignment, TextAlignment, image_alignment_scores, text_alignment_scores,
)

METRICS = {"text_alignment": "Text-alignment", "image_alignment": "Image-alignment"}
ALL = "all"


class CLIPMetrics(Callback):
    """Feeds every method's images of a ``test`` run to CLIP text/image alignment metrics (DDP-synced) and
    writes, into the task's ``output_dir``:

    - ``table.md`` / ``table.csv``: rows = methods, columns = concepts + mean, one block per metric (Table 1);
    - ``groups.md`` / ``groups.csv``: the same per prompt group (recontextualisation, restylisation, …);
    - ``scores.json``: every image's scores, prompt, seed and path.
    """

    def __init__(self, clip_model: str = "openai/clip-vit-base-patch32", batch_size: int = 32):
        """
        Args:
            clip_model: transformers CLIP model (local folder or hub id); the paper uses ViT-B/32.
            batch_size: Images per CLIP forward pass (reference images).
        """
        super().__init__()
        self.clip_model = clip_model
        self.batch_size = batch_size

    # ---------------------------------------------------------------- setup
    def on_test_start(self, trainer, pl_module) -> None:
        self.clip = CLIPFeatures(self.clip_model).to(pl_module.device)
        data = trainer.datamodule
        self.references = {}
        for spec in data.specs:
            from PIL import Image

            paths = reference_images(spec)
            feats = [self.clip.images([Image.open(p) for p in paths[i : i + self.batch_size]])
                     for i in range(0, len(paths), self.batch_size)]
            self.references[spec.name] = torch.cat(feats)
        concepts = [s.name for s in data.specs]
        groups = sorted({item.group for item in data.items})
        self.methods = [m.name for m in pl_module.methods]
        self.concepts, self.groups = concepts, groups
        keys = [(m, c, g) for m in self.methods for c in concepts for g in groups + [ALL]]
        self.metrics = torch.nn.ModuleDict({
            self._key(*k): torch.nn.ModuleDict({"text_alignment": TextAlignment(), "image_alignment": ImageAlignment()})
            for k in keys
        }).to(pl_module.device)
        self.rows: list[dict] = []

    @staticmethod
    def _key(method: str, concept: str, group: str) -> str:
        return f"{method}|{concept}|{group}".replace(".", "_")

    # -------------------------------------------------------------- scoring
    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if outputs is None:
            return
        items = outputs["items"]
        texts = self.clip.texts([TEXT_PREFIX + item["class_prompt"] for item in items])
        for method, images in outputs["images"].items():
            feats = self.clip.images(images)
            for k, item in enumerate(items):
                image, text = feats[k : k + 1], texts[k : k + 1]
                reference = self.references[item["concept"]]
                for group in (item["group"], ALL):
                    metrics = self.metrics[self._key(method, item["concept"], group)]
                    metrics["text_alignment"].update(image, text)
                    metrics["image_alignment"].update(image, reference)
                self.rows.append({
                    "method": method, **item,
                    "text_alignment": float(text_alignment_scores(image, text)[0]),
                    "image_alignment": float(image_alignment_scores(image, reference)[0]),
                    "path": str(pl_module.image_path(next(m for m in pl_module.methods if m.name == method), item)),
                })

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        results = {}
        for key in sorted(self.metrics):  # same order on every process: compute() is a collective
            results[key] = {name: float(metric.compute()) for name, metric in self.metrics[key].items()}
        rows = [r for part in all_gather_objects(self.rows) for r in part]
        for key, values in results.items():  # per concept to the logger; per group in groups.csv
            method, concept, group = key.split("|")
            if group == ALL:
                for name, value in values.items():
                    pl_module.log(f"test/{name}/{method}/{concept}", value, sync_dist=False, rank_zero_only=True)
        if trainer.is_global_zero:
            self.write(Path(pl_module.hparams.output_dir), results, rows)

    # --------------------------------------------------------------- output
    def value(self, results, metric: str, method: str, concept: str, group: str = ALL) -> float:
        return results[self._key(method, concept, group)][metric]

    def table(self, results, group: str = ALL) -> list[list]:
        """Rows ``[metric, method, *per concept, mean]``."""
        out = []
        for metric in METRICS:
            for method in self.methods:
                values = [self.value(results, metric, method, c, group) for c in self.concepts]
                out.append([metric, method, *values, sum(values) / len(values)])
        return out

    def write(self, folder: Path, results: dict, rows: list[dict]) -> None:
        header = ["metric", "method", *self.concepts, "mean"]
        write_csv(folder / "table.csv", header, self.table(results))
        write_text(folder / "table.md", markdown(self.table(results), self.concepts))
        group_rows = [[row[0], row[1], group, *row[2:]] for group in self.groups for row in self.table(results, group)]
        write_csv(folder / "groups.csv", ["metric", "method", "group", *self.concepts, "mean"], group_rows)
        write_text(folder / "groups.md", "\n".join(
            f"### {group}\n\n" + markdown(self.table(results, group), self.concepts) for group in self.groups))
        rows.sort(key=lambda r: (r["method"], r["concept"], r["prompt_index"], r["seed"]))
        write_json(folder / "scores.json", rows)
        print(markdown(self.table(results), self.concepts))


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
