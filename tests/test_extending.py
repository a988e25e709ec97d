"""EXTENDING.md's examples, run as a user would: each block written to its file, chosen through the CLI."""

from __future__ import annotations

import importlib
import json
import re
import sys

import pytest
import torch
import yaml
from conftest import DEMO_CONCEPTS, REPO
from helpers import random_edlora

from mos_lightning.cli import build_cli
from mos_lightning.edlora_file import save_edlora

BLOCK = re.compile(r"```python\n# (?P<file>\w+\.py)\n(?P<code>.*?)```", re.S)


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    """EXTENDING.md's Python blocks as importable modules (as if saved beside the user's configs)."""
    folder = tmp_path_factory.mktemp("extending")
    blocks = {m["file"]: m["code"] for m in BLOCK.finditer((REPO / "EXTENDING.md").read_text())}
    assert sorted(blocks) == ["concept_weighted.py", "gained_lora.py", "loss_by_timestep.py", "min_snr.py",
                              "ridge_to_naive.py"]
    for name, code in blocks.items():
        assert len(code.strip().splitlines()) <= 30, f"{name} should stay a short example"
        (folder / name).write_text(code)
    sys.path.insert(0, str(folder))
    yield {name[:-3]: importlib.import_module(name[:-3]) for name in blocks}
    sys.path.remove(str(folder))


def fit_args(tiny_model_dir, tmp_path, *extra):
    return ["fit", "--config", str(REPO / "configs/demo/edlora.yaml"),
            "--model.init_args.base_model", str(tiny_model_dir), "--model.init_args.output_dir", str(tmp_path / "out"),
            "--model.init_args.fusion_stats", "false", "--data.init_args.concept_dir", str(DEMO_CONCEPTS / "redball"),
            "--trainer.max_steps", "3", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
            "--trainer.callbacks", "[]", *extra]


def test_min_snr_loss_term_trains_from_yaml_and_weights_by_timestep(examples, tiny_model_dir, tmp_path):
    config = tmp_path / "min_snr.yaml"
    config.write_text(yaml.safe_dump({"model": {"init_args": {"losses": [
        {"class_path": "min_snr.MinSNRLoss", "init_args": {"gamma": 5.0}}]}}}))
    cli = build_cli(fit_args(tiny_model_dir, tmp_path, "--config", str(config)))
    task = cli.model
    assert type(task.losses[0]).__name__ == "MinSNRLoss" and task.hparams.losses[0]["init_args"] == {"gamma": 5.0}
    assert (tmp_path / "out" / "edlora.safetensors").is_file()
    # with γ above every SNR the weights are 1: the plain (channel-mean) MSE; with a small γ, less
    from mos_lightning.losses import DiffusionLoss

    batch = {"pixel_values": torch.rand(2, 3, 64, 64) * 2 - 1, "caption": ["a photo of <TOK>"] * 2,
             "valid_mask": torch.ones(2, 1, 8, 8)}  # the tiny model's VAE downsamples by 8
    with torch.no_grad():
        output = task.model(batch, timesteps=torch.tensor([10, 900]))
    plain = DiffusionLoss(channels="mean")(output, batch)
    torch.testing.assert_close(examples["min_snr"].MinSNRLoss(gamma=1e12)(output, batch), plain)
    assert examples["min_snr"].MinSNRLoss(gamma=0.01)(output, batch) < plain


def test_ridge_to_naive_solver_is_chosen_from_yaml_and_reported(examples, tiny_model_dir, tmp_path):
    files = [save_edlora(tmp_path / f"{n}.safetensors", random_edlora(tiny_model_dir, n, seed=i, lora_std=0.1))
             for i, n in enumerate(("cat", "dog"))]
    reports = {}
    for ridge in ("0.001", "1e9"):
        out = tmp_path / f"fusion-{ridge}"
        build_cli(["predict", "--config", str(REPO / "configs/demo/fusion.yaml"),
                   "--model.init_args.base_model", str(tiny_model_dir), "--model.init_args.output_dir", str(out),
                   "--model.init_args.num_inference_steps", "3", "--trainer.enable_progress_bar", "false",
                   "--data.init_args.concepts", json.dumps([{"path": str(f)} for f in files]),
                   "--model.init_args.solver", "ridge_to_naive.RidgeToNaive",
                   "--model.init_args.solver.init_args.ridge", ridge,
                   # the report's held-out and base-drift checks off: this test is about the solve
                   "--model.init_args.held_out_prompts", "[]", "--model.init_args.base_prompts", "[]"])
        reports[ridge] = json.loads((out / "fusion_report.json").read_text())
    assert reports["0.001"]["solver"] == {"class_path": "ridge_to_naive.RidgeToNaive", "init_args": {"ridge": 0.001}}
    for stage, rows in reports["0.001"]["layers"].items():
        assert sum(r["objective"] for r in rows) < sum(r["objective_naive"] for r in rows), stage
    for rows in reports["1e9"]["layers"].values():  # an overwhelming pull lands on the naive merge
        for row in rows:
            assert row["objective"] == pytest.approx(row["objective_naive"], rel=1e-3, abs=1e-9), row["layer"]


