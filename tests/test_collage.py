"""Regional sampling from a collage (``RegionalPipeline(collage_strength=…)``, ``pipelines/collage.py``): each region
drawn alone, shrunk into its box over the regional picture, denoised again under region control."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import REPO

from mos_lightning.attention.regions import Region
from mos_lightning.pipelines.collage import paste, paste_into_boxes, paste_things, plain_canvas, start_index, thing_mask
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


def _red_thing_on_grass(top: int, left: int, size: int) -> np.ndarray:
    piece = np.zeros((64, 64, 3), np.uint8)
    piece[:] = (40, 160, 40)
    piece[top:top + size, left:left + size] = (220, 30, 30)
    return piece


def _reddish(picture: np.ndarray) -> np.ndarray:  # the thing's colour, or its resampled edge mostly
    return np.abs(picture.astype(int) - (220, 30, 30)).sum(2) < 90


def test_a_fitted_thing_is_whole_in_the_middle_of_its_box_and_only_its_pixels_are_pasted():
    """A thing drawn off the middle of its picture: covering a narrow box with the whole picture pastes the piece's
    background and cuts the thing at the box's side; fitted, the whole thing stands in the box's middle at most 80 % of
    its width, and the rest of the box is the canvas."""
    piece = _red_thing_on_grass(top=12, left=5, size=40)  # its middle 7 px left of the picture's
    canvas = np.full((64, 64, 3), 250, np.uint8)
    box = (0.25, 0.5, 0.75, 0.75)  # rows 16-48, columns 32-48: 32 high, 16 wide
    fitted = paste_things(canvas, [piece], [box])
    rows, cols = np.nonzero(_reddish(fitted))
    assert 0.6 * 16 <= cols.max() - cols.min() + 1 <= 0.8 * 16 + 1  # the whole thing, at most 80 % of the box's width
    assert abs((cols.min() + cols.max() + 1) / 2 - 40) <= 1 and abs((rows.min() + rows.max() + 1) / 2 - 32) <= 1
    away = np.ones((64, 64), bool)
    away[rows.min() - 3:rows.max() + 4, cols.min() - 3:cols.max() + 4] = False  # the resampled edge and its seam
    assert (fitted[away] == 250).all()  # no grass: the canvas around the thing
    covered = paste_into_boxes(canvas, [piece], [box])
    assert (np.abs(covered[16:48, 32:48].astype(int) - (40, 160, 40)).sum(2) < 10).any()  # cover brings its grass
    assert _reddish(covered)[:, 32].any()  # and a thing cut at the box's left side


def test_a_piece_without_a_silhouette_is_pasted_to_cover_its_box():
    canvas = np.zeros((64, 64, 3), np.uint8)
    flat = np.full((64, 64, 3), 120, np.uint8)
    everywhere = _red_thing_on_grass(top=0, left=0, size=64)  # all thing, no border to tell it from
    for piece in (flat, everywhere):
        assert thing_mask(piece) is None
        assert (paste_things(canvas, [piece], [(0.5, 0.5, 1.0, 1.0)]) == paste_into_boxes(canvas, [piece], [(0.5, 0.5, 1.0, 1.0)])).all()
    specks = _red_thing_on_grass(top=30, left=30, size=10)
    specks[2, 60] = specks[61, 3] = (220, 30, 30)  # single pixels far off: neither the thing nor its extent
    mask = thing_mask(specks)
    assert mask is not None and not mask[2, 60] and not mask[61, 3] and mask[30:40, 30:40].all()
    assert (paste(canvas, [specks], [(0.0, 0.0, 0.5, 0.5)], "thing") == paste_things(canvas, [specks], [(0.0, 0.0, 0.5, 0.5)])).all()


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
    # with fitted things the last step keeps their collage, not the covering one
    things = paste_things(plain_canvas(pieces, 64, 64), pieces, [r.box for r in regions])
    fitted = RegionalPipeline(world_pipe, collage_strength=0.05, collage_canvas="plain", collage_fit="thing")(
        prompt, regions, generator=torch.Generator().manual_seed(4), **settings)
    decoded_things = np.asarray(round_trip(world_pipe.vae, [Image.fromarray(things)])[0])
    assert distance(fitted, decoded_things) < 0.7 * distance(fitted, decoded)
    # at twice the size: the pieces drawn at the picture's size, the collage's steps on latents twice as wide, the
    # result resized back
    sizes = []
    hook = world_pipe.unet.conv_in.register_forward_pre_hook(lambda _, args: sizes.append(tuple(args[0].shape[-2:])))
    try:
        twice = RegionalPipeline(world_pipe, collage_strength=0.1, collage_canvas="plain", collage_fit="thing",
                                 collage_scale=2)(prompt, regions, generator=torch.Generator().manual_seed(4), **settings)
    finally:
        hook.remove()
    assert twice.shape == (64, 64, 3) and sizes == [(16, 16)] * 40 + [(32, 32)] * 2


def test_a_strength_outside_zero_to_one_or_an_unknown_canvas_is_refused_before_anything_loads():
    from mos_lightning.tasks import RegionalTask

    with pytest.raises(ValueError, match=r"collage_strength must be in \[0, 1\]"):
        RegionalTask(collage_strength=1.5)
    assert RegionalTask(collage_strength=0.2).hparams.collage_strength == 0.2
    with pytest.raises(ValueError, match="collage_canvas must be 'regional' or 'plain'"):
        RegionalPipeline(None, collage_canvas="blank")
    with pytest.raises(ValueError, match="collage_canvas must be 'regional' or 'plain'"):
        RegionalTask(collage_canvas="blank")
    with pytest.raises(ValueError, match="collage_fit must be 'cover' or 'thing'"):
        RegionalPipeline(None, collage_fit="stretch")
    with pytest.raises(ValueError, match="collage_fit must be 'cover' or 'thing'"):
        RegionalTask(collage_fit="stretch")
    for scale in (0, 1.5):
        with pytest.raises(ValueError, match="collage_scale must be a whole number >= 1"):
            RegionalPipeline(None, collage_scale=scale)
    with pytest.raises(ValueError, match="collage_scale must be a whole number >= 1"):
        RegionalTask(collage_scale=0)
