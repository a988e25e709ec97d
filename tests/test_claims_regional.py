"""The claims run's (c): region prompts alone or with their context, and the report's rates, intervals and paired
differences between region-control settings."""

import json

from conftest import REPO

from mos_lightning.world.boxes import Layout
from mos_lightning.world.claims_regional import REGIONAL_CONDITIONS, paired_difference, regional_section


def test_a_region_prompt_holds_its_concept_alone_or_with_the_others_as_class_words():
    layout = Layout("three", ("starbox", "zigcone", "buoyring"), "table")
    names = {c: f"<{c}>" for c in layout.concepts}
    assert layout.region_prompt(1, names) == "<zigcone> on a wooden table"
    # the world lists things left to right: the context says where the concept stands, and names no other concept
    assert layout.region_prompt(1, names, context=True) == "a cube, <zigcone> and a ring on a wooden table"
    assert layout.region_prompt(2, names, context=True) == "a cube, a cone and <buoyring> on a wooden table"


def row(hits, classes=None):
    rates = {"hits": hits, "boxes": sum(map(sum, hits)) / (2 * len(hits)), "all": sum(map(all, hits)) / len(hits)}
    return {**rates, "classes": row(classes) if classes else rates}


def test_paired_differences_say_better_only_outside_their_interval():
    good = [row([[True, True]] * 8), row([[True, True]] * 6 + [[True, False]] * 2)]
    bad = [row([[False, False]] * 8), row([[True, False]] * 8)]
    better = paired_difference(good, bad)
    assert better["boxes"][3] == "better" and better["all"][3] == "better"
    assert better["boxes"][0] > 0.4
    same = paired_difference(bad, bad)
    assert same["boxes"][:3] == (0.0, 0.0, 0.0) and same["boxes"][3] == "tie"


def test_the_regional_section_lists_every_condition_and_each_option_against_the_reference():
    hits = [[True, False], [True, True], [False, False], [True, True]]
    layouts = {"a": {c: row(hits) for c in ["real", "alone", *REGIONAL_CONDITIONS, "without"]}}
    layouts["a"]["sketch"] = row([[True, True]] * 4)
    layouts["a"]["bounded"] = row(hits, classes=[[True, True]] * 4)  # the right kinds of thing, not the concepts
    text, said = regional_section({"layouts": layouts})
    assert "boxes showing their concept's class, in any colour" in text
    assert "- control, bounded self-attention: boxes +0% [+0%, +0%] (tie), whole pictures +0% [+0%, +0%] (tie); " \
           "the class in its box +38%" in text
    old = {"a": {c: {k: v for k, v in r.items() if k != "classes"} for c, r in layouts["a"].items()}}
    assert "class" not in regional_section({"layouts": old})[0]  # claims runs before the class rates still read
    assert "bounded self-attention" in text and "prompts with context" in text and "each concept alone" in text
    assert any(s.startswith("control, bounded self-attention against the reference's control: boxes +0% [+0%, +0%] (tie)")
               for s in said)
    assert any(s.startswith("control and sketch against the reference's control: boxes +38%") for s in said)


