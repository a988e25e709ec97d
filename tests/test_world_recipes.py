"""The tuning-recipe comparison (``python -m mos_lightning.world.recipes``): every recipe is the real command line
with the overrides its name says, and its scores read every picture and pair each recipe against the world's."""

import json
import random

import pytest


def test_each_recipe_is_the_world_command_with_the_overrides_its_name_says(tmp_path):
    from mos_lightning.cli import build_cli
    from mos_lightning.world.recipes import RECIPES, Recipes

    recipes = Recipes(tmp_path, ["heartcube"], [101], None, "demo/world/clip", "demo/world/base")
    commands = recipes.tune_commands()
    assert len(commands) == len(RECIPES)
    tuned = {name.split()[1]: build_cli(args[1:] + ["--trainer.logger", "false"], run=False)
             for name, args in commands.items()}
    world = tuned["world"].model.hparams
    assert (world.unet_lr, world.text_encoder_lr, world.embedding_lr, world.lora_rank) == (0.001, 0.0001, 0.005, 4)
    assert tuned["world"].trainer.max_steps == 200 and tuned["steps-x3"].trainer.max_steps == 600
    assert tuned["embedding-lr-x10"].model.hparams.embedding_lr == 10 * world.embedding_lr
    for name, factor in (("lora-lr-x5", 5), ("lora-lr-x10", 10), ("rank-16-lora-lr-x5", 5)):
        hparams = tuned[name].model.hparams
        assert (hparams.unet_lr, hparams.text_encoder_lr) == (factor * world.unet_lr, factor * world.text_encoder_lr)
    assert tuned["rank-16-lora-lr-x5"].model.hparams.lora_rank == 16
    folders = {name: cli.datamodule.hparams.concept_dir for name, cli in tuned.items()}
    assert folders["beside-every-2"].endswith("heartcube-beside-2") and folders["world"].endswith("/heartcube")
    # the evaluation: every recipe's own model and the bound, on one-thing prompts only (the detector reads each)
    import yaml
    from conftest import REPO

    from mos_lightning.world.recipes import PROMPTS

    config = recipes.eval_config([*recipes.single_methods(RECIPES)], PROMPTS, recipes.seeds, "eval")
    config.pop("verbose")  # a `test`-only option; run=False parses without a subcommand
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(config))
    evaluation = build_cli(["--config", str(tmp_path / "eval.yaml")], run=False)
    assert [m.name for m in evaluation.model.methods] == list(RECIPES)
    assert list(yaml.safe_load((REPO / PROMPTS).read_text())) == ["recontextualization"]


def test_views_with_another_thing_come_as_often_as_asked():
    from mos_lightning.world.concepts import concept_views

    def beside(every):
        return [k for k, (_, _, text) in enumerate(concept_views("heartcube", beside_every=every)) if " and " in text]

    assert beside(3) == [2, 5] and beside(2) == [1, 3, 5, 7]
    assert [v[2] for v in concept_views("heartcube")] == [v[2] for v in concept_views("heartcube", beside_every=3)]
    with pytest.raises(ValueError, match="beside_every must be 1 or more"):
        concept_views("heartcube", beside_every=0)


def test_recipe_scores_read_every_picture_and_pair_each_recipe_against_the_worlds(tmp_path):
    """Real pictures of the concept for the world recipe, of another concept for the rest: the detector's rates
    are 100 % and 0 %, and every other recipe is worse than the world's outside its interval."""
    from mos_lightning.world.concepts import concept_thing
    from mos_lightning.world.recipes import RECIPES, Recipes, report
    from mos_lightning.world.scenes import Scene, place, render

    rng = random.Random(0)
    pictures = {c: [render(Scene("grass", place(rng, [concept_thing(c)])), seed=k)[0] for k in range(6)]
                for c in ("heartcube", "moonball")}
    rows = []
    for method in [*RECIPES, "bound"]:
        for k, picture in enumerate(pictures["heartcube" if method == "world" else "moonball"]):
            path = tmp_path / "eval" / "images" / f"{method}-{k}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            picture.save(path)
            rows.append({"method": method, "concept": "heartcube", "path": str(path), "image_alignment": 0.5,
                         "text_alignment": 1.0, "group": "recontextualization"})
    (tmp_path / "eval" / "scores.json").write_text(json.dumps(rows))
    result = Recipes(tmp_path, ["heartcube"], [101], None, "demo/world/clip", "demo/world/base").scores()
    assert result["recipes"]["world"]["detector"][0] == 1.0 and "vs_world_detector" not in result["recipes"]["world"]
    for name in [*RECIPES, "bound"][1:]:
        assert result["recipes"][name]["detector"][0] == 0.0
        assert result["recipes"][name]["vs_world_detector"][3] == "worse"
        assert result["recipes"][name]["vs_world_clip"][3] == "tie"
    text = report(result)
    assert "| world | 100% [100%, 100%] |  | 100% |" in text and "| steps-x3 | 0% [0%, 0%] | -100% [-100%, -100%] worse |" in text
