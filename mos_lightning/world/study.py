"""One base, N tuned world concepts and a judge: weights for the LoRA-touched layers in, identity out — sampled on
held-out prompts and seeds and scored by :mod:`mos_lightning.world.identity` (the engine of
:mod:`mos_lightning.world.fusion_study`)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..fusion import ConceptSpec, Fuser, FusionSettings, load_concepts
from ..fusion.fidelity import held_out_scores, predictions_along, record_held_out, relative_error
from ..fusion.run import solve_stages
from ..fusion.solvers import FusionSolver
from ..pipelines import EDLoRAPipeline
from .claims import REPO
from .concepts import CONCEPTS
from .identity import IdentityJudge, Scores, bootstrap, difference, kept_above_bound, mean_score, tie_or_order

# Held out from the fusion statistics (configs/world/fusion.yaml records grass/snow/sand/water and seeds 0–3).
HELD_OUT_PROMPTS = ("<TOK> in the sky", "<TOK> on a wooden table")
HELD_OUT_SEEDS = tuple(range(100, 112))
SAMPLING = {"guidance_scale": 5.0, "num_inference_steps": 20, "height": 64, "width": 64}


def world_concept(name: str) -> str:
    """The world concept an ED-LoRA shows: its name, or its name less a final ``b`` (the same concept tuned again
    under new tokens, for fusions of more concepts than the world has)."""
    return name if name in CONCEPTS or name[:-1] not in CONCEPTS else name[:-1]


def layer_group(name: str) -> str:
    """``down``/``mid``/``up`` × ``self``/``cross`` × projection, e.g. ``up.cross.to_out`` (UNet) or ``text``."""
    if "." not in name or name.startswith("text_model"):
        return "text"
    where = "down" if name.startswith("down") else "mid" if name.startswith("mid") else "up"
    kind = "self" if ".attn1." in name else "cross"
    return f"{where}.{kind}.{name.rsplit('.', 2)[-2] if name.endswith('.0') else name.rsplit('.', 1)[-1]}"


@dataclass
class Study:
    """One base, N tuned concepts, a judge; weights for the LoRA-touched layers in, identity scores out."""

    base: str
    edloras: dict[str, str]
    clip: str
    settings: FusionSettings
    prompts: tuple[str, ...] = HELD_OUT_PROMPTS
    seeds: tuple[int, ...] = HELD_OUT_SEEDS
    batch: int = 24
    cache: Path | None = None  # per-variant scores, so a rerun only samples new variants
    report: bool = True  # also compute what a fusion report says of each variant (held-out net, in-sample error)
    scores: dict[str, Scores] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        from .concepts import concept_views

        self.pipe = EDLoRAPipeline.from_pretrained(self.base, local_files_only=True, safety_checker=None,
                                                   requires_safety_checker=False)
        self.pipe.set_progress_bar_config(disable=True)
        self.concepts = load_concepts([ConceptSpec(path) for path in self.edloras.values()])
        self.names = [c.name for c in self.concepts]
        self.fuser = Fuser(self.pipe, self.concepts, self.settings)
        self.records = {i: self.fuser.record(i) for i in range(len(self.concepts))}
        self.held_out = {i: record_held_out(self.fuser, i) for i in range(len(self.concepts))} if self.report else {}
        self.report_metrics: dict[str, dict[str, list[float]]] = {}
        kinds = {c: world_concept(c) for c in self.names}
        self.judge = IdentityJudge(self.clip, {c: [v[0] for v in concept_views(kinds[c])] for c in self.names}, kinds)

    # ------------------------------------------------------------------------------------------------ weights
    def fuse(self, solver: FusionSolver) -> dict[str, dict[str, torch.Tensor]]:
        """All concepts fused with ``solver`` (statistics recorded once, in :meth:`__post_init__`)."""
        fuser = self.fuser
        fuser.settings.solver = solver
        fuser.sums = {stage: fuser.new_sums() for stage in fuser.sums}
        fuser.fused, fuser.naive = {}, {}
        for index, record in self.records.items():
            fuser.add(index, record)
        solve_stages(fuser, list(self.records))
        return {part: dict(weights) for part, weights in fuser.fused.items()}

    def own(self, index: int, keep: Callable[[str, str], bool] = lambda part, name: True) -> dict:
        """Concept ``index``'s own weights where ``keep(part, layer)``, the base weights elsewhere."""
        f, out = self.fuser, {}
        for part in f.parts:
            own = f.concept_weights(index, part)
            out[part] = {n: own[n] if keep(part, n) else f.base[part][n].float() for n in f.layers[part]}
        return out

    # ------------------------------------------------------------------------------------------------ samples
    def prompts_of(self, concept: str, class_word: bool = False) -> tuple[list[str], list[str]]:
        """(prompts the model reads, the same in words for text alignment) for every item of ``concept``."""
        info = self.concepts[self.names.index(concept)]
        word = CONCEPTS[world_concept(concept)].cls
        read = [p.replace("<TOK>", word if class_word else info.token_string) for p in self.prompts for _ in self.seeds]
        words = [p.replace("<TOK>", word) for p in self.prompts for _ in self.seeds]
        return read, words

    @torch.no_grad()
    def images(self, concept: str, class_word: bool = False) -> list[np.ndarray]:
        read, _ = self.prompts_of(concept, class_word)
        seeds = [s for _ in self.prompts for s in self.seeds]
        out = []
        for start in range(0, len(read), self.batch):
            out += list(self.pipe.sample(read[start:start + self.batch], seeds[start:start + self.batch],
                                         negative_prompt="", **SAMPLING))
        return out

    def evaluate(self, name: str, weights: Callable[[int], dict] | dict | None, class_word: bool = False) -> Scores:
        """Sample every concept's held-out items with ``weights`` (a dict for every concept, or per concept index;
        ``None`` = the base) and score them; scores of a variant already in :attr:`cache` are read from there."""
        start, scores = time.perf_counter(), Scores()
        cached = self.cache / f"{re.sub(r'[^A-Za-z0-9.+-]+', '_', name)}.npz" if self.cache else None
        stored = dict(np.load(cached)) if cached is not None and cached.is_file() else {}
        for index, concept in enumerate(self.names):
            chosen = weights(index) if callable(weights) else weights
            if f"clip/{concept}" in stored:
                got = {k: stored[f"{k}/{concept}"] for k in ("clip", "detector", "text")}
            else:
                self.fuser.restore_base()
                for part, layer_weights in (chosen or {}).items():
                    self.fuser.set_weights(part, layer_weights)
                try:
                    pictures = self.images(concept, class_word)
                finally:
                    self.fuser.restore_base()
                got = self.judge.score(concept, pictures, self.prompts_of(concept)[1])
            for metric, value in (self.report_numbers(index, chosen) if self.report else {}).items():
                self.report_metrics.setdefault(name, {}).setdefault(metric, []).append(value)
            scores.clip[concept], scores.detector[concept], scores.text[concept] = got["clip"], got["detector"], got["text"]
        if cached is not None and not stored:
            cached.parent.mkdir(parents=True, exist_ok=True)
            arrays = {f"{k}/{c}": v for k in ("clip", "detector", "text") for c, v in scores.judge(k).items()}
            np.savez(cached, **arrays)  # type: ignore[arg-type]  # numpy's stub mistypes **kwds
        self.scores[name], self.seconds[name] = scores, time.perf_counter() - start
        print(f"study: {name}: {self.summary(name)}  ({self.seconds[name]:.0f} s)", flush=True)
        return scores

    def report_numbers(self, index: int, weights: dict | None) -> dict[str, float]:
        """What a fusion report says of ``weights`` for concept ``index``: the held-out effect shares of its pictures
        (:func:`~mos_lightning.fusion.fidelity.held_out_scores`) and the old in-sample unguided error."""
        f = self.fuser
        numbers = {f"held_out_{k}": v for k, v in held_out_scores(f, self.held_out[index], weights).items()}
        for part, layer_weights in (weights or {}).items():
            f.set_weights(part, layer_weights)
        try:
            s = f.settings
            prompts = [p for p in f.prompts(index, s.spatial_prompts) for _ in s.spatial_seeds]
            record = self.records[index].reference
            numbers["in_sample"] = relative_error(predictions_along(self.pipe, prompts, record), record.noise)
        finally:
            f.restore_base()
        return numbers

    # ------------------------------------------------------------------------------------------------ numbers
    def kept(self, name: str, judge: str) -> tuple[float, float, float]:
        own, bound = self.scores["own"].judge(judge), self.scores["bound"].judge(judge)
        return bootstrap(kept_above_bound, self.scores[name].judge(judge), own, bound)

    def versus(self, first: str, second: str, judge: str) -> tuple[float, float, float]:
        own, bound = self.scores["own"].judge(judge), self.scores["bound"].judge(judge)
        return difference(kept_above_bound, (self.scores[first].judge(judge), own, bound),
                          (self.scores[second].judge(judge), own, bound))

    def summary(self, name: str) -> str:
        s = self.scores[name]
        parts = [f"clip {mean_score(s.clip):.3f}", f"detector {mean_score(s.detector):.3f}", f"text {mean_score(s.text):.3f}"]
        if "own" in self.scores and "bound" in self.scores and name not in ("own", "bound"):
            parts += [f"kept clip {self.kept(name, 'clip')[0]:.0%}", f"kept detector {self.kept(name, 'detector')[0]:.0%}"]
        return ", ".join(parts)

    def table(self) -> list[dict]:
        rows = []
        for name, s in self.scores.items():
            row = {"variant": name, "clip": mean_score(s.clip), "detector": mean_score(s.detector),
                   "text": mean_score(s.text), "seconds": self.seconds[name],
                   **{k: float(np.mean(v)) for k, v in self.report_metrics.get(name, {}).items()}}
            if name not in ("own", "bound"):
                for judge in ("clip", "detector"):
                    row[f"kept_{judge}"] = self.kept(name, judge)
                if name != "naive" and "naive" in self.scores:
                    for judge in ("clip", "detector"):
                        value, low, high = self.versus(name, "naive", judge)
                        row[f"vs_naive_{judge}"] = (value, low, high, tie_or_order(low, high))
            rows.append(row)
        return rows


def world_settings(**overrides) -> FusionSettings:
    """The fusion settings of ``configs/world/fusion.yaml`` (statistics prompts and seeds, held-out check), with
    ``overrides``."""
    import yaml

    config = yaml.safe_load((REPO / "configs/world/fusion.yaml").read_text())["model"]["init_args"]
    keys = ("text_prompts", "spatial_prompts", "spatial_seeds", "height", "width", "held_out_prompts", "held_out_seeds",
            "guidance_scale", "negative_prompt")
    return FusionSettings(**{**{k: config[k] for k in keys}, **overrides})
