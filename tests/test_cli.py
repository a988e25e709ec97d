from pathlib import Path

import pytest
import torch
import yaml

from mos_lightning.cli import build_cli
from mos_lightning.edlora_file import load_edlora

from conftest import DEMO_CONCEPTS, REPO

CONFIGS = sorted(p for p in (REPO / "configs").rglob("*.yaml") if p.parent.name not in ("concepts", "scenes"))
OVERLAYS = sorted((REPO / "configs" / "demo" / "concepts").glob("*.yaml"))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_every_shipped_config_parses_against_the_code(config, tmp_path):
    data = yaml.safe_load(config.read_text())
    if "return_predictions" in data:  # a predict-subcommand key; without a subcommand only the rest parses
        data.pop("return_predictions")
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
