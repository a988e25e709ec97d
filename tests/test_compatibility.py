"""Files written by the previous release (0.1.0, see tests/data/release_0.1.0/README.md) still work: its ED-LoRA
loads with the same tensors, its fusion statistics are reused (not recorded again) by a fusion with the same
settings, and its fusion report (format 1, before the held-out check) renders on the results page."""

from __future__ import annotations

import shutil

import torch
from conftest import REPO
from safetensors.torch import load_file

from mos_lightning.edlora_file import load_edlora
from mos_lightning.fusion import ConceptSpec, Fuser, FusionSettings, load_concepts
from mos_lightning.fusion.stats_file import load_record, stats_path
from mos_lightning.pipelines import EDLoRAPipeline
from mos_lightning.results_page import write_results_page

RELEASE = REPO / "tests" / "data" / "release_0.1.0"
WORLD_BASE = "demo/world/base"


def test_a_release_0_1_0_edlora_loads_with_its_tensors():
    edlora = load_edlora(RELEASE / "edlora.safetensors")
    assert edlora.token_names == ["<buoyring1>", "<buoyring2>"]
    pipe = EDLoRAPipeline.from_pretrained(str(REPO / WORLD_BASE), local_files_only=True, safety_checker=None,
                                          requires_safety_checker=False)
    pipe.load_edlora(edlora)
    stored = load_file(str(RELEASE / "edlora.safetensors"))
    table = dict(zip(pipe.concept_tokens.names, pipe.concept_tokens.weight, strict=True))
    embeddings = [k for k in stored if "buoyring1" in k]
    assert embeddings and torch.equal(table["<buoyring1>"], stored[embeddings[0]].to(table["<buoyring1>"].dtype))


def test_release_0_1_0_fusion_statistics_are_reused(tmp_path):
    for name in ("edlora.safetensors", "edlora.fusion-stats.safetensors"):
        shutil.copy(RELEASE / name, tmp_path / name)
    pipe = EDLoRAPipeline.from_pretrained(str(REPO / WORLD_BASE), local_files_only=True, safety_checker=None,
                                          requires_safety_checker=False)
    # statistics written at tuning time (fusion_stats: true) use the default fusion settings; the tuning recorded
    # its base by the absolute path it had on the machine that made the file
    fuser = Fuser(pipe, load_concepts([ConceptSpec(str(tmp_path / "edlora.safetensors"))]), FusionSettings(),
                  base_model="/tmp/v010/demo/world/base")
    record, why = load_record(stats_path(fuser.concepts[0].source), fuser.statistics_key(0))
    assert record is not None, why


def test_a_release_0_1_0_fusion_report_renders(tmp_path):
    (tmp_path / "fusion").mkdir()
    shutil.copy(RELEASE / "fusion_report.json", tmp_path / "fusion" / "fusion_report.json")
    page = write_results_page(tmp_path).read_text()
    assert "Fusion" in page and "buoyring" in page


def test_scene_files_with_and_without_a_version_load_and_a_newer_one_is_refused(tmp_path):
    import pytest
    import yaml

    from mos_lightning.data.scenes import read_scenes

    scenes = yaml.safe_load((REPO / "configs/world/scenes/two.yaml").read_text())
    assert "version" not in scenes  # 0.1.0's scene files have none
    assert read_scenes(REPO / "configs/world/scenes/two.yaml")
    shutil.copy(REPO / "configs/world/scenes/buoyring-and-moonball.sketch.png", tmp_path)  # its condition's image
    (tmp_path / "v1.yaml").write_text(yaml.safe_dump({**scenes, "version": 1}))
    assert len(read_scenes(tmp_path / "v1.yaml")) == len(scenes["scenes"])
    (tmp_path / "v9.yaml").write_text(yaml.safe_dump({**scenes, "version": 9}))
    with pytest.raises(ValueError, match="scene format version 9.*upgrade"):
        read_scenes(tmp_path / "v9.yaml")
