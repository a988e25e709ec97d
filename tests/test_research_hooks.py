"""What researchers build on: builder hooks, per-concept fusion statistics, and failures that come early and say why."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import REPO
from helpers import make_data, make_task, make_trainer
from peft.tuners.lora import LoraLayer

from mos_lightning.cli import build_cli
from mos_lightning.components import describe
from mos_lightning.fusion import (
    ClosedForm,
    FusionSolver,
    FusionSums,
    GramRecorder,
    KeepBase,
    LayerProblem,
    NaiveSum,
    PerLayer,
    SolverRule,
    closed_form,
)
from mos_lightning.losses import DiffusionLoss, LossTerm
from mos_lightning.tasks import FusionTask

RECIPES = sorted(p for p in REPO.glob("configs/*/*.yaml") if "EDLoRATask" in p.read_text())


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_appending_a_loss_term_keeps_the_recipes_diffusion_loss(recipe):
    cli = build_cli(["--config", str(recipe),
                     "--model.init_args.losses+=mos_lightning.losses.EmbeddingKDE"], run=False)
    names = [type(t).__name__ for t in cli.model.losses]
    assert names[-1] == "EmbeddingKDE" and "DiffusionLoss" in names, names


def test_a_component_that_cannot_be_recorded_fails_when_the_task_is_built_naming_the_field():
    class Holder(FusionSolver):
        def __init__(self):
            self.inner = PerLayer([SolverRule("kv/*", ClosedForm())])  # recorded recursively: fine
            self.table = torch.ones(3)  # a tensor cannot go into a JSON report

    with pytest.raises(TypeError, match=r"init_args\.table is a Tensor"):
        FusionTask(solver=Holder())
    recorded = describe(PerLayer([SolverRule("spatial/*", NaiveSum())], ClosedForm(1e-3)))
    assert recorded["init_args"]["rules"][0]["solver"]["class_path"].endswith("NaiveSum")
    assert recorded["init_args"]["default"]["init_args"] == {"ridge": 1e-3, "towards": "base"}
    json.dumps(recorded)


def test_export_holds_copies_of_the_lora_pairs_only(tiny_model_dir, concept_dir, tmp_path):
    task = make_task(tiny_model_dir, tmp_path / "out")
    make_trainer(tmp_path, max_steps=2).fit(task, make_data(concept_dir))
    model = task.model
    exported = model.export("redball")
    frozen = {k: v.clone() for k, v in exported.unet_lora.items()}
    with torch.no_grad():  # change the live weights after export: the export must not change with them
        for p in model.unet.parameters():
            if p.requires_grad:
                p.add_(1.0)
    assert all(torch.equal(exported.unet_lora[k], frozen[k]) for k in frozen)
    # a parameter a researcher hangs on a peft layer is not written (and the export says so)
    layer = next(m for m in model.unet.modules() if isinstance(m, LoraLayer))
    layer.lora_gain = torch.nn.Parameter(torch.ones(1))
    with pytest.warns(UserWarning, match="does not hold these trainable parameters.*lora_gain"):
        again = model.export("redball")
    assert all(k.endswith((".lora_A.weight", ".lora_B.weight")) for k in again.unet_lora)


def test_every_trainable_parameter_reaches_the_optimizer(tiny_model_dir, concept_dir, tmp_path):
    task = make_task(tiny_model_dir, tmp_path / "out")
    task.trainer = make_trainer(tmp_path, max_steps=1)
    task.configure_model()
    task.model.scale = torch.nn.Parameter(torch.ones(2))  # an extra parameter of a model subclass
    groups = {g["name"]: g for g in task.trainable_groups()}
    assert list(groups) == ["embeddings", "text_encoder_lora", "unet_lora", "extra"]
    assert groups["extra"]["params"] == [task.model.scale] and groups["extra"]["lr"] == task.hparams.unet_lr
    seen = {id(p) for g in groups.values() for p in g["params"]}
    assert all(id(p) in seen for p in task.model.parameters() if p.requires_grad)


def test_loss_terms_are_set_up_with_the_built_model(tiny_model_dir, concept_dir, tmp_path):
    class ClassWordTerm(LossTerm):
        name = "class_word"

        def setup(self, task):
            self.class_ids = task.model.tokenizer(task.concept_class_word, add_special_tokens=False).input_ids
            self.tokens = list(task.model.concept_tokens.names)

        def __call__(self, output, batch):
            return output.prediction.sum() * 0.0

    term = ClassWordTerm()
    task = make_task(tiny_model_dir, tmp_path / "out", losses=[DiffusionLoss(), term])
    make_trainer(tmp_path, max_steps=1).fit(task, make_data(concept_dir))
    assert term.tokens == ["<redball1>", "<redball2>"] and len(term.class_ids) == 1


def test_a_loss_list_without_the_diffusion_loss_is_named():
    class Other(LossTerm):
        name = "other"

    with pytest.warns(UserWarning, match=r"no DiffusionLoss among the loss terms \['other'\]"):
        make_task(REPO, REPO / "unused", losses=[Other()])


def layer_problem(concepts=3, d_in=6, d_out=4, seed=0, keep=True):
    """A layer's problem built through FusionSums (as the fuser builds it), with per-concept terms kept."""
    from torch import nn

    from mos_lightning.fusion.solvers import ConceptTerm, naive_merge

    g = torch.Generator().manual_seed(seed)
    w0 = torch.randn(d_out, d_in, generator=g, dtype=torch.float64)
    layer = nn.Linear(d_in, d_out, bias=False)
    sums, deltas = FusionSums(keep_concepts=keep), []
    for i in range(concepts):
        delta = 0.3 * torch.randn(d_out, d_in, generator=g, dtype=torch.float64)
        with GramRecorder(nn.Sequential(layer), ["0"], dtype=torch.float64) as rec:
            layer(torch.randn(10 + 5 * i, d_in, generator=g))
        sums.add(rec, {"0": delta}, index=i)
        deltas.append(delta)
    gram, cross, energy, rows = sums.layer("0")
    terms = [ConceptTerm(gi, di, torch.tensor(n)) for gi, di, n in sums.concept_terms("0")] if keep else None
    return LayerProblem("0", "spatial", w0, gram, cross, energy, rows, naive_merge(w0, deltas), concepts, terms)


