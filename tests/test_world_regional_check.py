"""The regional sampler's positive control (world.regional_check): region prompts made of each thing's own words in
its slot, judged in that slot — on real pictures, and end to end on the shipped world base."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from PIL import Image

from mos_lightning.world.check import held_out_scenes, slot_boxes
from mos_lightning.world.regional_check import judged, regional_check, scene_regions, summary
from mos_lightning.world.scenes import BACKGROUNDS, render

BASE = Path(__file__).resolve().parents[1] / "demo" / "world" / "base"
SKETCH = BASE.parent / "sketch"


@pytest.mark.parametrize("things", [2, 3])
def test_each_thing_gets_its_own_words_in_its_own_slot(things):
    for scene in held_out_scenes(6, things):
        regions = scene_regions(scene)
        assert [r.prompt for r in regions] == [f"{t.words()} {BACKGROUNDS[scene.background]}" for t in scene.things]
        for region, judge_box, thing in zip(regions, slot_boxes(things), scene.things, strict=True):
            top, left, bottom, right = region.box
            assert (left, right) == pytest.approx((judge_box[1], judge_box[3]), abs=1e-3)  # where the judge reads it
            assert top < thing.y < bottom and left < thing.x < right  # where a real picture puts it
        for k, region in enumerate(scene_regions(scene, context=True)):  # the caption, this thing's colour alone
            others = [f"a {t.cls}" for j, t in enumerate(scene.things) if j != k]
            assert scene.things[k].words() in region.prompt and all(o in region.prompt for o in others)
            assert all(t.colour not in region.prompt for j, t in enumerate(scene.things)
                       if j != k and t.colour != scene.things[k].colour)


def test_real_pictures_score_high_and_other_scenes_pictures_low():
    scenes = held_out_scenes(12, 2)
    real = [render(s, seed=950_000 + k)[0] for k, s in enumerate(scenes)]
    right = summary(judged(scenes, real))
    shuffled = real[1:] + real[:1]
    random.Random(0).shuffle(shuffled)
    wrong = summary(judged(scenes, shuffled))
    assert right["thing"][0] >= 0.7 and right["thing"][0] > wrong["thing"][0] + 0.3
    for value, low, high in right.values():
        assert 0 <= low <= value <= high <= 1


def test_regional_check_runs_on_the_world_base(tmp_path):
    figure = tmp_path / "regional.png"
    result = regional_check(str(BASE), count=2, steps=2, things=(2,), sketch=str(SKETCH), figure=figure)["2 things"]
    conditions = ("with control", "control, prompts with context", "control and sketch")
    assert set(result) == {"real", "without", *conditions, *(f"{c} minus without" for c in conditions)}
    for name in ("real", "without", *conditions):
        assert set(result[name]) == {"class", "colour", "thing", "picture"}
    scenes = held_out_scenes(2, 2)
    real = summary(judged(scenes, [render(s, seed=950_000 + k)[0] for k, s in enumerate(scenes)]))
    assert result["real"] == real
    value, low, high, verdict = result["with control minus without"]["thing"]
    assert low <= value <= high and verdict in ("better", "worse", "tie")
    assert Image.open(figure).size == (2 * 64 * 2, 5 * 64 * 2)  # two scenes; real, without, three settings
