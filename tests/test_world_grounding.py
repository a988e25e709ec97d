"""Reading where a world base's cross-attention sends each thing's words (world.grounding, world.attention_check):
the words' positions in the caption, the share of a map inside a box, the grounding loss, and the maps of the
shipped base recorded without changing what its UNet computes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mos_lightning.attention.layers import attention_processors
from mos_lightning.world.attention_check import attention_check
from mos_lightning.world.check import held_out_scenes, load_base
from mos_lightning.world.grounding import attention_maps, grounding_loss, inside_share, thing_box, thing_words_positions
from mos_lightning.world.scenes import caption

BASE = Path(__file__).resolve().parents[1] / "demo" / "world" / "base"


@pytest.fixture(scope="module")
def base():
    return load_base(str(BASE))


@pytest.mark.parametrize("things", [2, 3])
def test_each_things_words_are_found_where_its_caption_names_them(base, things):
    tokenizer = base.tokenizer
    for scene in held_out_scenes(8, things):
        ids = tokenizer(caption(scene), padding="max_length", max_length=tokenizer.model_max_length).input_ids
        positions = thing_words_positions(tokenizer, scene)
        assert [p[0] for p in positions] == sorted(p[0] for p in positions)  # left to right, as the caption lists them
        for thing, found in zip(scene.things, positions, strict=True):
            assert tokenizer.decode([ids[p] for p in found]) == thing.words().split(" ", 1)[1]


def test_the_share_inside_a_box_and_the_loss_that_asks_for_it():
    side, tokens = 8, 10
    box = (0.0, 0.0, 0.5, 0.5)  # the top-left quarter: rows 0-3, columns 0-3
    inside = torch.zeros(side, side)
    inside[:4, :4] = 1
    focused = torch.zeros(side * side, tokens)
    focused[:, 3] = inside.flatten() / inside.sum()  # token 3 reads only the box
    focused[:, 4] = 1 / (side * side)  # token 4 reads everywhere alike
    shares = inside_share(focused, [3, 4], box)
    assert shares.tolist() == pytest.approx([1.0, 0.25])
    maps = [focused[None]]
    assert grounding_loss(maps, [[([3], box)]]).item() == pytest.approx(0.0)
    assert grounding_loss(maps, [[([4], box)]]).item() == pytest.approx(0.75 ** 2)
    assert grounding_loss(maps, [[]]).item() == 0.0  # a picture whose caption was dropped asks nothing
    assert grounding_loss([focused[None, :4]], [[([4], box)]]).item() == 0.0  # 4 × 4 and finer only: 2 × 2 skipped
    spread = focused.clone().requires_grad_()
    grounding_loss([spread[None]], [[([4], box)]]).backward()
    assert spread.grad[:, 4].view(side, side)[:4, :4].mean() < 0 < spread.grad[:, 4].view(side, side)[4:, 4:].mean()


def test_a_things_box_holds_it():
    for scene in held_out_scenes(8, 3):
        for thing in scene.things:
            top, left, bottom, right = thing_box(thing)
            assert 0 <= top < thing.y < bottom <= 1 and 0 <= left < thing.x < right <= 1


def test_recording_the_maps_leaves_the_unet_output_and_processors_as_they_were(base):
    unet, tokens = base.unet, base.tokenizer(["a red ball and a blue cube on the sand"], padding="max_length",
                                             max_length=base.tokenizer.model_max_length, return_tensors="pt").input_ids
    states = base.text_encoder(tokens)[0]
    latent = torch.randn(1, unet.config.in_channels, 16, 16, generator=torch.Generator().manual_seed(0))
    before = attention_processors(unet)
    with torch.no_grad():
        plain = unet(latent, 500, states).sample
        with attention_maps(unet) as maps:
            maps.recording = True
            recorded = unet(latent, 500, states).sample
    assert attention_processors(unet) == before
    torch.testing.assert_close(recorded, plain, atol=1e-5, rtol=1e-4)
    assert [round(m.shape[1] ** 0.5) for m in maps] == [16, 16, 8, 8, 4, 4, 2, 4, 4, 4, 8, 8, 8, 16, 16, 16]
    for m in maps:  # each cell's attention over the caption's tokens sums to one
        torch.testing.assert_close(m.sum(-1), torch.ones(m.shape[:2]))


def test_attention_check_runs_on_the_world_base():
    result = attention_check(str(BASE), count=3, timesteps=(500,))["t=500"]
    for word in ("colour", "class"):
        assert len(result[word]["per layer"]) == 16
        assert all(-1 <= v <= 1 for v in result[word]["per layer"])
        value, low, high = result[word]["fine layers"]
        assert -1 <= low <= value <= high <= 1
