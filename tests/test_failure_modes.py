"""Bad inputs and faults a careful user hits (issue 15): each gets a clear error before expensive work, and nothing
finished is lost or silently replaced."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
from conftest import DEMO_CONCEPTS, REPO

from mos_lightning.cli import build_cli
from mos_lightning.edlora_file import load_edlora


def fit_args(model_dir, out, root, *extra):
    return ["fit", "--config", str(REPO / "configs/demo/edlora.yaml"),
            "--model.init_args.base_model", str(model_dir), "--model.init_args.output_dir", str(out),
            "--model.init_args.fusion_stats", "false", "--data.init_args.concept_dir", str(DEMO_CONCEPTS / "redball"),
            "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false",
            "--trainer.callbacks", "[]", *extra]


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_resume_obeys_the_command_line_and_leaves_finished_work_alone(tiny_model_dir, tmp_path):
    """Lightning applied the checkpoint's settings over the command line: the resumed run wrote into the old
    output folder, replacing its finished ED-LoRA, and the new folder was never made."""
    old, new = tmp_path / "old", tmp_path / "new"
    build_cli(fit_args(tiny_model_dir, old, tmp_path / "logs", "--trainer.max_steps", "3"))
    checkpoint = next((tmp_path / "logs").rglob("*.ckpt"))
    finished = digest(old / "edlora.safetensors")

    with pytest.warns(UserWarning, match=r"output_dir: .*old → .*new"):
        build_cli(fit_args(tiny_model_dir, new, tmp_path / "logs2", "--trainer.max_steps", "5",
                           "--ckpt_path", str(checkpoint)))
    assert load_edlora(new / "edlora.safetensors").extra["global_step"] == 5
    assert digest(old / "edlora.safetensors") == finished

    with pytest.raises(ValueError, match="other shapes.*lora_rank"):  # a setting the trained tensors cannot follow
        build_cli(fit_args(tiny_model_dir, tmp_path / "rank8", tmp_path / "logs3", "--trainer.max_steps", "5",
                           "--model.init_args.lora_rank", "8", "--ckpt_path", str(checkpoint)))


def test_an_unwritable_output_folder_fails_before_the_model_loads(tiny_model_dir, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cli = build_cli(fit_args(tiny_model_dir, blocker / "edlora", tmp_path / "logs", "--trainer.max_steps", "3")[1:],
                    run=False)
    with pytest.raises(PermissionError, match="cannot write results to .*a-file.*--model.init_args.output_dir"):
        cli.trainer.fit(cli.model, cli.datamodule)
    assert cli.model.model is None  # refused before the base model loaded


# ------------------------------------------------------------------ result folders describe their contents
def test_a_rerun_reuses_only_images_made_with_the_same_settings(tiny_model_dir, tmp_path):
    from helpers import random_edlora
    from PIL import Image
    from test_sampling import predict_args

    from mos_lightning.edlora_file import save_edlora

    cat, dog = (save_edlora(tmp_path / f"{n}.safetensors", random_edlora(tiny_model_dir, n, seed=i, lora_std=0.3))
                for i, n in enumerate(("cat", "dog")))
    out = tmp_path / "samples"
    one = ("--data.init_args.prompts", '["a photo of <TOK>"]')
    build_cli(predict_args(tiny_model_dir, cat, out, *one))
    made = {p: digest(p) for p in out.glob("0*/*.png")}
    build_cli(predict_args(tiny_model_dir, cat, out, *one))  # same settings: a resume, nothing remade
    assert {p: digest(p) for p in out.glob("0*/*.png")} == made
    with pytest.raises(ValueError, match=r"already holds 2 of these images, made with other settings.*edloras"):
        build_cli(predict_args(tiny_model_dir, dog, out, *one))
    assert {p: digest(p) for p in out.glob("0*/*.png")} == made and "cat.safetensors" in (out / "config.yaml").read_text()
    build_cli(predict_args(tiny_model_dir, dog, out, *one, "--data.init_args.skip_existing", "false"))
    assert all(digest(p) != made[p] for p in made)  # remade with the new file, and the config says so
    assert "dog.safetensors" in (out / "config.yaml").read_text()
    assert all(Image.open(p).size == (64, 64) for p in made)


def _fuse(tiny_model_dir, files, out, *extra):
    return build_cli(["predict", "--config", str(REPO / "configs/demo/fusion.yaml"),
                      "--model.init_args.base_model", str(tiny_model_dir), "--model.init_args.output_dir", str(out),
                      "--model.init_args.num_inference_steps", "2", "--model.init_args.base_prompts", "[]",
                      "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
                      "--data.init_args.concepts", json.dumps([{"path": str(f)} for f in files]), *extra])


def test_fusion_model_report_and_config_change_together(tiny_model_dir, tmp_path, monkeypatch):
    """The report and config travel inside model/ (one atomic swap); a fusion that fails while writing leaves the
    old model with its own report and config, no report beside it that describes another model, no temporaries."""
    from helpers import random_edlora

    import mos_lightning.fusion.output as output
    from mos_lightning.edlora_file import save_edlora

    files = [save_edlora(tmp_path / f"{n}.safetensors", random_edlora(tiny_model_dir, n, seed=i, lora_std=0.1))
             for i, n in enumerate(("cat", "dog"))]
    out = tmp_path / "fusion"
    _fuse(tiny_model_dir, files[:1], out)
    inner = json.loads((out / "model" / "fusion_report.json").read_text())
    assert inner == json.loads((out / "fusion_report.json").read_text()) and list(inner["fidelity"]) == ["cat"]
    assert (out / "model" / "config.yaml").read_text() == (out / "config.yaml").read_text()
    assert "cat.safetensors" in (out / "config.yaml").read_text()
    assert "cat · unet" in (out / "index.html").read_text()  # the results page with the fidelity chart
    weights = digest(out / "model" / "unet" / "diffusion_pytorch_model.safetensors")

    def broken_save(path, edlora):  # the writer dies half-way through the concepts' token table
        path.write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(output, "save_edlora", broken_save)
    with pytest.raises(OSError, match="disk full"):
        _fuse(tiny_model_dir, files, out)
    assert digest(out / "model" / "unet" / "diffusion_pytorch_model.safetensors") == weights
    assert list(json.loads((out / "model" / "fusion_report.json").read_text())["fidelity"]) == ["cat"]
    assert "dog" not in (out / "model" / "config.yaml").read_text()
    assert not (out / "fusion_report.json").exists() and not (out / "config.yaml").exists()
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


# ------------------------------------------------------------------ atomic writes and leftovers
def test_an_interrupted_edlora_write_leaves_the_old_file_intact(tmp_path, monkeypatch, tiny_model_dir):
    """Writing the file directly instead of through the temporary path would leave half a file under the real name."""
    import safetensors.torch
    from helpers import random_edlora

    import mos_lightning.edlora_file as edlora_file

    path = edlora_file.save_edlora(tmp_path / "cat.safetensors", random_edlora(tiny_model_dir, "cat"))
    before = digest(path)

    def dies_half_way(tensors, filename, metadata=None):
        safetensors.torch.save_file(tensors, filename, metadata=metadata)
        with open(filename, "r+b") as f:
            f.truncate(os.path.getsize(filename) // 2)
        raise KeyboardInterrupt  # e.g. Ctrl+C while the bytes go out

    monkeypatch.setattr(edlora_file, "save_file", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        edlora_file.save_edlora(path, random_edlora(tiny_model_dir, "cat", seed=1))
    assert digest(path) == before and [p.name for p in tmp_path.iterdir()] == ["cat.safetensors"]
    with pytest.raises(KeyboardInterrupt):
        edlora_file.save_edlora(tmp_path / "new.safetensors", random_edlora(tiny_model_dir, "cat", seed=1))
    assert not (tmp_path / "new.safetensors").exists()


def test_leftovers_of_killed_writers_are_removed_on_the_next_write(tmp_path):
    import subprocess
    import sys

    from mos_lightning.atomic import atomic_dir, write_json

    dead = 99_999_999  # above any pid_max: no such process
    for name in (f".model.{dead}.abcd1234.tmp", f".model.old-{dead}"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "weights.bin").write_bytes(b"x")
    (tmp_path / f".report.json.{dead}.k2j3h4g5.tmp").write_text("{")
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / f".model.{live.pid}.zzzz9999.tmp").mkdir()  # a writer still at work
        with atomic_dir(tmp_path / "model") as tmp:
            (tmp / "a.txt").write_text("a")
        write_json(tmp_path / "report.json", {"ok": True})
        assert sorted(p.name for p in tmp_path.iterdir()) == [f".model.{live.pid}.zzzz9999.tmp", "model", "report.json"]
    finally:
        live.kill()


# ------------------------------------------------------------------ damaged and unusual input files
def test_damaged_input_files_are_named_before_any_model_loads(tmp_path, tiny_model_dir):
    from mos_lightning.data import ConceptDataModule
    from mos_lightning.data.evaluation import EvalConceptSpec, check_reference_images
    from mos_lightning.data.scenes import read_scenes

    listing = tmp_path / "concepts.json"
    for text, message in (("{not json", "not a readable JSON file"), ('"a string"', "must be a JSON list of objects")):
        listing.write_text(text)
        with pytest.raises(ValueError, match=message):
            ConceptDataModule(concept_list=str(listing), num_workers=0).setup("fit")
    scenes = tmp_path / "scenes.yaml"
    scenes.write_text("scenes:\n  - name: a\n    prompt: [unclosed\n")
    with pytest.raises(ValueError, match=r"scene file .*scenes.yaml is not valid YAML"):
        read_scenes(scenes)
    references = tmp_path / "refs"
    references.mkdir()
    (references / "whole.png").write_bytes((DEMO_CONCEPTS / "redball" / "0.png").read_bytes()
                                           if (DEMO_CONCEPTS / "redball" / "0.png").exists()
                                           else next((DEMO_CONCEPTS / "redball").glob("*.png")).read_bytes())
    png = next((DEMO_CONCEPTS / "redball").glob("*.png")).read_bytes()
    (references / "cut.png").write_bytes(png[: len(png) // 2])
    with pytest.raises(ValueError, match=r"concept redball: cannot read image .*cut.png"):
        check_reference_images(EvalConceptSpec(name="redball", class_word="ball", reference_dir=str(references)))


def test_a_damaged_statistics_file_is_recorded_afresh_with_a_warning(tiny_model_dir, tmp_path):
    from helpers import random_edlora

    from mos_lightning.edlora_file import save_edlora

    cat = save_edlora(tmp_path / "cat.safetensors", random_edlora(tiny_model_dir, "cat", lora_std=0.1))
    _fuse(tiny_model_dir, [cat], tmp_path / "first", "--model.init_args.save_stats", "true")
    stats = tmp_path / "cat.fusion-stats.safetensors"
    stats.write_bytes(stats.read_bytes()[:100])
    with pytest.warns(UserWarning, match="ignoring fusion statistics .*unreadable.*recording them afresh"):
        _fuse(tiny_model_dir, [cat], tmp_path / "again", "--model.init_args.save_stats", "true")
    report = json.loads((tmp_path / "again" / "fusion_report.json").read_text())
    assert report["statistics"]["cat"].startswith("recorded") and "unreadable" in report["statistics"]["cat"]
    from mos_lightning.fusion.stats_file import load_record

    assert load_record(stats, {})[1] != "" and "unreadable" not in load_record(stats, {})[1]  # rewritten whole


# ------------------------------------------------------------------ the base model
def test_an_edlora_from_another_base_of_the_same_shape_is_warned_about(tiny_model_dir, tmp_path):
    from helpers import random_edlora
    from test_sampling import predict_args

    from mos_lightning.base_checks import base_fingerprint
    from mos_lightning.edlora_file import save_edlora
    from mos_lightning.tiny import save_tiny_model

    other = save_tiny_model(tmp_path / "other-sd", seed=1)  # same architecture, other weights
    assert base_fingerprint(str(other)) != base_fingerprint(str(tiny_model_dir)) != ""
    edlora = random_edlora(tiny_model_dir, "cat")
    edlora.base_model, edlora.base_fingerprint = str(tiny_model_dir), base_fingerprint(str(tiny_model_dir))
    file = save_edlora(tmp_path / "cat.safetensors", edlora)
    args = ("--data.init_args.prompts", '["a photo of <TOK>"]', "--data.init_args.num_samples", "1")
    with pytest.warns(UserWarning, match="was tuned on another base model"):
        build_cli(predict_args(other, file, tmp_path / "on-other", *args))
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*tuned on another base model.*")
        build_cli(predict_args(tiny_model_dir, file, tmp_path / "on-own", *args))


def test_token_problems_are_found_with_the_tokenizer_before_the_model_loads(tiny_model_dir, tmp_path):
    cases = ((["<|endoftext|>", "<x2>"], ["<rand-0.013>", "ball"], "already exist in the tokenizer"),
             (["<x1>", "<x2>"], ["<rand-0.013>", "ballooning spacecraft"], "is 3 tokens|is 2 tokens|tokens for this"))
    for tokens, initializers, message in cases:
        cli = build_cli(fit_args(tiny_model_dir, tmp_path / "out", tmp_path / "logs", "--trainer.max_steps", "2",
                                 "--model.init_args.tokens", json.dumps(tokens),
                                 "--model.init_args.initializers", json.dumps(initializers))[1:], run=False)
        with pytest.raises(ValueError, match=message):
            cli.trainer.fit(cli.model, cli.datamodule)
        assert cli.model.model is None


# ------------------------------------------------------------------ stopping
def test_evaluation_stops_promptly_on_sigterm_and_leaves_only_whole_images(tiny_model_dir, tmp_path):
    """Lightning swallows SIGTERM and checks it only after a batch: an evaluation batch (every method's images)
    went on for minutes. It must stop within a denoising step; the images written so far must be whole."""
    import signal
    import subprocess
    import sys
    import time

    from PIL import Image

    from mos_lightning.tiny import save_tiny_clip

    clip = save_tiny_clip(tmp_path / "clip")
    methods = [{"name": name, "base_model": str(tiny_model_dir), "class_word": True} for name in ("first", "second")]
    concepts = [{"name": "redball", "class_word": "ball", "reference_dir": str(DEMO_CONCEPTS / "redball"),
                 "category": "vase"}]
    out = tmp_path / "eval"
    args = ["test", "--config", str(REPO / "configs/demo/eval.yaml"), "--model.init_args.clip_model", str(clip),
            "--model.init_args.output_dir", str(out), "--model.init_args.methods", json.dumps(methods),
            "--model.init_args.num_inference_steps", "80", "--data.init_args.concepts", json.dumps(concepts),
            "--data.init_args.seeds", json.dumps(list(range(1, 9))), "--data.init_args.batch_size", "32",
            "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PL_", "PYTEST"))}
    process = subprocess.Popen([sys.executable, "-m", "mos_lightning", *args], env=env, cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not list((out / "images" / "first").rglob("*.png")) and time.monotonic() < deadline:
            assert process.poll() is None, process.stderr.read().decode()[-3000:]
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        process.wait(timeout=120)
        stopped_after = time.monotonic() - signalled
    finally:
        process.kill()
    assert process.returncode != 0
    assert stopped_after < 30, f"kept running {stopped_after:.0f} s after SIGTERM"
    assert not list((out / "images" / "second").rglob("*.png")) and not (out / "table.csv").exists()
    for png in (out / "images").rglob("*.png"):
        Image.open(png).load()  # whole files only
    assert not [p for p in out.rglob(".*.tmp")]


def test_an_edlora_of_another_width_is_refused_before_the_model_loads(tiny_model_dir, tmp_path):
    import torch
    from helpers import random_edlora
    from test_sampling import predict_args

    from mos_lightning.edlora_file import save_edlora

    narrow = random_edlora(tiny_model_dir, "cat", embeddings={"<cat1>": torch.randn(16, 8), "<cat2>": torch.randn(16, 8)})
    file = save_edlora(tmp_path / "narrow.safetensors", narrow)
    import yaml

    config = yaml.safe_load((REPO / "configs/demo/sample.yaml").read_text())
    config.pop("return_predictions")  # a predict-subcommand key; run=False parses without a subcommand
    (tmp_path / "sample.yaml").write_text(yaml.safe_dump(config))
    args = predict_args(tiny_model_dir, file, tmp_path / "out")[1:]
    args[args.index("--config") + 1] = str(tmp_path / "sample.yaml")
    cli = build_cli(args, run=False)
    with pytest.raises(ValueError, match="8-wide embeddings but the base text encoder is 32 wide"):
        cli.trainer.predict(cli.model, cli.datamodule)
    assert cli.model.pipe is None  # refused before the base model loaded
