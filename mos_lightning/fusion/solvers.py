"""Solvers for one fused linear layer, all on the Gram form of the paper's objective. With D = W − W0
and ΔW_i = W_i − W0:

    f(W) = Σ_i ||X_i W_iᵀ − X_i Wᵀ||² = tr(D S Dᵀ) − 2 tr(D B) + c,   S = Σ G_i,  B = Σ G_i ΔW_iᵀ,  c = Σ tr(ΔW_i G_i ΔW_iᵀ)

(see :class:`~mos_lightning.fusion.grams.FusionSums`); f(W0) = c. The Gram form has the same value and
gradient as the objective on stacked activations, so L-BFGS here takes the paper's steps without
holding the activations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def _change_objective(change: torch.Tensor, gram, cross, energy) -> torch.Tensor:
    return ((change @ gram) * change).sum() - 2 * (change * cross.T).sum() + energy


def objective(weight: torch.Tensor, w0: torch.Tensor, gram: torch.Tensor, cross: torch.Tensor,
              energy: torch.Tensor) -> torch.Tensor:
    """f(W) from the sums; ``weight`` and ``w0`` are [out, in]."""
    return _change_objective(weight.to(gram.dtype) - w0.to(gram.dtype), gram, cross, energy)


def closed_form(w0: torch.Tensor, gram: torch.Tensor, cross: torch.Tensor, ridge: float = 1e-5) -> torch.Tensor:
    """argmin_W f(W) + λ||W − W0||², i.e. ``W = W0 + Bᵀ (S + λI)^{-1}`` with λ = ``ridge`` · tr(S)/d_in.

    Directions the concepts' activations never visit (rank-deficient S) stay at W0, as with gradient
    solvers started from W0; the small ridge keeps nearly unvisited directions from blowing up.
    """
    d_in = gram.shape[0]
    lam = ridge * gram.diagonal().mean().clamp_min(torch.finfo(gram.dtype).tiny)
    system = gram + lam * torch.eye(d_in, dtype=gram.dtype, device=gram.device)
    return w0.to(gram.dtype) + torch.linalg.solve(system, cross).T


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

    best = [float("inf"), change.detach().clone()]

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

    def objective(self, weight: torch.Tensor) -> float:
        return float(objective(weight, self.w0, self.gram, self.cross, self.energy))


class FusionSolver:
    """Fuses one layer: called once per LoRA-touched layer with its :class:`LayerProblem`, returns W [out, in].

    Chosen in YAML by ``class_path``; the fusion report records the class path and arguments. A new
    solver is a small subclass (see EXTENDING.md).
    """

    def __call__(self, problem: LayerProblem) -> torch.Tensor:
        raise NotImplementedError


class ClosedForm(FusionSolver):
    """The exact least-squares solution with a small ridge towards W0 (our default; milliseconds per layer)."""

    def __init__(self, ridge: float = 1e-5):
        """
        Args:
            ridge: Ridge λ relative to the mean diagonal of Σ G_i (> 0): damps directions the concepts'
                activations barely visit (directions they never visit stay at W0 anyway).
        """
        if ridge <= 0:
            raise ValueError(f"ridge must be > 0 (e.g. 1e-6), got {ridge}")
        self.ridge = ridge

    def __call__(self, problem: LayerProblem) -> torch.Tensor:
        return closed_form(problem.w0, problem.gram, problem.cross, self.ridge)


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
