"""Bad inputs found in the second round (issue 26): each gets a clear error naming the option or file before any model
loads, or a warning where the input is legitimate but risky."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import DEMO_CONCEPTS, REPO
from helpers import make_data, make_task, make_trainer
from PIL import Image

from mos_lightning.data import ConceptDataModule, PromptDataModule


def test_no_denoising_steps_is_refused_and_risky_scales_are_named(tiny_model_dir):
    from mos_lightning.tasks import EvalTask, SamplingTask

    with pytest.raises(ValueError, match="num_inference_steps must be >= 1.*pure noise"):
        SamplingTask(base_model=str(tiny_model_dir), num_inference_steps=0)
    with pytest.raises(ValueError, match="num_inference_steps must be >= 1"):
        EvalTask(methods=[{"name": "bound", "base_model": str(tiny_model_dir), "class_word": True}],
                 num_inference_steps=0)
    with pytest.warns(UserWarning, match="guidance_scale -1.0 is negative"):
        SamplingTask(base_model=str(tiny_model_dir), guidance_scale=-1.0)
    with pytest.warns(UserWarning, match=r"lora_scale 5.0 is outside \[0, 2\]"):
        SamplingTask(base_model=str(tiny_model_dir), edloras=["x.safetensors"], lora_scale=5.0)


@pytest.mark.parametrize("seeds", [[2**64], [-1], [1.5]])
def test_seeds_a_generator_cannot_take_are_refused_by_name(seeds):
    with pytest.raises(ValueError, match=r"data.init_args.seeds.*seeds must be whole numbers from 0 to 2\*\*64 - 1"):
        PromptDataModule(prompts=["a <TOK>"], seeds=seeds)


def test_a_misspelt_key_in_a_concept_list_is_refused_with_the_intended_one(tmp_path):
    listing = tmp_path / "concepts.json"
    listing.write_text(json.dumps([{"instance_data_dir": str(DEMO_CONCEPTS / "redball"),
                                    "caption_dirr": str(DEMO_CONCEPTS / "redball" / "captions")}]))
    data = ConceptDataModule(concept_list=str(listing), resolution=64)
    with pytest.raises(ValueError, match=r"entry 0 of .*concepts.json: unknown key\(s\) 'caption_dirr' \(did you mean "
                                         r"'caption_dir'\?\)"):
        data.setup("fit")
    fusion = tmp_path / "fusion.json"
    fusion.write_text(json.dumps([{"lora_path": "a.safetensors", "unet_alpah": 1.0}]))
    from mos_lightning.data.fusion_concepts import read_reference_concept_list

    with pytest.raises(ValueError, match="'unet_alpah' \\(did you mean 'unet_alpha'\\?\\)"):
        read_reference_concept_list(str(fusion))


@pytest.mark.parametrize("kind", ["binary", "black"])
def test_masks_that_select_nothing_stop_a_mask_loss_before_training(tiny_model_dir, tmp_path, kind):
    concept = tmp_path / "concept"
    shutil.copytree(DEMO_CONCEPTS / "redball", concept)
    for mask in (concept / "masks").glob("*.png"):
        pixels = np.asarray(Image.open(mask).convert("L")) > 127
        Image.fromarray((pixels if kind == "binary" else np.zeros_like(pixels)).astype(np.uint8)).save(mask)
    task = make_task(tiny_model_dir, tmp_path / "out", mask_loss=True)
    message = "masks hold only the values 0 and 1" if kind == "binary" else "every mask is all black"
    with pytest.raises(ValueError, match=message):
        make_trainer(tmp_path, max_steps=1).fit(task, make_data(concept))
    assert task.model is None and not (tmp_path / "out" / "edlora.safetensors").exists()


def test_a_process_share_smaller_than_the_batch_still_trains_and_is_named(tmp_path):
    """``--trainer.devices 3`` on a few images left each process less than one batch: it trained nothing (exit 0).
    Now every process gets whole batches (the images repeat) and the warning says so."""
    import lightning.pytorch as pl

    data = make_data(DEMO_CONCEPTS / "redball", batch_size=3)
    data.trainer = pl.Trainer(accelerator="cpu", devices=3, strategy="ddp", max_steps=2, logger=False,
                              default_root_dir=tmp_path)
    images = len(list((DEMO_CONCEPTS / "redball").glob("*.png")))
    assert 3 <= images < 9, "the demo concept should leave 3 processes of 3 less than one sample each"
    with pytest.warns(UserWarning, match=rf"batch_size 3 × 3 processes = 9 samples is larger than the {images} images"):
        loader = data.train_dataloader()
    assert len(loader) == 2 and [len(batch["caption"]) for batch in loader] == [3, 3]


def test_a_size_diffusers_cannot_sample_is_refused_before_loading():
    """The world model's VAE works in steps of 4, diffusers' pipelines in steps of 8: 68 failed after loading."""
    from mos_lightning.tasks import SamplingTask

    task = SamplingTask(base_model=str(REPO / "demo/world/base"), height=68, width=64)
    with pytest.raises(ValueError, match=r"multiples of 8 \(diffusers' pipelines need 8, this model's VAE 4\), got 68"):
        task.setup("predict")
    assert task.pipe is None


def test_an_edlora_file_given_as_a_checkpoint_is_named_for_what_it_is(tiny_model_dir, tmp_path):
    from helpers import random_edlora

    from mos_lightning.cli import build_cli
    from mos_lightning.edlora_file import save_edlora

    edlora = save_edlora(tmp_path / "concept.bin", random_edlora(tiny_model_dir, "cat"))  # the name does not matter
    args = ["fit", "--config", str(REPO / "configs/demo/edlora.yaml"), "--model.init_args.base_model",
            str(tiny_model_dir), "--model.init_args.output_dir", str(tmp_path / "out"), "--trainer.callbacks", "[]",
            "--data.init_args.concept_dir", str(DEMO_CONCEPTS / "redball"), "--ckpt_path", str(edlora)]
    with pytest.raises(ValueError, match="is a safetensors file .* not a training checkpoint"):
        build_cli(args)
    assert not (tmp_path / "out").exists()


def test_image_folders_name_what_they_skip_and_what_they_flatten(tmp_path):
    from mos_lightning.data.concept import ConceptSource, scan_concept

    folder = tmp_path / "photos"
    shutil.copytree(DEMO_CONCEPTS / "redball", folder, ignore=shutil.ignore_patterns("masks", "captions"))
    Image.open(folder / "00.png").save(folder / "extra.tif")  # TIFF is read, not skipped
    (folder / "notes.heic").write_bytes(b"\0")
    Image.new("RGBA", (64, 64), (255, 0, 0, 0)).save(folder / "clear.png")
    with pytest.warns(UserWarning) as caught:
        items = scan_concept(ConceptSource(str(folder), instance_prompt="a <TOK>"), "<TOK>", True)
    shown = " ".join(str(w.message) for w in caught)
    assert "extra.tif" in {i.image.name for i in items}
    assert "skipping notes.heic" in shown and "clear.png have transparent pixels" in shown


def test_a_huge_image_is_named_not_a_raw_decompression_error(tmp_path, monkeypatch):
    from mos_lightning.data.concept import open_image

    Image.new("RGB", (300, 300)).save(tmp_path / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100 * 100 // 2)  # PIL refuses above twice this
    with pytest.raises(ValueError, match=r"image .*huge.png is too large to read safely.*downscale it"):
        open_image(tmp_path / "huge.png", "RGB")


def test_a_config_with_a_tab_is_refused_naming_the_file_and_line(tmp_path):
    from mos_lightning.cli import build_cli

    config = tmp_path / "tabbed.yaml"
    config.write_text((REPO / "configs/demo/edlora.yaml").read_text().replace("  max_steps:", "\tmax_steps:"))
    with pytest.raises(ValueError, match=r"config .*tabbed.yaml, line \d+: indented with a tab"):
        build_cli(["fit", "--config", str(config)], run=False)


def test_prompt_files_that_cannot_be_read_are_named(tmp_path):
    from mos_lightning.data.prompts import read_prompts

    (tmp_path / "latin1.txt").write_bytes("a <TOK> in the caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"prompt file .*latin1.txt is not UTF-8 text.*save it as UTF-8"):
        read_prompts(tmp_path / "latin1.txt")
    (tmp_path / "bad.yaml").write_text("prompts: [a <TOK>\n")
    with pytest.raises(ValueError, match=r"prompt file .*bad.yaml is not valid YAML"):
        read_prompts(tmp_path / "bad.yaml")


def test_placeholder_with_two_concepts_and_a_model_without_concepts_get_their_own_advice(tiny_model_dir, tmp_path):
    from helpers import random_edlora

    from mos_lightning.edlora_file import save_edlora
    from mos_lightning.tasks import SamplingTask

    files = [str(save_edlora(tmp_path / f"{n}.safetensors", random_edlora(tiny_model_dir, n, seed=k)))
             for k, n in enumerate(("cat", "dog"))]
    two = SamplingTask(base_model=str(tiny_model_dir), edloras=files)
    two.read_edloras()
    with pytest.raises(ValueError, match=r"<TOK> stands for the concept only when exactly one is loaded.*<cat>, <dog>"):
        two.check_prompts(["a <TOK> on the sofa"])
    bare = SamplingTask(base_model=str(tiny_model_dir))
    with pytest.raises(ValueError, match=r"the model has no concepts: base_model .* holds no concepts.safetensors"):
        bare.check_prompts(["a <cat> on the sofa"])


def test_the_same_file_twice_in_a_fusion_list_is_named_as_such(tiny_model_dir, tmp_path):
    from helpers import random_edlora

    from mos_lightning.edlora_file import save_edlora
    from mos_lightning.fusion import ConceptSpec, load_concepts

    path = str(save_edlora(tmp_path / "cat.safetensors", random_edlora(tiny_model_dir, "cat")))
    with pytest.raises(ValueError, match=r"cat.safetensors'\] are listed more than once; list each concept once"):
        load_concepts([ConceptSpec(path), ConceptSpec(path, name="cat2")])


def test_a_rerun_after_the_edlora_changed_in_place_is_refused(tiny_model_dir, tmp_path):
    """Paths alone said "same settings": an ED-LoRA re-tuned into the same path kept the old images as made."""
    from helpers import random_edlora

    from mos_lightning.cli import build_cli
    from mos_lightning.edlora_file import save_edlora

    edlora, out = tmp_path / "cat.safetensors", tmp_path / "out"
    args = ["predict", "--config", str(REPO / "configs/demo/sample.yaml"), "--model.init_args.base_model",
            str(tiny_model_dir), "--model.init_args.edloras", f"[{edlora}]", "--model.init_args.num_inference_steps", "2",
            "--data.init_args.prompts", '["a <TOK>"]', "--data.init_args.num_samples", "1",
            "--data.init_args.output_dir", str(out), "--trainer.accelerator", "cpu"]
    save_edlora(edlora, random_edlora(tiny_model_dir, "cat", seed=0))
    build_cli(args)
    assert (out / "inputs.json").is_file() and not (out / ".writer.lock").exists()
    build_cli(args)  # unchanged: a resume, nothing to make
    save_edlora(edlora, random_edlora(tiny_model_dir, "cat", seed=1))  # re-tuned into the same path
    with pytest.raises(ValueError, match=r"cat.safetensors changed since the images were made"):
        build_cli(args)


def test_one_writer_per_result_folder(tmp_path):
    import subprocess
    import sys

    from mos_lightning.result_folder import LOCK_FILE, FolderLock

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / LOCK_FILE).write_text(json.dumps({"host": __import__("socket").gethostname(), "pid": other.pid,
                                                      "started": "now"}))
        with pytest.raises(RuntimeError, match=rf"being written by another run \(process {other.pid} on"):
            FolderLock(tmp_path).acquire()
    finally:
        other.kill()
        other.wait()
    lock = FolderLock(tmp_path)
    lock.acquire()  # the holder is gone: taken over
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == __import__("os").getpid()
    lock.release()
    assert not (tmp_path / LOCK_FILE).exists()


def test_truncated_base_weights_are_named(tiny_model_dir, tmp_path):
    from mos_lightning.models import load_base_model
    from mos_lightning.pipelines import EDLoRAPipeline

    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    (weights,) = (base / "unet").glob("*.safetensors")
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ValueError, match=rf"base model .* has damaged weight files: {weights}.*copy or download"):
        load_base_model(str(base))
    with pytest.raises(ValueError, match=r"has damaged weight files: .*unet"):
        EDLoRAPipeline.from_pretrained(str(base), local_files_only=True, safety_checker=None,
                                       requires_safety_checker=False)
