"""The miniature world (issue 17): seeded pictures with exact captions, concept folders in the project's format,
and a base model in SD 1.x's layout that loads through from_pretrained."""

from __future__ import annotations

import random
from pathlib import Path

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

    from conftest import REPO

    from mos_lightning.cli import build_cli
    from mos_lightning.data.concept import open_image
    from mos_lightning.data.evaluation import EvalConceptSpec, reference_images
    from mos_lightning.metrics import CLIPFeatures
    from mos_lightning.pipelines import EDLoRAPipeline

    folder = write_concept("bandball", tmp_path / "bandball", count=8)
    build_cli(["fit", "--config", str(REPO / "configs/world/edlora.yaml"),
               "--config", str(REPO / "configs/world/concepts/bandball.yaml"),
               "--model.init_args.output_dir", str(tmp_path / "edlora"), "--model.init_args.fusion_stats", "false",
               "--data.init_args.concept_dir", str(folder), "--trainer.max_steps", "80",
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
        images = pipe.sample([f"{prompt} {b}" for b in backgrounds for _ in (0, 1)], seeds, "",
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


def test_twins_change_one_attribute_of_one_thing_and_nothing_else():
    """The CLIP's hard negatives: same background, places and noise; exactly one class, colour or pattern differs."""
    from mos_lightning.world.data import twin

    for k in range(40):
        scene = random_scene(random.Random(k))
        other = twin(scene, random.Random(f"t{k}"))
        assert other.background == scene.background and len(other.things) == len(scene.things)
        changes = [(a, b) for a, b in zip(scene.things, other.things, strict=True) if a != b]
        assert len(changes) == 1
        before, after = changes[0]
        differing = [f for f in ("cls", "colour", "pattern", "x", "y", "radius") if getattr(before, f) != getattr(after, f)]
        assert len(differing) == 1 and differing[0] in ("cls", "colour", "pattern")
        assert caption(other) != caption(scene)
    plain, _ = world_pictures(4, seed=0, progress=False)
    twins, _ = world_pictures(4, seed=0, progress=False, twins=True)
    for a, b in zip(plain, twins, strict=True):  # the same picture apart from one thing
        assert 0 < (np.abs(a.astype(int) - b).sum(-1) > 30).mean() < 0.3


def test_composition_boxes_are_judged_against_each_concepts_signature():
    """The regional claim's judge: on real pictures of a layout each box reads as its concept; swap the concepts
    and the same boxes do not. The class judge asks for the kind of thing only: a thing of the concept's class in
    other colours passes it and fails the concept's signature."""
    import dataclasses

    from mos_lightning.world.boxes import Layout, box_hits, class_judges, real_pictures, signature, summarise
    from mos_lightning.world.scenes import Scene, render

    layout = Layout("pair", ("starbox", "zigcone"), "grass")
    assert layout.prompt({"starbox": "<starbox>", "zigcone": "<zigcone>"}) == "<starbox> and <zigcone> on the grass"
    assert layout.boxes == [[0.2, 0.0, 0.85, 0.5], [0.2, 0.5, 0.85, 1.0]]
    signatures = {c: signature(c, count=12) for c in layout.concepts}
    assert ("cube", "yellow") in signatures["starbox"] and ("cone", "green") in signatures["zigcone"]
    right = summarise(box_hits(real_pictures(layout, 8), layout, signatures))
    swapped = Layout("swapped", ("zigcone", "starbox"), "grass")
    wrong = summarise(box_hits(real_pictures(swapped, 8), layout, signatures))
    assert right["boxes"] >= 0.8 and wrong["boxes"] <= 0.2, (right, wrong)
    kinds = class_judges(signatures)
    assert kinds["starbox"].classes == {"cube"} and "cone" in kinds["zigcone"].classes
    assert summarise(box_hits(real_pictures(layout, 8), layout, kinds))["boxes"] >= 0.8
    assert summarise(box_hits(real_pictures(swapped, 8), layout, kinds))["boxes"] <= 0.2  # a cone is no cube
    from mos_lightning.world.boxes import layout_scenes

    recoloured = [render(Scene(s.background, tuple(dataclasses.replace(t, concept=None, colour="white", pattern="plain")
                                                   for t in s.things)), seed=k)[0]
                  for k, s in enumerate(layout_scenes(layout, 8))]
    assert summarise(box_hits(recoloured, layout, kinds))["boxes"] >= 0.8
    assert summarise(box_hits(recoloured, layout, signatures))["boxes"] <= 0.2


def test_the_claims_run_asks_the_command_line_for_the_methods_it_names(tmp_path):
    """Each stage of ``python -m mos_lightning.world.claims`` is a real ``mos-lightning`` command: parsed here,
    the baselines are what the table calls them (LoRA = one shared embedding, P+ = no LoRA) and the fusions use
    the solvers their rows name."""
    import json

    import yaml

    from mos_lightning.cli import build_cli
    from mos_lightning.components import describe
    from mos_lightning.fusion import LBFGS, NaiveSum, default_solver
    from mos_lightning.world.claims import Claims

    claims = Claims(tmp_path, ["starbox", "bandball"], [1], 5, "demo/world/clip", "demo/world/base")
    tuned = {name: build_cli(args[1:] + ["--trainer.logger", "false"], run=False)
             for name, args in claims.tune_commands().items()}
    assert len(tuned) == 8
    for concept in ("starbox", "bandball"):
        ed, lora, plus, strong = (tuned[f"tune {m} {concept}"].model.hparams
                                  for m in ("ed-lora", "lora", "p-plus", "ed-lora-strong"))
        assert (ed.layerwise, ed.lora_rank) == (True, 4) and (lora.layerwise, lora.lora_rank) == (False, 4)
        assert (plus.layerwise, plus.lora_rank) == (True, 0)
        assert (strong.unet_lr, strong.text_encoder_lr) == (5 * ed.unet_lr, 5 * ed.text_encoder_lr)
        assert tuned[f"tune ed-lora {concept}"].trainer.max_steps == 5
    fused = {name: build_cli(args[1:] + ["--trainer.logger", "false"], run=False).model
             for name, args in claims.fuse_commands().items()}
    solvers = {name: describe(task.solver) for name, task in fused.items()}
    assert len(solvers) == 8
    assert solvers["fuse weak default"] == solvers["fuse strong default"] == describe(default_solver())
    assert solvers["fuse weak exact"]["init_args"] == {"ridge": 1e-5, "towards": "base"}
    assert type(fused["fuse strong naive"].solver) is NaiveSum and type(fused["fuse weak l-bfgs"].solver) is LBFGS
    strong_files = {c["path"] for c in json.loads(claims.fuse_commands()["fuse strong naive"][-1])}
    assert all("/ed-lora-strong/" in f for f in strong_files)
    held_out = claims.eval_config(claims.single_methods(["ed-lora"]), "configs/world/prompts/held_out.yaml",
                                  claims.held_out_seeds, "eval-held-out")
    held_out.pop("verbose")  # a `test`-only option; run=False parses without a subcommand
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(held_out))
    evaluation = build_cli(["--config", str(tmp_path / "eval.yaml")], run=False)
    assert [m.name for m in evaluation.model.methods] == ["ed-lora"]
    # the held-out evaluation shares neither prompts nor seeds with the fusion statistics
    from conftest import REPO

    fusion = yaml.safe_load((REPO / "configs/world/fusion.yaml").read_text())["model"]["init_args"]
    assert not set(claims.held_out_seeds) & set(fusion["spatial_seeds"])
    groups = yaml.safe_load((REPO / "configs/world/prompts/held_out.yaml").read_text())
    prompts = [p for group in groups.values() for p in group]
    assert not set(prompts) & set(fusion["spatial_prompts"] + fusion["text_prompts"])


def test_the_training_scripts_give_the_same_weights_twice(tmp_path):
    """What the model card promises: same command, same machine → same weights (a few steps of each stage)."""
    import torch
    from safetensors.torch import load_file

    from mos_lightning.world.train import main as train

    for run in ("a", "b"):
        train(["clip", str(tmp_path / run / "clip"), "--pictures", "24", "--clip-steps", "2", "--batch", "8"])
        train(["base", str(tmp_path / run / "base"), "--pictures", "24", "--vae-steps", "2", "--unet-steps", "2",
               "--batch", "4", "--device", "cpu"])
    for path in ("clip/model.safetensors", "base/unet/diffusion_pytorch_model.safetensors",
                 "base/text_encoder/model.safetensors", "base/vae/diffusion_pytorch_model.safetensors"):
        first, second = load_file(tmp_path / "a" / path), load_file(tmp_path / "b" / path)
        assert first.keys() == second.keys()
        assert all(torch.equal(first[k], second[k]) for k in first), path


def test_the_demo_configs_name_the_concepts_the_demo_tunes():
    """The demo (python -m mos_lightning.world demo) tunes two concepts; the fusion, regional scene and evaluation configs must all name those
    two (a concept renamed in one place would fail the demo half-way, after minutes of tuning)."""
    import re

    import yaml
    from conftest import REPO

    from mos_lightning.data.scenes import parse_scene
    from mos_lightning.world.demo import DEFAULT_CONCEPTS

    tuned = set(DEFAULT_CONCEPTS)
    assert len(tuned) == 2 and tuned <= set(CONCEPTS)
    fusion = yaml.safe_load((REPO / "configs/world/fusion.yaml").read_text())
    assert {Path(c["path"]).parent.name for c in fusion["data"]["init_args"]["concepts"]} == tuned
    evaluation = yaml.safe_load((REPO / "configs/world/eval.yaml").read_text())
    assert {c["name"] for c in evaluation["data"]["init_args"]["concepts"]} == tuned
    assert set(evaluation["model"]["init_args"]["methods"][0]["edloras"]) == tuned
    scene_file = REPO / "configs/world/scenes/two.yaml"
    for index, raw in enumerate(yaml.safe_load(scene_file.read_text())["scenes"]):
        scene = parse_scene(raw, scene_file.parent, index)
        named = {name for region in scene.regions for name in re.findall(r"<([a-z]+)>", region.prompt)}
        assert named == tuned and set(re.findall(r"<([a-z]+)>", scene.prompt)) == tuned