def test_loss_by_timestep_callback_reads_the_step_output(examples, tiny_model_dir, tmp_path):
    path = tmp_path / "bands.json"
    callback = json.dumps([{"class_path": "loss_by_timestep.LossByTimestep", "init_args": {"path": str(path)}}])
    build_cli(fit_args(tiny_model_dir, tmp_path, "--trainer.callbacks", callback))
    bands = json.loads(path.read_text())
    assert bands and all(int(k) % 100 == 0 and v > 0 for k, v in bands.items())


def test_a_model_subclass_with_an_extra_parameter_trains_exports_and_samples(examples, tiny_model_dir, tmp_path):
    config = tmp_path / "gained.yaml"
    config.write_text(yaml.safe_dump({"model": {"class_path": "gained_lora.GainedEDLoRATask"}}))
    cli = build_cli(fit_args(tiny_model_dir, tmp_path, "--config", str(config), "--trainer.max_steps", "4"))
    model = cli.model.model
    assert type(model).__name__ == "GainedEDLoRA" and not model.unexported_parameters()
    groups = {g["name"]: g for g in cli.model.trainable_groups()}
    assert groups["extra"]["lr"] == 1e-2 and groups["extra"]["params"] == [model.gains]
    assert not torch.equal(model.gains.detach(), torch.ones_like(model.gains))  # the gains trained
    # the file holds the gains folded into B: loaded into a plain pipeline it gives the live model's predictions
    from mos_lightning.attention import install_layerwise_processors
    from mos_lightning.edlora_file import load_edlora
    from mos_lightning.lora import lora_modules
    from mos_lightning.pipelines import EDLoRAPipeline

    edlora = load_edlora(tmp_path / "out" / "edlora.safetensors")
    live = model.unet.get_submodule(model.lora_layers[0])
    a, b = lora_modules(edlora.unet_lora)[model.lora_layers[0]]
    torch.testing.assert_close(b, live.lora_B["edlora"].weight.detach() * model.gains[0].detach())
    pipe = EDLoRAPipeline.from_pretrained(tiny_model_dir, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_edlora(edlora, scale=1.0)
    install_layerwise_processors(pipe.unet)  # a direct UNet call reads the layer copies, as the pipeline's does
    x, t = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([500])
    with torch.no_grad():
        states = pipe.encode_layerwise(["a photo of <TOK>"], "cpu")
        expected = model.unet(x, t, model.encode(["a photo of <TOK>"])[0]).sample
        torch.testing.assert_close(pipe.unet(x, t, states).sample, expected, atol=1e-4, rtol=1e-4)


def test_a_concept_weighted_solver_gets_each_concepts_terms_and_reports_them(examples, tiny_model_dir, tmp_path):
    files = [save_edlora(tmp_path / f"{n}.safetensors", random_edlora(tiny_model_dir, n, seed=i, lora_std=0.1))
             for i, n in enumerate(("cat", "dog"))]
    out = tmp_path / "fusion"
    build_cli(["predict", "--config", str(REPO / "configs/demo/fusion.yaml"),
               "--model.init_args.base_model", str(tiny_model_dir), "--model.init_args.output_dir", str(out),
               "--model.init_args.num_inference_steps", "3", "--trainer.enable_progress_bar", "false",
               "--model.init_args.held_out_prompts", "[]",
               "--data.init_args.concepts", json.dumps([{"path": str(f)} for f in files]),
               "--model.init_args.solver", "concept_weighted.ConceptWeighted"])
    report = json.loads((out / "fusion_report.json").read_text())
    for stage, rows in report["layers"].items():
        for row in rows:
            assert row["solver"] == "ConceptWeighted", row["layer"]
            assert len(row["concept_weights"]) == 2 and sum(row["concept_weights"]) == pytest.approx(1.0)
        # a weighted optimum: never worse than keeping the base weights on the plain objective
        assert all(r["objective"] <= r["objective_base"] * (1 + 1e-9) for r in rows), stage
