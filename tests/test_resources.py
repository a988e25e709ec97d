"""Shipped configs by name, and the files they name found from any folder (the wheel's layout and a clone's)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO

from mos_lightning.cli import build_cli
from mos_lightning.resources import config_by_name, locate, resolve_config_arguments


def test_configs_by_name_and_paths_from_elsewhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Path(config_by_name("world/edlora")).samefile(REPO / "configs/world/edlora.yaml")
    assert resolve_config_arguments(["fit", "--config=edlora/object"])[1].endswith("configs/edlora/object.yaml")
    assert Path(locate("demo/world/base")).samefile(REPO / "demo/world/base")
    assert locate("outputs/world/x") == "outputs/world/x"  # not shipped: left as written
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "world").mkdir()
    assert locate("demo/world") == "demo/world"  # the user's own file at that path wins


def test_files_nested_in_a_config_are_found_from_another_folder(tmp_path, monkeypatch):
    """The evaluation's per-concept prompt files sit inside a list of entries (namespaces once parsed)."""
    from jsonargparse import Namespace

    from mos_lightning.resources import relocate_namespace

    monkeypatch.chdir(tmp_path)
    entry = Namespace(name="buoyring", prompt_file="configs/world/prompts/eval.yaml")
    config = Namespace(model=Namespace(init_args=Namespace(clip_model="demo/world/clip", output_dir="outputs/eval")),
                       data=Namespace(init_args=Namespace(concepts=[entry, {"prompt_file": "configs/world/prompts/held_out.yaml"}])))
    relocate_namespace(config)
    assert Path(config.model.init_args.clip_model).samefile(REPO / "demo/world/clip")
    assert config.model.init_args.output_dir == "outputs/eval"
    assert Path(entry.prompt_file).samefile(REPO / "configs/world/prompts/eval.yaml")
    assert Path(config.data.init_args.concepts[1]["prompt_file"]).is_file()


def test_an_unknown_config_name_is_left_for_the_parser(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        build_cli(["fit", "--config", "world/nosuch"], run=False)
