"""Identity, judged two ways, with intervals: how much of a concept a generated picture shows.

- **CLIP**: the world CLIP's image alignment (the paper's metric: mean ``max(cos, 0)`` against the concept's views).
- **Detector**: the world's exact detector reads the picture's thing (class, colour); a hit when the reading is in
  the concept's *signature* (:func:`mos_lightning.world.boxes.signature`: what it reads on real pictures of the
  concept). Exact, but only for single-thing prompts.

Identity of a method is stated as **kept above the bound**: ``(method − bound) / (own − bound)``, where *own* is each
concept's own model and *bound* the base with the class word (the paper's lower bound), pooled over concepts (sums,
not a mean of ratios: a concept whose own model barely beats the bound would make a ratio explode). Intervals are
paired bootstrap intervals: (prompt, seed) items are resampled per concept, the same items for every method.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .boxes import reading, signature

JUDGES = ("clip", "detector")


@dataclass
class Scores:
    """Per-picture scores of one method, keyed by concept: arrays aligned with the concept's items."""

    clip: dict[str, np.ndarray] = field(default_factory=dict)  # image alignment
    detector: dict[str, np.ndarray] = field(default_factory=dict)  # 1.0 = the concept's signature read, else 0.0
    text: dict[str, np.ndarray] = field(default_factory=dict)  # text alignment (CLIPScore × 2.5)

    def judge(self, name: str) -> dict[str, np.ndarray]:
        return {"clip": self.clip, "detector": self.detector, "text": self.text}[name]


class IdentityJudge:
    """Scores pictures of world concepts: CLIP image and text alignment, and the detector's signature hit."""

    def __init__(self, clip_model: str, references: dict[str, Sequence], kinds: dict[str, str] | None = None):
        """``references``: concept → its real views (PIL images or uint8 arrays), the image-alignment targets;
        ``kinds``: concept → the world concept it is (default: itself; a concept tuned twice under two names)."""
        from ..metrics import CLIPFeatures

        self.clip = CLIPFeatures(clip_model)
        self.references = {c: self.clip.images(list(views)) for c, views in references.items()}
        self.signatures = {c: signature((kinds or {}).get(c, c)) for c in references}

    @torch.no_grad()
    def score(self, concept: str, images: Sequence[np.ndarray], texts: Sequence[str],
              single: Sequence[bool] | None = None) -> dict[str, np.ndarray]:
        """Per picture: ``clip`` (image alignment), ``text`` (text alignment against ``texts``, the prompts in words)
        and ``detector`` (signature hit; NaN for pictures whose prompt asks for more than one thing)."""
        from ..metrics import TEXT_PREFIX, image_alignment_scores, text_alignment_scores

        features = self.clip.images(list(images))
        text_features = self.clip.texts([TEXT_PREFIX + t for t in texts])
        single = [True] * len(images) if single is None else list(single)
        hits = [float(reading(image) in self.signatures[concept]) if alone else float("nan")
                for image, alone in zip(images, single, strict=True)]
        return {"clip": image_alignment_scores(features, self.references[concept]).numpy(),
                "text": text_alignment_scores(features, text_features).numpy(),
                "detector": np.array(hits)}


def kept_above_bound(method: dict[str, np.ndarray], own: dict[str, np.ndarray], bound: dict[str, np.ndarray]) -> float:
    """Σ_c (mean method_c − mean bound_c) / Σ_c (mean own_c − mean bound_c), NaN items (no reading) left out."""
    gain = sum(np.nanmean(method[c]) - np.nanmean(bound[c]) for c in own)
    full = sum(np.nanmean(own[c]) - np.nanmean(bound[c]) for c in own)
    return float(gain / full) if full > 0 else float("nan")


def kept_of_own(method: dict[str, np.ndarray], own: dict[str, np.ndarray]) -> float:
    """Σ_c mean method_c / Σ_c mean own_c."""
    return float(sum(np.nanmean(method[c]) for c in own) / sum(np.nanmean(own[c]) for c in own))


def mean_score(method: dict[str, np.ndarray]) -> float:
    return float(np.mean([np.nanmean(v) for v in method.values()]))


def bootstrap(statistic: Callable[..., float], *methods: dict[str, np.ndarray], samples: int = 1000,
              seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """``(value, low, high)``: ``statistic(*methods)`` and its paired percentile interval, resampling each concept's
    items with replacement (the same resample for every method, so differences keep their pairing)."""
    value = statistic(*methods)
    rng = np.random.default_rng(seed)
    concepts = list(methods[0])
    draws = []
    for _ in range(samples):
        picks = {c: rng.integers(0, len(methods[0][c]), len(methods[0][c])) for c in concepts}
        draws.append(statistic(*({c: m[c][picks[c]] for c in concepts} for m in methods)))
    low, high = np.nanpercentile(draws, [50 * (1 - level), 50 * (1 + level)])
    return value, float(low), float(high)


def difference(statistic: Callable[..., float], first: tuple, second: tuple, **kwargs) -> tuple[float, float, float]:
    """``statistic(*first) − statistic(*second)`` with its paired interval (both tuples hold the same concepts' items
    in the same order); an interval holding 0 is a tie."""
    n = len(first)

    def both(*methods):
        return statistic(*methods[:n]) - statistic(*methods[n:])

    return bootstrap(both, *first, *second, **kwargs)


def tie_or_order(low: float, high: float) -> str:
    """How a difference's interval reads: ``better``, ``worse`` or ``tie``."""
    return "better" if low > 0 else "worse" if high < 0 else "tie"
