from pathlib import Path

import pytest
import torch
import yaml
from conftest import DEMO_CONCEPTS, REPO

from mos_lightning.cli import build_cli
from mos_lightning.edlora_file import load_edlora

OVERLAYS_ONLY = ("small_machine",)  # layered after a recipe, never used alone
CONFIGS = sorted(p for p in (REPO / "configs").rglob("*.yaml")
                 if p.parent.name not in ("concepts", "scenes", "prompts") and p.stem not in OVERLAYS_ONLY)
OVERLAYS = sorted((REPO / "configs" / "demo" / "concepts").glob("*.yaml"))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_every_shipped_config_parses_against_the_code(config, tmp_path):
    data = yaml.safe_load(config.read_text())
    if "return_predictions" in data or "verbose" in data:  # subcommand keys; without a subcommand the rest parses
        data.pop("return_predictions", None)
        data.pop("verbose", None)
        config = tmp_path / config.name
        config.write_text(yaml.safe_dump(data))
    cli = build_cli(["--config", str(config), "--trainer.accelerator", "cpu", "--trainer.devices", "1",
                     "--trainer.strategy", "auto", "--trainer.logger", "false"], run=False)
    assert cli.model is not None and cli.datamodule is not None


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.stem)
def test_demo_concept_overlays_select_their_concept(overlay):
    cli = build_cli(["--config", str(REPO / "configs/demo/edlora.yaml"), "--config", str(overlay),
                     "--trainer.logger", "false"], run=False)
    assert cli.model.hparams.concept_name == overlay.stem
    assert Path(cli.datamodule.hparams.concept_dir).name == overlay.stem


def test_demo_config_fits_end_to_end_through_the_cli(tiny_model_dir, tmp_path):
    out = tmp_path / "edlora"
    build_cli([
        "fit", "--config", str(REPO / "configs/demo/edlora.yaml"),
        "--model.init_args.base_model", str(tiny_model_dir),
        "--model.init_args.output_dir", str(out),
        "--data.init_args.concept_dir", str(DEMO_CONCEPTS / "bluecube"),
        "--model.init_args.concept_name", "bluecube",
        "--model.init_args.tokens", '["<bluecube1>", "<bluecube2>"]',
        "--trainer.max_steps", "4",
        "--trainer.default_root_dir", str(tmp_path / "logs"),
        "--trainer.enable_progress_bar", "false",
    ])
    edlora = load_edlora(out / "edlora.safetensors")
    assert list(edlora.concepts) == ["bluecube"] and edlora.extra["global_step"] == 4
    assert (tmp_path / "logs" / "lightning_logs" / "version_0" / "config.yaml").is_file()
    assert all(torch.isfinite(e).all() for e in edlora.embeddings.values())


def test_optimizer_and_schedule_are_injected_from_the_command_line(tiny_model_dir, tmp_path):
    """LightningCLI's callable pattern: the task hands its three parameter groups (each with its rate) to the
    configured optimizer class and the optimizer to the configured schedule."""
    cli = build_cli([
        "fit", "--config", str(REPO / "configs/demo/edlora.yaml"),
        "--model.init_args.base_model", str(tiny_model_dir), "--model.init_args.output_dir", str(tmp_path / "out"),
        "--model.init_args.fusion_stats", "false", "--trainer.callbacks", "[]", "--trainer.logger", "false",
        "--model.init_args.optimizer", "torch.optim.SGD", "--model.init_args.optimizer.init_args.momentum", "0.5",
        "--model.init_args.lr_scheduler", "torch.optim.lr_scheduler.ConstantLR",
        "--model.init_args.lr_scheduler.init_args.factor", "0.5",
        "--trainer.max_steps", "2", "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(tmp_path / "logs"),
    ])
    optimizer = cli.trainer.optimizers[0]
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["momentum"] == 0.5
    assert [g["name"] for g in optimizer.param_groups] == ["embeddings", "text_encoder_lora", "unet_lora"]
    assert [g["initial_lr"] for g in optimizer.param_groups] == [0.005, 0.0001, 0.001]  # the demo config's rates
    assert [g["lr"] for g in optimizer.param_groups] == [0.0025, 0.00005, 0.0005]  # ConstantLR(factor 0.5)
    assert cli.model.hparams.optimizer.startswith("torch.optim.sgd.SGD")


NOISE = ("requires torchvision", "💡 Tip", "GPU available", "TPU available", "Loading weights",
         "Loading pipeline components", "Seed set to", "smaller than the logging interval", "Writing model shards",
         "Epoch ", "Warning", "warn(")


