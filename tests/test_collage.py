"""Regional sampling from a collage (``RegionalPipeline(collage_strength=…)``, ``pipelines/collage.py``): each region
drawn alone, shrunk into its box over the regional picture, denoised again under region control."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import REPO

from mos_lightning.attention.regions import Region
from mos_lightning.pipelines.collage import paste_into_boxes, plain_canvas, start_index
from mos_lightning.pipelines.regional import RegionalPipeline


def test_a_picture_covers_its_box_centred_and_the_rest_is_kept():
    canvas = np.zeros((64, 64, 3), np.uint8)
    picture = np.full((64, 64, 3), 200, np.uint8)
    picture[:, :32] = 100  # left half darker: which half survives the crop says how it was centred
    out = paste_into_boxes(canvas, [picture], [(0.0, 0.5, 1.0, 0.75)])  # a box 64 high, 16 wide
    assert (out[:, :32] == 0).all() and (out[:, 48:] == 0).all()  # outside the box: the canvas
    assert (out[:, 32:39] == 100).all() and (out[:, 41:48] == 200).all()  # scaled to cover, the middle kept
    half = paste_into_boxes(canvas, [picture], [(0, 0, 32, 32)])  # pixels; the whole picture shrunk into a quarter
    assert (half[:32, :12] == 100).all() and (half[:32, 20:32] == 200).all() and (half[32:] == 0).all()
    assert (canvas == 0).all()  # the canvas itself is not changed


def test_a_plain_canvas_is_the_colour_around_the_pieces_things():
    thing_on_grass = np.zeros((64, 64, 3), np.uint8)
    thing_on_grass[:] = (40, 160, 40)
    thing_on_grass[8:56, 8:56] = (200, 30, 30)  # the thing fills the middle, the grass shows at the border
    thing_on_sand = np.full((32, 32, 3), (200, 180, 120), np.uint8)
    canvas = plain_canvas([thing_on_grass, thing_on_sand], 48, 80)
    assert canvas.shape == (48, 80, 3) and (canvas == canvas[0, 0]).all()
    # the two borders' pixels pooled: 4·64·4 − 16 = 1008 green, 4·32·2 − 4 = 252 sand
    expected = (1008 * np.array([40, 160, 40]) + 252 * np.array([200, 180, 120])) / 1260
    assert np.abs(canvas[0, 0] - expected).max() <= 0.5


def test_the_strength_is_the_share_of_the_steps_run_again():
    assert start_index(20, 0.5) == 10 and start_index(20, 1.0) == 0 and start_index(20, 0.01) == 19
    with pytest.raises(ValueError, match="collage_strength"):
        start_index(20, 0.0)


@pytest.fixture(scope="module")
def world_pipe():
    from mos_lightning.world.check import load_base

    return load_base(str(REPO / "demo" / "world" / "base"))


def test_the_collage_is_each_region_drawn_alone_in_its_box_and_the_last_steps_keep_it(world_pipe):
    """The pieces are the region prompts drawn alone with the generator's next noises (after the regional
    picture's); run again for only the last step, the result is the collage up to the VAE's round trip — far nearer
    it than the reference's picture is. On a plain canvas the same pieces (no regional picture is drawn); unguided
    last steps keep the collage nearer than guided ones."""
    regions = [Region("a red ball on the grass", (0.2, 0.0, 0.8, 0.5)),
               Region("a blue cube on the grass", (0.2, 0.5, 0.8, 1.0))]
    prompt, settings = "a red ball and a blue cube on the grass", dict(num_inference_steps=20, guidance_scale=5.0)
    reference = RegionalPipeline(world_pipe)(prompt, regions, generator=torch.Generator().manual_seed(4), **settings)
    generator = torch.Generator().manual_seed(4)
    world_pipe.prepare_latents(1, 4, 64, 64, torch.float32, "cpu", generator)  # the regional picture's noise
    pieces = [RegionalPipeline(world_pipe)(r.prompt, [], generator=generator, **settings) for r in regions]
    collage = paste_into_boxes(reference, pieces, [r.box for r in regions])

    def distance(a, b):
        return float(np.abs(a.astype(float) - b).mean())

    from PIL import Image

    from mos_lightning.world.vae_check import round_trip

    decoded = np.asarray(round_trip(world_pipe.vae, [Image.fromarray(collage)])[0])  # what latents of it decode to
    last_step = RegionalPipeline(world_pipe, collage_strength=0.05)(prompt, regions,
                                                                   generator=torch.Generator().manual_seed(4), **settings)
    assert distance(last_step, decoded) < 0.4 * distance(reference, collage)

    on_plain = paste_into_boxes(plain_canvas(pieces, 64, 64), pieces, [r.box for r in regions])
    decoded = np.asarray(round_trip(world_pipe.vae, [Image.fromarray(on_plain)])[0])
    last_step = RegionalPipeline(world_pipe, collage_strength=0.05, collage_canvas="plain")(
        prompt, regions, generator=torch.Generator().manual_seed(4), **settings)
    assert distance(last_step, decoded) < 0.4 * distance(reference, on_plain)
    # guidance redraws what the prompts ask for over the pieces; unguided, the last steps keep them (about 2x nearer)
    guided, unguided = (RegionalPipeline(world_pipe, collage_strength=0.3, collage_canvas="plain", collage_guidance=g)(
        prompt, regions, generator=torch.Generator().manual_seed(4), **settings) for g in (None, 1.0))
    assert distance(unguided, decoded) < 0.7 * distance(guided, decoded)


def test_a_strength_outside_zero_to_one_or_an_unknown_canvas_is_refused_before_anything_loads():
    from mos_lightning.tasks import RegionalTask

    with pytest.raises(ValueError, match=r"collage_strength must be in \[0, 1\]"):
        RegionalTask(collage_strength=1.5)
    assert RegionalTask(collage_strength=0.2).hparams.collage_strength == 0.2
    with pytest.raises(ValueError, match="collage_canvas must be 'regional' or 'plain'"):
        RegionalPipeline(None, collage_canvas="blank")
    with pytest.raises(ValueError, match="collage_canvas must be 'regional' or 'plain'"):
        RegionalTask(collage_canvas="blank")
