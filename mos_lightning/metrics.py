"""The paper's CLIP metrics (supplementary §2.1) as torchmetrics ``Metric``s, plus CLIP feature extraction.

- Text alignment: ``2.5 · max(cos(image, "A photo depicts " + prompt), 0)`` per image, averaged — the
  CLIPScore toolkit's definition (per-sample clamp). torchmetrics' own ``CLIPScore`` scales by 100 and
  clamps the mean instead, so it does not give the paper's numbers.
- Image alignment: ``max(cos(generated, reference), 0)`` averaged over every (generated, reference) pair.

The metrics keep sum/count states that add across processes (``dist_reduce_fx="sum"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchmetrics import Metric

TEXT_PREFIX = "A photo depicts "
CLIPSCORE_WEIGHT = 2.5


def text_alignment_scores(image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """Per-image ``2.5 · max(cos, 0)`` of matching rows ``[N, D]``."""
    cos = F.cosine_similarity(image_features.double(), text_features.double(), dim=-1)
    return CLIPSCORE_WEIGHT * cos.clamp_min(0)


def image_alignment_scores(image_features: torch.Tensor, reference_features: torch.Tensor) -> torch.Tensor:
    """Per generated image, the mean over references of ``max(cos, 0)``: ``[N]`` from ``[N, D]`` and ``[R, D]``."""
    gen = F.normalize(image_features.double(), dim=-1)
    ref = F.normalize(reference_features.double(), dim=-1)
    return (gen @ ref.T).clamp_min(0).mean(-1)


class MeanScore(Metric):
    """Mean of per-sample scores with sum/count states (exact under DDP, whatever the shard sizes)."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, scores: torch.Tensor) -> None:
        self.total += scores.double().sum().to(self.total.device)
        self.count += scores.numel()

    def compute(self) -> torch.Tensor:
        return self.total / self.count.clamp_min(1)


class TextAlignment(MeanScore):
    """The paper's text alignment from CLIP image and text features (see module docstring)."""

    def update(self, image_features: torch.Tensor, text_features: torch.Tensor) -> None:  # type: ignore[override]
        super().update(text_alignment_scores(image_features, text_features))


class ImageAlignment(MeanScore):
    """The paper's image alignment from CLIP features of generated and reference images."""

    def update(self, image_features: torch.Tensor, reference_features: torch.Tensor) -> None:  # type: ignore[override]
        super().update(image_alignment_scores(image_features, reference_features))


class CLIPFeatures(torch.nn.Module):
    """Image and text embeddings of a transformers ``CLIPModel`` (local folder or hub id), with CLIP's
    own preprocessing (resize, center crop, normalise)."""

    def __init__(self, model: str = "openai/clip-vit-base-patch32"):
        super().__init__()
        from pathlib import Path

        from transformers import CLIPModel, CLIPProcessor

        local = Path(model).expanduser().exists()
        self.model = CLIPModel.from_pretrained(model, local_files_only=local).eval().requires_grad_(False)
        self.processor = CLIPProcessor.from_pretrained(model, local_files_only=local)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def images(self, images: Sequence[Image.Image | np.ndarray]) -> torch.Tensor:
        pil = [Image.fromarray(i) if isinstance(i, np.ndarray) else i.convert("RGB") for i in images]
        pixels = self.processor(images=pil, return_tensors="pt")["pixel_values"].to(self.device)
        return _embeds(self.model.get_image_features(pixel_values=pixels)).float()

    @torch.no_grad()
    def texts(self, texts: Sequence[str]) -> torch.Tensor:
        tokens = self.processor(text=list(texts), return_tensors="pt", padding=True, truncation=True)
        tokens = {k: v.to(self.device) for k, v in tokens.items()}
        return _embeds(self.model.get_text_features(**tokens)).float()


def _embeds(output) -> torch.Tensor:
    # transformers 5 may return a model output object instead of the bare projected tensor
    return output if isinstance(output, torch.Tensor) else output.pooler_output


ALL_GROUPS = "all"


@dataclass
class EvalResults:
    """An evaluation's scores: what :class:`~mos_lightning.tasks.EvalTask` hands to report writers
    (its ``evaluation_results()``), the same on every process."""

    folder: str  # where the run's images (and reports) live
    methods: list[str]
    concepts: list[str]
    groups: list[str]
    values: dict[tuple[str, str, str], dict[str, float]]  # (method, concept, group or "all") → metric → mean
    rows: list[dict]  # one per image: method, concept, prompt, seed, group, scores, path

    def value(self, metric: str, method: str, concept: str, group: str = ALL_GROUPS) -> float:
        return self.values[(method, concept, group)][metric]


class AlignmentTable(torch.nn.Module):
    """Text and image alignment for every (method, concept, prompt group) cell and every (method, concept)."""

    def __init__(self, methods: list[str], concepts: list[str], groups: list[str]):
        super().__init__()
        self.keys = [(m, c, g) for m in methods for c in concepts for g in [*groups, ALL_GROUPS]]
        self.cells = torch.nn.ModuleDict({
            self._name(k): torch.nn.ModuleDict({"text_alignment": TextAlignment(), "image_alignment": ImageAlignment()})
            for k in self.keys
        })

    @staticmethod
    def _name(key: tuple[str, str, str]) -> str:
        return "|".join(key).replace(".", "_")  # ModuleDict keys may not hold dots

    def update(self, method: str, concept: str, group: str, image: torch.Tensor, text: torch.Tensor,
               references: torch.Tensor) -> dict[str, float]:
        """Add one generated image (CLIP features ``[1, D]``); returns its own scores."""
        for cell in (group, ALL_GROUPS):
            metrics: Any = self.cells[self._name((method, concept, cell))]  # a ModuleDict of metrics
            metrics["text_alignment"].update(image, text)
            metrics["image_alignment"].update(image, references)
        return {"text_alignment": float(text_alignment_scores(image, text)[0]),
                "image_alignment": float(image_alignment_scores(image, references)[0])}

    def compute(self) -> dict[tuple[str, str, str], dict[str, float]]:
        """Every cell's means, summed over processes (a collective: call it on every process)."""
        return {k: {name: float(m.compute()) for name, m in self.cells[self._name(k)].items()} for k in self.keys}  # type: ignore[operator]