def test_sketches_are_the_outlines_of_the_things_and_the_adapter_trains_on_them(tmp_path):
    """A sketch is white exactly on the edge of each silhouette; each thing captioned alone is what a region prompt
    says; a few adapter steps on the world base (region-prompt captions, pictures of several things) write a
    T2IAdapter folder that loads and drives the world UNet."""
    import numpy as np
    import torch
    from conftest import REPO
    from diffusers import T2IAdapter

    from mos_lightning.world.scenes import Scene, Thing, render
    from mos_lightning.world.sketch import main, one_thing_captions, scene_sketch

    scene = Scene("grass", (Thing("ball", "red", x=0.3, radius=0.2), Thing("cube", "blue", x=0.75, radius=0.15)))
    lines = np.asarray(scene_sketch(scene)) > 127
    silhouettes = [np.asarray(m) > 127 for m in render(scene)[1]]
    inside = silhouettes[0] | silhouettes[1]
    assert lines.any() and not (lines & ~inside).any()  # drawn on the things' edges only
    assert lines.sum() < 0.5 * inside.sum()  # outlines, not filled
    assert one_thing_captions(scene) == ["a red ball on the grass", "a blue cube on the grass"]
    assert one_thing_captions(Scene("grass", scene.things[:1])) == []  # one thing: its caption is already that
    main(["train", str(tmp_path / "adapter"), "--base", str(REPO / "demo/world/base"), "--pictures", "16",
          "--steps", "2", "--batch", "4", "--one-thing", "1", "--things-weights", "0,1,1"])
    record = json.loads((tmp_path / "adapter" / "training.json").read_text())
    assert record["one_thing"] == 1.0 and record["things_weights"] == [0.0, 1.0, 1.0]
    adapter = T2IAdapter.from_pretrained(tmp_path / "adapter")
    features = adapter(torch.zeros(1, 1, 64, 64))
    assert [f.shape[-1] for f in features] == [16, 8, 4, 2]


def test_a_training_step_captions_pictures_of_several_things_by_one_of_them():
    import torch

    from mos_lightning.world.sketch import step_captions

    # three pictures' captions (rows 0-2), then picture 0's two one-thing captions (3, 4) and picture 2's (5, 6)
    ids = torch.arange(7)[:, None].expand(7, 3)
    index = torch.tensor([0, 1, 2, 0, 2, 1])
    singles = [2, 0, 2]
    generator = torch.Generator().manual_seed(0)
    always = step_captions(ids, index, singles, 1.0, generator)[:, 0].tolist()
    assert always[1] == always[5] == 1  # one thing: its own caption
    assert {always[0], always[3]} <= {3, 4} and {always[2], always[4]} <= {5, 6}  # each picture's own things only
    state = generator.get_state()
    assert step_captions(ids, index, singles, 0.0, generator)[:, 0].tolist() == index.tolist()
    assert torch.equal(generator.get_state(), state)  # no draws: the shipped recipe's random stream is unchanged


def test_the_claims_scene_files_load_with_regions_context_and_sketch(tmp_path):
    from mos_lightning.data.scenes import read_scenes
    from mos_lightning.world.claims_regional import LAYOUTS, write_scene_file

    names = {c: f"<{c}>" for layout in LAYOUTS for c in layout.concepts}
    plain = read_scenes(write_scene_file(tmp_path, list(LAYOUTS), names))
    sketch = read_scenes(write_scene_file(tmp_path, list(LAYOUTS), names, context=True, sketch=True))
    bare = read_scenes(write_scene_file(tmp_path, list(LAYOUTS), names, sketch=True, regions=False))
    assert len(plain) == len(sketch) == len(bare) == len(LAYOUTS)
    assert plain[0].regions[0].prompt == "<starbox> on the grass" and not plain[0].conditions
    assert sketch[0].regions[0].prompt == "<starbox> and a ball on the grass"
    assert sketch[0].conditions[0].adapter == "sketch"
    assert not bare[0].regions and bare[0].conditions
    heavy = read_scenes(write_scene_file(tmp_path, list(LAYOUTS), names, sketch=True, sketch_weight=2.0, seeds=[9, 10]))
    assert heavy[0].conditions[0].weight == 2.0 and heavy[0].seeds == [9, 10] and sketch[0].conditions[0].weight == 1.0



