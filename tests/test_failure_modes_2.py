"""Bad inputs found in the second round (issue 26): each gets a clear error naming the option or file before any model
loads, or a warning where the input is legitimate but risky."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import DEMO_CONCEPTS, REPO
from helpers import make_data, make_task, make_trainer
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
    """``--trainer.devices 3`` on a few images left each process less than one batch: it trained nothing (exit 0)."""
    import lightning.pytorch as pl

    data = make_data(DEMO_CONCEPTS / "redball", batch_size=3)
    data.trainer = pl.Trainer(accelerator="cpu", devices=3, strategy="ddp", logger=False, default_root_dir=tmp_path)
    images = len(list((DEMO_CONCEPTS / "redball").glob("*.png")))
    share = -(-images // 3)
    assert share < 3 <= images, "the demo concept should leave each of 3 processes less than a batch"
    with pytest.warns(UserWarning, match=rf"each of the 3 processes' {share} of the {images} images"):
        loader = data.train_dataloader()
    assert loader.drop_last is False  # the only batch of each process is kept


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
