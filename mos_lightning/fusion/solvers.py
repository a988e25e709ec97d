"""Solvers for one fused linear layer, all on the Gram form of the paper's objective. With D = W − W0
and ΔW_i = W_i − W0:

    f(W) = Σ_i ||X_i W_iᵀ − X_i Wᵀ||² = tr(D S Dᵀ) − 2 tr(D B) + c,   S = Σ G_i,  B = Σ G_i ΔW_iᵀ,  c = Σ tr(ΔW_i G_i ΔW_iᵀ)

(see :class:`~mos_lightning.fusion.grams.FusionSums`); f(W0) = c. The Gram form has the same value and
gradient as the objective on stacked activations, so L-BFGS here takes the paper's steps without
holding the activations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Literal

import torch


def _change_objective(change: torch.Tensor, gram, cross, energy) -> torch.Tensor:
    return ((change @ gram) * change).sum() - 2 * (change * cross.T).sum() + energy


def objective(weight: torch.Tensor, w0: torch.Tensor, gram: torch.Tensor, cross: torch.Tensor,
              energy: torch.Tensor) -> torch.Tensor:
    """f(W) from the sums; ``weight`` and ``w0`` are [out, in]."""
    return _change_objective(weight.to(gram.dtype) - w0.to(gram.dtype), gram, cross, energy)


def closed_form(w0: torch.Tensor, gram: torch.Tensor, cross: torch.Tensor, ridge: float = 1e-5,
                prior: torch.Tensor | None = None) -> torch.Tensor:
    """argmin_W f(W) + λ||W − P||², i.e. ``W = W0 + (B + λ(P − W0)ᵀ)ᵀ (S + λI)^{-1}`` with λ = ``ridge`` · tr(S)/d_in
    and the prior P = W0 (default) or e.g. the naive merge.

    Directions the concepts' activations never visit (rank-deficient S) stay at the prior, as with gradient
    solvers started from it; the ridge keeps nearly unvisited directions from blowing up.
    """
    d_in = gram.shape[0]
    lam = ridge * gram.diagonal().mean().clamp_min(torch.finfo(gram.dtype).tiny)
    system = gram + lam * torch.eye(d_in, dtype=gram.dtype, device=gram.device)
    w0 = w0.to(gram.dtype)
    rhs = cross if prior is None else cross + lam * (prior.to(gram.dtype) - w0).T
    return w0 + torch.linalg.solve(system, rhs).T


def lbfgs(
    w0: torch.Tensor, gram: torch.Tensor, cross: torch.Tensor, energy: torch.Tensor, rows: torch.Tensor,
    iterations: int, history_size: int = 10, tolerance_grad: float = 1e-12, tolerance_change: float = 1e-15,
    keep_best: bool = False,
) -> torch.Tensor:
    """The paper's solver: L-BFGS from W0 on the mean squared error (f / (rows · d_out)), ``iterations`` steps;
    with ``keep_best`` the lowest-loss point any evaluation saw (the reference's rule), else the last."""
    change = torch.zeros_like(w0, dtype=gram.dtype).requires_grad_(True)
    scale = 1.0 / (rows.clamp_min(1) * w0.shape[0])
    optimizer = torch.optim.LBFGS([change], lr=1.0, max_iter=iterations, history_size=history_size,
                                  tolerance_grad=tolerance_grad, tolerance_change=tolerance_change,
                                  line_search_fn="strong_wolfe")

    best: list = [float("inf"), change.detach().clone()]  # [loss, change]

    def closure():
        optimizer.zero_grad()
        loss = _change_objective(change, gram, cross, energy) * scale
        loss.backward()
        if keep_best and float(loss) < best[0]:
            best[:] = [float(loss), change.detach().clone()]
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    if keep_best and float(_change_objective(change.detach(), gram, cross, energy) * scale) > best[0]:
        return w0.to(gram.dtype) + best[1]
    return w0.to(gram.dtype) + change.detach()


def naive_merge(w0: torch.Tensor, deltas: list[torch.Tensor]) -> torch.Tensor:
    """The baseline: W0 + Σ_i α_i ΔW_i (``deltas`` already scaled by each concept's alpha)."""
    out = w0.to(torch.float64).clone()
    for delta in deltas:
        out += delta.to(out.device, torch.float64)
    return out


# ------------------------------------------------------------------ components
@dataclass
class ConceptTerm:
    """One concept's part of a layer's problem (for solvers that weigh concepts): f_i(W) = ||X_i (W_i − W)ᵀ||²."""

    gram: torch.Tensor  # [in, in] G_i = X_iᵀ X_i
    delta: torch.Tensor  # [out, in] α_i ΔW_i
    rows: torch.Tensor  # rows of X_i

    def objective(self, weight: torch.Tensor, w0: torch.Tensor) -> torch.Tensor:
        """f_i(W) = tr((D − ΔW_i) G_i (D − ΔW_i)ᵀ), D = W − W0."""
        error = weight.to(self.gram.dtype) - w0.to(self.gram.dtype) - self.delta.to(self.gram.dtype)
        return ((error @ self.gram) * error).sum()


@dataclass
class LayerProblem:
    """One layer's fusion problem: the statistics summed over concepts, and the weights they start from."""

    name: str  # the layer, e.g. ``down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k``
    stage: str  # ``text_encoder``, ``kv`` or ``spatial``
    w0: torch.Tensor  # [out, in] the base weight
    gram: torch.Tensor  # [in, in] S = Σ G_i
    cross: torch.Tensor  # [in, out] B = Σ G_i ΔW_iᵀ
    energy: torch.Tensor  # c = f(W0)
    rows: torch.Tensor  # rows of X summed over concepts
    naive_sum: torch.Tensor  # [out, in] W0 + Σ α_i ΔW_i
    num_concepts: int
    # each concept's own terms, in concept order: only for solvers with ``needs_concept_terms`` (memory: one Gram
    # matrix per concept and layer group instead of one in all; see FusionSums.keep_concepts)
    concepts: list[ConceptTerm] | None = None
    # fields a solver adds to this layer's row of the fusion report (e.g. its per-concept weights)
    report: dict = field(default_factory=dict)

    def objective(self, weight: torch.Tensor) -> float:
        return float(objective(weight, self.w0, self.gram, self.cross, self.energy))


class FusionSolver:
    """Fuses one layer: called once per LoRA-touched layer with its :class:`LayerProblem`, returns W [out, in].

    Chosen in YAML by ``class_path``; the fusion report records the class path and arguments, and per layer the
    solver that solved it (:meth:`solver_for`). A new solver is a small subclass (see EXTENDING.md).
    """

    #: Set to True to get each concept's own Gram matrix and ΔW in ``problem.concepts`` (costs memory: one Gram
    #: matrix per concept and layer group; SD 1.5 in float64, about 0.5 GB per concept).
    needs_concept_terms: bool = False

    def __call__(self, problem: LayerProblem) -> torch.Tensor:
        raise NotImplementedError

    def solver_for(self, problem: LayerProblem) -> FusionSolver:
        """The solver that actually solves ``problem`` (a router names the one it picked)."""
        return self


class ClosedForm(FusionSolver):
    """The exact least-squares solution with a ridge towards W0 or the naive merge (milliseconds per layer)."""

    def __init__(self, ridge: float = 1e-5, towards: Literal["base", "naive"] = "base"):
        """
        Args:
            ridge: Ridge λ relative to the mean diagonal of Σ G_i (> 0): damps directions the concepts'
                activations barely visit.
            towards: What those directions fall back to: ``base`` (W0: every concept's change dropped there)
                or ``naive`` (W0 + Σ α_i ΔW_i: every concept's change kept there).
        """
        if ridge <= 0:
            raise ValueError(f"ridge must be > 0 (e.g. 1e-6), got {ridge}")
        if towards not in ("base", "naive"):
            raise ValueError(f"towards must be 'base' or 'naive', got {towards!r}")
        self.ridge = ridge
        self.towards = towards

    def __call__(self, problem: LayerProblem) -> torch.Tensor:
        prior = problem.naive_sum if self.towards == "naive" else None
        return closed_form(problem.w0, problem.gram, problem.cross, self.ridge, prior)


def default_solver() -> ClosedForm:
    """The default: least squares where the concepts' statistics are strong (ridge 1 × their mean eigenvalue), the naive
    merge where they are weak. Chosen by held-out identity in the world (CLAIMS.md): the exact closed form (ridge
    1e-5 towards W0) fits the few recorded trajectories so closely that it loses identity on new prompts and seeds."""
    return ClosedForm(ridge=1.0, towards="naive")


class LBFGS(FusionSolver):
    """The paper's solver: L-BFGS (strong Wolfe) from W0 on the same objective."""

    def __init__(self, text_encoder_iterations: int = 500, unet_iterations: int = 50, history_size: int = 10,
                 tolerance_grad: float = 1e-12, tolerance_change: float = 1e-15, kv_iterations: int | None = None,
                 keep_best: bool = False):
        """
        Args:
            text_encoder_iterations: Iterations per text-encoder layer (paper: 500).
            unet_iterations: Iterations per UNet layer (paper: 50 spatial; the reference runs k/v for 500).
            history_size: L-BFGS history (reference: 25).
            tolerance_grad: Stop when the gradient's largest entry falls below this.
            tolerance_change: Stop when the objective or step changes less than this (reference: 1e-16).
            kv_iterations: Iterations per cross-attention k/v layer (default: ``unet_iterations``; reference: 500).
            keep_best: Return the lowest-loss point any evaluation saw, as the reference does (default: the last).
        """
        if min(text_encoder_iterations, unet_iterations, history_size, kv_iterations or 1) < 1:
            raise ValueError("iteration counts and history_size must be >= 1")
        self.text_encoder_iterations, self.unet_iterations = text_encoder_iterations, unet_iterations
        self.history_size, self.tolerance_grad, self.tolerance_change = history_size, tolerance_grad, tolerance_change
        self.kv_iterations, self.keep_best = kv_iterations, keep_best

    def __call__(self, problem: LayerProblem) -> torch.Tensor:
        iterations = {"text_encoder": self.text_encoder_iterations,
                      "kv": self.kv_iterations or self.unet_iterations}.get(problem.stage, self.unet_iterations)
        return lbfgs(problem.w0, problem.gram, problem.cross, problem.energy, problem.rows, iterations,
                     self.history_size, self.tolerance_grad, self.tolerance_change, self.keep_best)


class NaiveSum(FusionSolver):
    """The baseline of the paper's "LoRA" column: W0 + Σ_i α_i ΔW_i (ignores the statistics)."""

    def __call__(self, problem: LayerProblem) -> torch.Tensor:
        return problem.naive_sum


class NaiveAverage(FusionSolver):
    """The research branch's naive baseline: W0 + (1/N) Σ_i α_i ΔW_i."""

    def __call__(self, problem: LayerProblem) -> torch.Tensor:
        w0 = problem.w0.to(problem.naive_sum.dtype)
        return w0 + (problem.naive_sum - w0) / max(problem.num_concepts, 1)


class KeepBase(FusionSolver):
    """W0: the layer keeps the base weight (every concept's LoRA is dropped there)."""

    def __call__(self, problem: LayerProblem) -> torch.Tensor:
        return problem.w0


@dataclass
class SolverRule:
    """Layers whose ``"<stage>/<layer name>"`` matches ``match`` (shell pattern: ``kv/*``, ``spatial/*attn1*``,
    ``*.attn2.to_out.0``) are solved by ``solver``."""

    match: str
    solver: FusionSolver


class PerLayer(FusionSolver):
    """A solver per stage or layer group: the first rule that matches a layer solves it, ``default`` the rest.

    For example ``rules: [{match: "spatial/*", solver: {class_path: mos_lightning.fusion.NaiveSum}}]`` fuses the
    text encoder and k/v in closed form and merges the spatial layers naively.
    """

    def __init__(self, rules: list[SolverRule] | None = None, default: FusionSolver | None = None):
        """
        Args:
            rules: ``{match, solver}`` pairs, tried in order (``match``: a shell pattern on ``<stage>/<layer>``; the
                stages are ``text_encoder``, ``kv`` and ``spatial``).
            default: The solver of layers no rule matches (default ``ClosedForm()``).
        """
        self.rules = [r if isinstance(r, SolverRule) else SolverRule(**r) for r in rules or []]
        self.default = default if default is not None else ClosedForm()

    @property
    def needs_concept_terms(self) -> bool:  # type: ignore[override]
        return any(s.needs_concept_terms for s in [*(r.solver for r in self.rules), self.default])

    def solver_for(self, problem: LayerProblem) -> FusionSolver:
        key = f"{problem.stage}/{problem.name}"
        chosen = next((r.solver for r in self.rules if fnmatchcase(key, r.match)), self.default)
        return chosen.solver_for(problem)

    def __call__(self, problem: LayerProblem) -> torch.Tensor:
        return self.solver_for(problem)(problem)