def test_each_concept_in_its_place_is_read_in_its_own_box(tmp_path):
    """The model's ceiling at a box's size: a caption per concept with the others as class words, for layouts in
    the world's slots only; each picture is read in the concept's box, found by the prompt's index."""
    from mos_lightning.world.boxes import real_pictures
    from mos_lightning.world.claims_regional import LAYOUTS, in_place_prompts, in_place_scores

    names = {c: f"<{c}>" for layout in LAYOUTS for c in layout.concepts}
    assert "<moonball>" not in " ".join(in_place_prompts(list(LAYOUTS[5:]), names))  # given boxes only
    pair = [lay for lay in LAYOUTS if set(lay.concepts) <= {"starbox", "bandball"}]
    prompts = in_place_prompts(pair, names)  # what the claims run samples for these concepts
    assert prompts == ["<starbox> and a ball on the grass", "a cube and <bandball> on the grass"]
    prompts_all = in_place_prompts(list(LAYOUTS), names)
    assert "<starbox> and a ball on the grass" in prompts_all and "a cube and <bandball> on the grass" in prompts
    assert in_place_scores(tmp_path, list(LAYOUTS), ["starbox", "bandball"], names) == {}  # runs made before it
    layout, swapped = LAYOUTS[0], Layout("swapped", ("bandball", "starbox"), "grass")
    for k in range(2):  # real pictures of the layout for its prompts; of the swapped layout for the others
        for name, pictures in ((layout.name, real_pictures(layout, 3)), ("other", real_pictures(swapped, 3))):
            index = prompts.index(layout.region_prompt(k, names, context=True)) if name == layout.name else 99
            folder = tmp_path / "regional" / "in-place" / f"{index:04d}-x"
            folder.mkdir(parents=True, exist_ok=True)
            for seed, picture in enumerate(pictures, 1):
                picture.save(folder / f"seed{seed:06d}.png")
    scores = in_place_scores(tmp_path, pair, ["starbox", "bandball"], names)
    assert scores[layout.name]["boxes"] >= 0.8 and scores[layout.name]["classes"]["boxes"] >= 0.8
    rows = {"a": {c: row([[True, False]] * 4) for c in ["real", "alone", *REGIONAL_CONDITIONS, "without"]}}
    text, _ = regional_section({"layouts": rows, "in_place": {"a": row([[True, True]] * 4)}})
    assert "- each concept in its place, no control (world-slot layouts only; their control: 50% " in text


def test_each_claims_condition_samples_as_it_says_whatever_the_world_config_composes_by(tmp_path, monkeypatch):
    """configs/world/regional.yaml composes from a collage; the claims' reference ("with") must not inherit it, and
    a collage condition must get exactly its own settings (broken on purpose: without the reference's settings as
    the base of every condition, "with" ran the config's collage at twice the size)."""
    from mos_lightning.cli import build_cli
    from mos_lightning.world.claims import Claims

    claims = Claims(tmp_path, ["starbox", "bandball"], [1], 5, "demo/world/clip", "demo/world/base")
    claims.conditions = {c: REGIONAL_CONDITIONS[c] for c in ("with", "collage", "collage-things-x2")}
    monkeypatch.setattr(Claims, "fused", lambda self, regime, solver: "demo/world/base")
    commands = {}
    monkeypatch.setattr(Claims, "predict_into", lambda self, folder, stage, *args: commands.setdefault(folder, args))
    claims.compose()
    # parsed as the predict subcommand would, less its one predict-only key (run=False parses without subcommands)
    config = tmp_path / "regional.yaml"
    config.write_text((REPO / "configs/world/regional.yaml").read_text().replace("return_predictions: false", ""))

    def task(args: list[str]):
        args = [str(config) if a == "configs/world/regional.yaml" else a for a in args]
        return build_cli([*args, "--data.init_args.output_dir", str(tmp_path / "x")], run=False).model.hparams

    tasks = {c: task(list(commands[c])) for c in claims.conditions}
    settings = {c: (t.collage_strength, t.collage_canvas, t.collage_guidance, t.collage_fit, t.collage_scale)
                for c, t in tasks.items()}
    assert settings == {"with": (0.0, "regional", None, "cover", 1), "collage": (0.2, "regional", None, "cover", 1),
                        "collage-things-x2": (0.2, "plain", 1.0, "thing", 2)}
    assert tasks["with"].box_rounding == "inward" and tasks["with"].bounded_steps == 0
    world = task(["--config", "configs/world/regional.yaml", "--model.init_args.base_model", "demo/world/base"])
    assert (world.collage_strength, world.collage_fit, world.collage_scale) == (0.2, "thing", 2)
