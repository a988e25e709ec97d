"""Where the least-squares compromise loses each concept's change: per layer group, the share of each concept's own
change a solver loses on that concept's statistics, and how much the concepts' inputs overlap."""

from __future__ import annotations

import numpy as np
import torch

from ..fusion.solvers import FusionSolver, LayerProblem, naive_merge
from .study import Study, layer_group


def layer_analysis(study: Study, solvers: dict[str, FusionSolver]) -> list[dict]:
    """Per layer group: how much of each concept's own change each solver loses on that concept's own statistics
    (f_i(W) / f_i(W0), mean over concepts: 0 = kept, 1 = as if dropped) and how much the concepts' inputs overlap
    (mean over concept pairs of the squared cosines of the principal angles between their Gram matrices' leading
    subspaces holding 90 % of the energy: 1 = the same directions, 0 = disjoint)."""
    f = study.fuser
    study.fuse(_KeepTerms(next(iter(solvers.values()))))
    groups: dict[str, dict[str, list[float]]] = {}
    for stage, sums in f.sums.items():
        for name in f.stage_layers[stage]:
            terms = sums.concept_terms(name)
            gram, cross, energy, rows = sums.layer(name)
            w0 = f.base["text_encoder" if stage == "text_encoder" else "unet"][name].to(gram.dtype)
            naive = naive_merge(w0, [d for _, d, _ in terms])
            problem = LayerProblem(name, stage, w0, gram, cross, energy, rows, naive, len(terms))
            key = "text" if stage == "text_encoder" else ("kv" if stage == "kv" else layer_group(name))
            row = groups.setdefault(key, {})
            for label, solver in solvers.items():
                weight = solver(problem).to(gram.dtype)
                lost = [float((((weight - w0 - d) @ g) * (weight - w0 - d)).sum() / ((d @ g) * d).sum().clamp_min(1e-30))
                        for g, d, _ in terms]
                row.setdefault(label, []).append(float(np.mean(lost)))
            row.setdefault("overlap", []).append(_overlap([g for g, _, _ in terms]))
    return [{"group": k, **{m: float(np.mean(v)) for m, v in row.items()}} for k, row in sorted(groups.items())]


class _KeepTerms(FusionSolver):
    """Wraps a solver and asks for per-concept terms (the analysis reads them from the sums)."""

    needs_concept_terms = True

    def __init__(self, inner: FusionSolver):
        self.inner = inner

    def __call__(self, problem):
        return self.inner(problem)


def _overlap(grams: list[torch.Tensor], energy: float = 0.9) -> float:
    bases = []
    for g in grams:
        values, vectors = torch.linalg.eigh(g.double())
        values, vectors = values.flip(0).clamp_min(0), vectors.flip(1)
        k = int((values.cumsum(0) / values.sum().clamp_min(1e-30) < energy).sum()) + 1
        bases.append(vectors[:, :k])
    pairs = [(a, b) for i, a in enumerate(bases) for b in bases[i + 1:]]
    return float(np.mean([float((a.T @ b).pow(2).sum()) / min(a.shape[1], b.shape[1]) for a, b in pairs])) if pairs else 1.0