def test_a_run_prints_no_library_noise(tiny_model_dir, tmp_path):
    """What a user sees on the console: the run's own lines, none of the libraries' notices."""
    import json
    import os
    import subprocess
    import sys

    from helpers import random_edlora

    from mos_lightning.edlora_file import save_edlora

    files = [str(save_edlora(tmp_path / f"{n}.safetensors", random_edlora(tiny_model_dir, n, seed=i, lora_std=0.1)))
             for i, n in enumerate(("cat", "dog"))]
    result = subprocess.run(
        [sys.executable, "-m", "mos_lightning", "predict", "--config", str(REPO / "configs/demo/fusion.yaml"),
         "--model.init_args.base_model", str(tiny_model_dir), "--model.init_args.output_dir", str(tmp_path / "f"),
         "--model.init_args.num_inference_steps", "2", "--data.init_args.concepts",
         json.dumps([{"path": f} for f in files])],
        capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "fused 2 concept(s)" in output
    assert [n for n in NOISE if n in output] == []
    tuning = subprocess.run(
        [sys.executable, "-m", "mos_lightning", "fit", "--config", str(REPO / "configs/demo/edlora.yaml"),
         "--model.init_args.base_model", str(tiny_model_dir), "--model.init_args.output_dir", str(tmp_path / "e"),
         "--data.init_args.concept_dir", str(DEMO_CONCEPTS / "redball"), "--trainer.max_steps", "4",
         "--trainer.default_root_dir", str(tmp_path / "logs")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert tuning.returncode == 0, tuning.stderr[-3000:]
    output = tuning.stdout + tuning.stderr
    assert "wrote " in output and "tuning (steps)" in output
    assert [n for n in NOISE if n in output] == []


SINGLE_DEVICE = [c for c in CONFIGS if c.parent.name in ("sample", "fusion", "regional", "eval")]


@pytest.mark.parametrize("config", SINGLE_DEVICE, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_single_device_configs_resolve_on_a_cpu_as_shipped(config, tmp_path):
    """Sampling, fusion, regional and evaluation configs run wherever they are (accelerator: auto)."""
    data = yaml.safe_load(config.read_text())
    data.pop("return_predictions", None)
    data.pop("verbose", None)
    (tmp_path / config.name).write_text(yaml.safe_dump(data))
    cli = build_cli(["--config", str(tmp_path / config.name), "--trainer.logger", "false"], run=False)
    expected = "CUDAAccelerator" if torch.cuda.is_available() else "CPUAccelerator"
    assert cli.trainer.accelerator.__class__.__name__ == expected


TUNING = [c for c in CONFIGS if c.parent.name == "edlora"]


@pytest.mark.parametrize("config", TUNING, ids=lambda p: p.stem)
def test_tuning_recipes_run_on_a_cpu_with_their_gpu_settings_dropped(config, capsys):
    """The recipes are written for GPUs (bf16, DDP over every GPU); on a CPU they resolve to one float32 process,
    and say so; the small-machine overlay layers on each of them."""
    cli = build_cli(["--config", str(config), "--trainer.logger", "false"], run=False)
    if torch.cuda.is_available():
        pytest.skip("checks the CPU fallback")
    assert cli.trainer.accelerator.__class__.__name__ == "CPUAccelerator" and cli.trainer.num_devices == 1
    assert cli.trainer.precision == "32-true" and cli.model.hparams.frozen_dtype == "float32"
    assert "no GPU: running on the CPU with trainer.precision bf16-mixed → 32-true" in capsys.readouterr().out
    small = build_cli(["--config", str(config), "--config", str(REPO / "configs/edlora/small_machine.yaml"),
                       "--trainer.logger", "false"], run=False)
    assert small.datamodule.hparams.resolution == 256 and small.trainer.precision == "32-true"


def test_help_shows_this_projects_tasks_options_and_configs(capsys):
    for subcommand, expected in (("fit", ("EDLoRATask", "lora_rank", "ConceptDataModule", "edlora/object", "world/edlora")),
                                 ("predict", ("SamplingTask", "FusionTask", "solver", "sample/edlora", "world/fusion")),
                                 ("test", ("EvalTask", "clip_model", "EvalDataModule", "eval/table1", "world/eval"))):
        with pytest.raises(SystemExit):
            build_cli([subcommand, "--help"])
        shown = capsys.readouterr().out
        assert all(e in shown for e in expected), (subcommand, [e for e in expected if e not in shown])
        assert "StepProgressBar" in shown


def test_the_progress_bar_counts_steps_of_max_steps(tiny_model_dir, tmp_path, capsys):
    """Lightning's own bar read 'Epoch 19/-2' on step-based runs; ours counts optimizer steps."""
    build_cli(["fit", "--config", str(REPO / "configs/demo/edlora.yaml"),
               "--model.init_args.base_model", str(tiny_model_dir), "--model.init_args.output_dir", str(tmp_path / "o"),
               "--model.init_args.fusion_stats", "false", "--data.init_args.concept_dir", str(DEMO_CONCEPTS / "redball"),
               "--trainer.max_steps", "7", "--trainer.callbacks", "[]", "--trainer.logger", "false",
               "--trainer.default_root_dir", str(tmp_path / "logs")])
    shown = capsys.readouterr()
    text = shown.out + shown.err
    assert "tuning (steps)" in text and "7/7" in text
    assert "Epoch" not in text and "/-2" not in text


WORLD_OVERLAYS = sorted((REPO / "configs" / "world" / "concepts").glob("*.yaml"))


@pytest.mark.parametrize("overlay", WORLD_OVERLAYS, ids=lambda p: p.stem)
def test_world_concept_overlays_select_a_world_concept(overlay):
    from mos_lightning.world import CONCEPTS

    cli = build_cli(["--config", str(REPO / "configs/world/edlora.yaml"), "--config", str(overlay),
                     "--trainer.logger", "false"], run=False)
    assert cli.model.hparams.concept_name == overlay.stem and overlay.stem in CONCEPTS
    assert cli.model.hparams.initializers[1] == CONCEPTS[overlay.stem].cls  # the class word starts the second token
    assert Path(cli.datamodule.hparams.concept_dir).name == overlay.stem