def test_per_concept_terms_add_up_to_the_sums_and_give_each_concepts_objective():
    problem = layer_problem()
    assert len(problem.concepts) == 3
    torch.testing.assert_close(sum(t.gram for t in problem.concepts), problem.gram)
    torch.testing.assert_close(sum(t.gram @ t.delta.T for t in problem.concepts), problem.cross)
    w = closed_form(problem.w0, problem.gram, problem.cross)
    assert sum(float(t.objective(w, problem.w0)) for t in problem.concepts) == pytest.approx(problem.objective(w))
    assert float(problem.concepts[0].objective(problem.w0 + problem.concepts[0].delta, problem.w0)) == pytest.approx(0)
    with pytest.raises(ValueError, match="keep_concepts"):
        FusionSums().concept_terms("0")


def test_per_layer_rules_route_each_layer_and_towards_naive_falls_back_to_the_naive_merge():
    problem = layer_problem()
    solver = PerLayer([SolverRule("kv/*", NaiveSum()), SolverRule("spatial/*", KeepBase())])
    assert type(solver.solver_for(problem)).__name__ == "KeepBase" and torch.equal(solver(problem), problem.w0)
    problem.stage = "text_encoder"
    assert type(solver.solver_for(problem)).__name__ == "ClosedForm"
    # an overwhelming ridge lands on its prior: the base, or the naive merge
    torch.testing.assert_close(ClosedForm(1e9, towards="naive")(problem), problem.naive_sum, atol=1e-6, rtol=0)
    torch.testing.assert_close(ClosedForm(1e9)(problem), problem.w0, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="towards"):
        ClosedForm(towards="middle")
    assert not math.isnan(problem.objective(ClosedForm(1e-3, towards="naive")(problem)))


def test_per_layer_fusion_reports_the_solver_of_every_layer(tiny_model_dir, tmp_path):
    from helpers import random_edlora

    from mos_lightning.edlora_file import save_edlora

    files = [save_edlora(tmp_path / f"{n}.safetensors", random_edlora(tiny_model_dir, n, seed=i, lora_std=0.1))
             for i, n in enumerate(("cat", "dog"))]
    solver = {"class_path": "mos_lightning.fusion.PerLayer", "init_args": {
        "rules": [{"match": "spatial/*attn1*", "solver": {"class_path": "mos_lightning.fusion.NaiveSum"}},
                  {"match": "kv/*", "solver": {"class_path": "mos_lightning.fusion.KeepBase"}}]}}
    out = tmp_path / "fusion"
    build_cli(["predict", "--config", str(REPO / "configs/demo/fusion.yaml"),
               "--model.init_args.base_model", str(tiny_model_dir), "--model.init_args.output_dir", str(out),
               "--model.init_args.num_inference_steps", "2", "--trainer.enable_progress_bar", "false",
               "--model.init_args.held_out_prompts", "[]", "--model.init_args.base_prompts", "[]",
               "--data.init_args.concepts", json.dumps([{"path": str(f)} for f in files]),
               "--model.init_args.solver", json.dumps(solver)])
    report = json.loads((out / "fusion_report.json").read_text())
    assert report["solver"]["init_args"]["rules"][1]["solver"]["class_path"] == "mos_lightning.fusion.solvers.KeepBase"
    solved = {r["layer"]: r["solver"] for rows in report["layers"].values() for r in rows}
    assert {s for n, s in solved.items() if ".attn1." in n} == {"NaiveSum"}
    assert {r["solver"] for r in report["layers"]["kv"]} == {"KeepBase"}
    assert {r["solver"] for r in report["layers"]["text_encoder"]} == {"ClosedForm"}
    assert all(r["objective"] == pytest.approx(r["objective_base"]) for r in report["layers"]["kv"])
