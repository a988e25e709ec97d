import pytest
import torch
from torch import nn

from mos_lightning.fusion import (
    ClosedForm,
    FusionSums,
    GramRecorder,
    LayerProblem,
    NaiveAverage,
    NaiveSum,
    closed_form,
    lbfgs,
    naive_merge,
    objective,
)


def sums_for(w0, weights, inputs):
    """Record each concept's inputs through a real linear layer, as the fuser does."""
    layer = nn.Linear(w0.shape[1], w0.shape[0], bias=False)
    sums = FusionSums()
    for w, x in zip(weights, inputs, strict=True):
        with GramRecorder(nn.Sequential(layer), ["0"], dtype=torch.float64) as rec:
            layer(x.float())
        sums.add(rec, {"0": w - w0})
    return sums.layer("0")


def problem(n_concepts=3, d_in=8, d_out=6, rows=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    w0 = torch.randn(d_out, d_in, generator=g, dtype=torch.float64)
    weights = [w0 + 0.3 * torch.randn(d_out, d_in, generator=g, dtype=torch.float64) for _ in range(n_concepts)]
    inputs = [torch.randn(rows, d_in, generator=g, dtype=torch.float64) for _ in range(n_concepts)]
    return w0, weights, inputs


def test_closed_form_matches_lstsq_on_stacked_activations():
    w0, weights, inputs = problem()
    gram, cross, energy, rows = sums_for(w0, weights, inputs)
    fused = closed_form(w0, gram, cross, ridge=1e-12)
    x = torch.cat(inputs)
    y = torch.cat([xi @ wi.T for xi, wi in zip(inputs, weights, strict=True)])
    expected = torch.linalg.lstsq(x, y).solution.T
    torch.testing.assert_close(fused, expected, atol=1e-5, rtol=1e-5)
    direct = sum(((xi @ wi.T - xi @ fused.T) ** 2).sum() for xi, wi in zip(inputs, weights, strict=True))
    torch.testing.assert_close(objective(fused, w0, gram, cross, energy), direct, atol=1e-4, rtol=1e-6)
    assert int(rows) == 60


def test_lbfgs_from_w0_reaches_the_closed_form_objective():
    w0, weights, inputs = problem()
    gram, cross, energy, rows = sums_for(w0, weights, inputs)
    best = objective(closed_form(w0, gram, cross, ridge=1e-12), w0, gram, cross, energy)
    found = objective(lbfgs(w0, gram, cross, energy, rows, iterations=200), w0, gram, cross, energy)
    start = objective(w0, w0, gram, cross, energy)
    assert start == energy
    assert found <= best * (1 + 1e-6) + 1e-9 and start > 1.5 * best
    naive = objective(naive_merge(w0, [w - w0 for w in weights]), w0, gram, cross, energy)
    assert naive > 2 * best


def test_one_concept_is_reproduced_exactly():
    w0, weights, inputs = problem(n_concepts=1)
    gram, cross, _, _ = sums_for(w0, weights, inputs)
    fused = closed_form(w0, gram, cross)
    torch.testing.assert_close(inputs[0] @ fused.T, inputs[0] @ weights[0].T, atol=1e-3, rtol=1e-3)


def test_directions_no_concept_visits_stay_at_w0():
    w0, weights, inputs = problem(d_in=8, rows=30)
    inputs = [x.clone() for x in inputs]
    for x in inputs:
        x[:, 6:] = 0  # activations never use the last two input dimensions
    gram, cross, _, _ = sums_for(w0, weights, inputs)
    fused = closed_form(w0, gram, cross)
    torch.testing.assert_close(fused[:, 6:], w0[:, 6:], atol=1e-9, rtol=0)


def test_recorder_shares_grams_of_shared_inputs_and_always_removes_its_hooks():
    from diffusers.models.attention_processor import Attention

    attn = Attention(query_dim=16, heads=2, dim_head=8)
    names = ["to_q", "to_k", "to_v", "to_out.0"]
    with GramRecorder(attn, names) as rec:
        attn(torch.randn(2, 5, 16))
    assert rec.group_of == {"to_q": "to_q", "to_k": "to_q", "to_v": "to_q", "to_out.0": "to_out.0"}
    assert set(rec.grams) == {"to_q", "to_out.0"} and rec.rows["to_q"] == 10
    with pytest.raises(RuntimeError, match="boom"):
        with GramRecorder(attn, names):
            raise RuntimeError("boom")
    assert all(not attn.get_submodule(n)._forward_pre_hooks for n in names)


def test_solver_components_see_the_layer_problem():
    w0, weights, inputs = problem()
    gram, cross, energy, rows = sums_for(w0, weights, inputs)
    naive = naive_merge(w0, [w - w0 for w in weights])
    layer = LayerProblem("0", "spatial", w0, gram, cross, energy, rows, naive, len(weights))
    torch.testing.assert_close(ClosedForm(1e-12)(layer), closed_form(w0, gram, cross, ridge=1e-12))
    assert torch.equal(NaiveSum()(layer), naive)
    torch.testing.assert_close(NaiveAverage()(layer), w0 + sum(w - w0 for w in weights) / 3)
    assert layer.objective(ClosedForm()(layer)) < layer.objective(NaiveAverage()(layer)) < layer.objective(w0)
    with pytest.raises(ValueError, match="ridge must be > 0"):
        ClosedForm(ridge=0)


def test_lbfgs_keep_best_never_ends_above_any_point_it_evaluated():
    w0, weights, inputs = problem()
    gram, cross, energy, rows = sums_for(w0, weights, inputs)
    for iterations in (1, 3, 50):
        best = lbfgs(w0, gram, cross, energy, rows, iterations, keep_best=True)
        last = lbfgs(w0, gram, cross, energy, rows, iterations)
        assert objective(best, w0, gram, cross, energy) <= objective(last, w0, gram, cross, energy) + 1e-12
        assert objective(best, w0, gram, cross, energy) <= energy  # never worse than W0, the first point
