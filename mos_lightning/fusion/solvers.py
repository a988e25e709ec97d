"""Solvers for one fused linear layer, all on the Gram form of the paper's objective. With D = W − W0
and ΔW_i = W_i − W0:

    f(W) = Σ_i ||X_i W_iᵀ − X_i Wᵀ||² = tr(D S Dᵀ) − 2 tr(D B) + c,   S = Σ G_i,  B = Σ G_i ΔW_iᵀ,  c = Σ tr(ΔW_i G_i ΔW_iᵀ)

(see :class:`~mos_lightning.fusion.stats.FusionSums`); f(W0) = c. The Gram form has the same value and
gradient as the objective on stacked activations, so L-BFGS here takes the paper's steps without
holding the activations.
"""

from __future__ import annotations

from typing import Literal

import torch

Solver = Literal["closed_form", "lbfgs", "naive"]


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
    iterations: int,
) -> torch.Tensor:
    """The paper's solver: L-BFGS from W0 on the mean squared error (f / (rows · d_out)), ``iterations`` steps."""
    change = torch.zeros_like(w0, dtype=gram.dtype).requires_grad_(True)
    scale = 1.0 / (rows.clamp_min(1) * w0.shape[0])
    optimizer = torch.optim.LBFGS([change], lr=1.0, max_iter=iterations, history_size=10,
                                  tolerance_grad=1e-12, tolerance_change=1e-15, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = _change_objective(change, gram, cross, energy) * scale
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return w0.to(gram.dtype) + change.detach()


def naive_merge(w0: torch.Tensor, deltas: list[torch.Tensor]) -> torch.Tensor:
    """The baseline: W0 + Σ_i α_i ΔW_i (``deltas`` already scaled by each concept's alpha)."""
    out = w0.to(torch.float64).clone()
    for delta in deltas:
        out += delta.to(out.device, torch.float64)
    return out
