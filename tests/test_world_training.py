"""Options of the world base's training for composition (``python -m mos_lightning.world.train base``): how many
things a picture has, and captions that name one thing's colour only."""

import random


def test_training_pictures_follow_the_things_weights_and_the_cache_knows_them(tmp_path):
    """``train base --things-weights``: only two-thing pictures when asked; a cache made with other weights is not
    reused."""
    from mos_lightning.world.data import world_pictures

    cache = tmp_path / "pictures.npz"
    default, captions = world_pictures(12, seed=3, progress=False, cache=cache)
    _, two = world_pictures(12, seed=3, progress=False, cache=cache, things_weights=(0, 1, 0))
    assert all(c.count(" and ") == 1 and ", " not in c for c in two)
    assert two != captions  # made again, not read from the cache written with the default weights



def test_a_sparse_caption_names_one_things_colour_and_only_pictures_of_several_things_get_one():
    from mos_lightning.world.data import caption_variants, sparse_caption, world_scenes
    from mos_lightning.world.scenes import COLOURS, Scene, Thing, caption

    scene = Scene("sand", (Thing("ball", "red", "dotted"), Thing("ring", "green")))
    seen = {sparse_caption(scene, random.Random(k)) for k in range(20)}
    assert seen == {"a red dotted ball and a ring on the sand", "a ball and a green ring on the sand"}
    scenes = world_scenes(40, seed=2)
    captions = [caption(s) for s in scenes]
    variants = caption_variants(scenes, captions, sparse=True)
    for s, c, options in zip(scenes, captions, variants, strict=True):
        assert options[0] == c
        if len(s.things) == 1:
            assert options == [c]
        else:
            assert len(options) == 2 and sum(options[1].count(f" {colour} ") for colour in COLOURS) == 1
    assert caption_variants(scenes, captions, sparse=False) == [[c] for c in captions]


def test_a_grounding_loss_teaches_the_base_to_read_each_things_words_in_its_box(tmp_path):
    """``train base --grounding W``: the same steps and batches with the loss leave the words' attention more inside
    their things' boxes than without it (measured on other pictures than the training ones)."""
    from pathlib import Path

    import numpy as np
    import torch

    from mos_lightning.world.attention_check import record_scene
    from mos_lightning.world.check import held_out_scenes, load_base, real_scene_pictures
    from mos_lightning.world.grounding import attention_maps, grounding_loss, scene_targets
    from mos_lightning.world.train import main as train

    base = Path(__file__).resolve().parents[1] / "demo" / "world" / "base"
    scenes = held_out_scenes(6, 2)
    pictures = real_scene_pictures(scenes)

    @torch.no_grad()
    def loss_of(folder) -> float:
        pipe = load_base(str(folder))
        with attention_maps(pipe.unet) as maps:
            return float(np.mean([grounding_loss(record_scene(pipe, maps, scene, picture, 500, seed=k),
                                                 [scene_targets(pipe.tokenizer, scene)]).item()
                                  for k, (scene, picture) in enumerate(zip(scenes, pictures, strict=True))]))

    for weight in ("0", "20"):
        train(["base", str(tmp_path / weight), "--resume", str(base), "--pictures", "32", "--unet-steps", "8",
               "--batch", "8", "--device", "cpu", "--things-weights", "0,1,1", "--grounding", weight])
    grounded, plain = loss_of(tmp_path / "20"), loss_of(tmp_path / "0")
    assert grounded < plain - 0.02, (grounded, plain)
