"""The miniature world (issue 17): seeded pictures with exact captions, concept folders in the project's format,
and a base model in SD 1.x's layout that loads through from_pretrained."""

from __future__ import annotations

import random

import numpy as np
import pytest

from mos_lightning.world import BACKGROUNDS, CONCEPTS, Scene, Thing, caption, random_scene, render, write_concept
from mos_lightning.world.data import world_pictures


def test_pictures_and_captions_are_a_function_of_the_seed():
    first, captions = world_pictures(6, seed=0, progress=False)
    again, captions_again = world_pictures(6, seed=0, progress=False)
    other, _ = world_pictures(6, seed=1, progress=False)
    assert np.array_equal(first, again) and captions == captions_again
    assert not np.array_equal(first, other)
    assert first.shape == (6, 64, 64, 3) and first.dtype == np.uint8


def test_captions_name_every_thing_left_to_right_and_the_background():
    scene = Scene("snow", (Thing("ball", "red", "striped", x=0.25, radius=0.2), Thing("cube", "orange", x=0.75, radius=0.2)))
    assert caption(scene) == "a red striped ball and an orange cube in the snow"
    for k in range(50):
        scene = random_scene(random.Random(k))
        text = caption(scene)
        assert text.endswith(BACKGROUNDS[scene.background]) and 1 <= len(scene.things) <= 3
        assert all(f"{t.colour}" in text and t.cls in text for t in scene.things)
        xs = [t.x for t in scene.things]
        assert xs == sorted(xs)


def test_the_picture_shows_what_the_caption_says():
    """Colours land where the things are: the mask's mean colour is the thing's, the rest is background."""
    scene = Scene("grass", (Thing("ball", "blue", x=0.5, y=0.5, radius=0.3),))
    image, (mask,) = render(scene, 64, seed=0)
    pixels, inside = np.asarray(image).astype(float), np.asarray(mask) > 200
    blue, green = pixels[inside].mean(0), pixels[~inside].mean(0)
    assert blue[2] > blue[0] + 60 and blue[2] > blue[1] + 40
    assert green[1] > green[0] + 40 and green[1] > green[2] + 40


def test_concept_folders_load_as_concept_data(tmp_path):
    from mos_lightning.data import ConceptDataModule

    folder = write_concept("starbox", tmp_path / "starbox", count=4)
    assert sorted(p.name for p in folder.glob("*.png")) == ["0.png", "1.png", "2.png", "3.png"]
    data = ConceptDataModule(concept_dir=str(folder), resolution=64, num_workers=0, mask_downsample=4)
    data.setup("fit")
    assert len(data.dataset) == 4 and data.dataset.has_masks
    assert all("<TOK>" in item.caption for item in data.dataset.items)
    mask = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(folder / "masks" / "0.png")) / 255
    assert 0.03 < mask.mean() < 0.6  # the concept's silhouette, not the whole picture
    assert set(CONCEPTS) == {"starbox", "bandball", "zigcone", "buoyring", "moonball", "heartcube"}


def test_concepts_are_not_things_a_caption_can_ask_for():
    """Each concept differs from every ordinary thing of its class: its design is not a world colour + pattern."""
    from mos_lightning.world.concepts import concept_thing

    for name in CONCEPTS:
        thing = concept_thing(name)
        image, (mask,) = render(Scene("snow", (Thing(thing.cls, "white", x=0.5, y=0.5, radius=0.35, concept=name),)), 64)
        inside = np.asarray(mask) > 200
        colours = np.asarray(image)[inside].astype(int)
        distinct = len({tuple(c // 48) for c in colours})
        assert distinct >= 3, name  # two or more colours plus shading: never one plain world colour


def test_the_world_model_has_sd_layout_and_loads_through_from_pretrained(tmp_path):
    torch = pytest.importorskip("torch")
    from mos_lightning.attention import num_cross_attention_layers
    from mos_lightning.pipelines import EDLoRAPipeline
    from mos_lightning.world.model import build_world_pipeline

    build_world_pipeline(seed=0).save_pretrained(tmp_path / "world-sd")
    pipe = EDLoRAPipeline.from_pretrained(str(tmp_path / "world-sd"), local_files_only=True)
    assert num_cross_attention_layers(pipe.unet) == 16
    assert pipe.vae_scale_factor == 4 and pipe.unet.config.sample_size == 16
    image = pipe("a red ball on the grass", num_inference_steps=2, height=64, width=64,
                 generator=torch.Generator().manual_seed(0), output_type="np").images[0]
    assert image.shape == (64, 64, 3)


WORLD_BASE = __import__("conftest").REPO / "demo" / "world" / "base"
WORLD_CLIP = __import__("conftest").REPO / "demo" / "world" / "clip"


@pytest.mark.skipif(not (WORLD_BASE / "model_index.json").is_file(), reason="the trained world base is not shipped here")
def test_tuning_on_the_trained_world_brings_the_concept_closer_to_its_photos(tmp_path):
    """On the trained world base, a tuned concept's samples are nearer its training views (world CLIP image
    alignment) than what the base draws for the class word; a broken tuning (no learning) fails this."""
    import torch

    from mos_lightning.cli import build_cli
    from mos_lightning.data.evaluation import EvalConceptSpec, reference_images
    from mos_lightning.data.concept import open_image
    from mos_lightning.metrics import CLIPFeatures
    from mos_lightning.pipelines import EDLoRAPipeline

    from conftest import REPO

    folder = write_concept("bandball", tmp_path / "bandball", count=8)
    build_cli(["fit", "--config", str(REPO / "configs/world/edlora.yaml"),
               "--config", str(REPO / "configs/world/concepts/bandball.yaml"),
               "--model.init_args.output_dir", str(tmp_path / "edlora"), "--model.init_args.fusion_stats", "false",
               "--data.init_args.concept_dir", str(folder), "--trainer.max_steps", "120",
               "--trainer.callbacks", "[]", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
               "--trainer.default_root_dir", str(tmp_path / "logs")])
    pipe = EDLoRAPipeline.from_pretrained(str(WORLD_BASE), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    clip = CLIPFeatures(str(WORLD_CLIP))
    photos = clip.images([open_image(p, "RGB") for p in reference_images(
        EvalConceptSpec(name="bandball", class_word="ball", reference_dir=str(folder)))])
    backgrounds = ["on the grass", "in the snow", "on the sand", "on the water"]
    seeds = list(range(8))

    def alignment(prompt: str) -> float:
        images = pipe.sample([f"a photo of {prompt} {b}" for b in backgrounds for _ in (0, 1)], seeds, "",
                             num_inference_steps=20, guidance_scale=5.0, height=64, width=64)
        return float((clip.images(list(images)) @ photos.T).mean())

    before = alignment("a ball")
    pipe.load_edlora(str(tmp_path / "edlora" / "edlora.safetensors"), scale=1.0)
    after = alignment("<TOK>")
    assert after > before + 0.02, (before, after)


def test_the_exact_detector_reads_class_colour_and_background_of_real_pictures():
    from mos_lightning.world.check import detector_accuracy

    accuracy = detector_accuracy(count=60)
    assert accuracy["background"] >= 0.95 and accuracy["colour"] >= 0.85 and accuracy["class"] >= 0.85, accuracy
