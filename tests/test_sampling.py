import json

import numpy as np
import pytest
from conftest import REPO
from helpers import random_edlora
from PIL import Image

from mos_lightning.cli import build_cli
from mos_lightning.edlora_file import save_edlora


@pytest.fixture(scope="module")
def edlora_file(tiny_model_dir, tmp_path_factory):
    return save_edlora(tmp_path_factory.mktemp("edlora") / "cat.safetensors", random_edlora(tiny_model_dir, "cat", lora_std=0.1))


def predict_args(model_dir, edlora, out, *extra):
    return [
        "predict", "--config", str(REPO / "configs/demo/sample.yaml"),
        "--model.init_args.base_model", str(model_dir),
        "--model.init_args.edloras", f"[{edlora}]",
        "--model.init_args.num_inference_steps", "4",
        "--data.init_args.prompts", '["a photo of <TOK>", "<TOK> in the snow", "a <cat> on a table"]',
        "--data.init_args.num_samples", "2",
        "--data.init_args.output_dir", str(out),
        "--trainer.accelerator", "cpu",
        "--trainer.enable_progress_bar", "false",
        *extra,
    ]


def images(folder):
    return {p.relative_to(folder).as_posix(): np.asarray(Image.open(p)) for p in sorted(folder.glob("0*/*.png"))}


def test_predict_writes_named_pngs_with_metadata_and_resumes(tiny_model_dir, edlora_file, tmp_path):
    out = tmp_path / "samples"
    build_cli(predict_args(tiny_model_dir, edlora_file, out, "--data.init_args.batch_size", "4"))
    first = images(out)
    assert sorted(first) == [f"{p}/seed{s:06d}.png" for p in ("0000-a-photo-of-tok", "0001-tok-in-the-snow",
                                                              "0002-a-cat-on-a-table") for s in (0, 1)]
    png = Image.open(out / "0001-tok-in-the-snow" / "seed000001.png")
    assert png.text["prompt"] == "<TOK> in the snow" and png.text["seed"] == "1" and png.size == (64, 64)
    assert not np.array_equal(first["0000-a-photo-of-tok/seed000000.png"], first["0000-a-photo-of-tok/seed000001.png"])
    assert Image.open(out / "grids" / "0000-a-photo-of-tok.png").size == (128, 64)
    # interrupted run: one image lost; the rerun makes exactly that one, with the same pixels
    lost = out / "0002-a-cat-on-a-table" / "seed000000.png"
    lost.unlink()
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("0*/*.png")}
    cli = build_cli(predict_args(tiny_model_dir, edlora_file, out, "--data.init_args.batch_size", "1"))
    assert len(cli.datamodule.items) == 1 and (out / "config.yaml").is_file()
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    again = images(out)
    # batch 4 vs batch 1: same (prompt, seed) → same image (allow 1 level for batched-kernel rounding)
    assert np.abs(again[lost.relative_to(out).as_posix()].astype(int) - first[lost.relative_to(out).as_posix()]).max() <= 1


def test_predict_on_two_simulated_nodes_equals_one_process(tiny_model_dir, edlora_file, tmp_path):
    from nodes import run_on_nodes

    build_cli(predict_args(tiny_model_dir, edlora_file, tmp_path / "one", "--data.init_args.batch_size", "2"))
    run_on_nodes(predict_args(tiny_model_dir, edlora_file, tmp_path / "two", "--data.init_args.batch_size", "2"))
    one, two = images(tmp_path / "one"), images(tmp_path / "two")
    assert one.keys() == two.keys() and len(one) == 6
    for name in one:
        assert np.abs(one[name].astype(int) - two[name]).max() <= 1, name
    # written once per job: one config and one record of the inputs, no leftovers of a second writer
    assert sorted(p.name for p in (tmp_path / "two").iterdir() if p.is_file()) == sorted(
        p.name for p in (tmp_path / "one").iterdir() if p.is_file())


def test_missing_edlora_file_fails_before_the_model_loads(tiny_model_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        build_cli(predict_args(tiny_model_dir, tmp_path / "nope.safetensors", tmp_path / "out"))


def test_prompts_naming_unknown_concepts_are_refused_before_the_model_loads(tiny_model_dir, edlora_file, tmp_path):
    """A typo in a concept name would sample without the concept, silently: refuse it, naming what is known."""
    for prompt, bad in (("a photo of <nosuch>", "<nosuch>"), ("a <TOK> and a <TOK2>", "<TOK2>")):
        args = predict_args(tiny_model_dir, edlora_file, tmp_path / "out", "--data.init_args.prompts", json.dumps([prompt]))
        with pytest.raises(ValueError, match=f"'{bad}'.* are not concepts or tokens of the model"):
            build_cli(args)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.png"))
