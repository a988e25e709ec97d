"""(c) over several tunings of a recipe: each seed's run retunes under that seed, the intervals count the tunings'
spread as well as the pictures', the pairing with another recipe keeps the pictures paired, and a folder to pair
with that lacks a setting stops the run before any tuning; a stage cut off half-way is made again."""

from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

from mos_lightning.world.claims_tunings import compare, main, seed_args, two_level_draws
from mos_lightning.world.claims_variant import RECIPES, VariantClaims

BASE = str(REPO / "mos_lightning/demo/world/base")


def scores(*tunings):
    """claims scores of tunings whose one layout's pictures have the given hits under every setting."""
    return [{"layouts": {"a": {c: {"hits": hits, "classes": {"hits": hits}} for c in ("alone", "with", "without")}}}
            for hits in tunings]


def test_each_seed_retunes_the_recipe_under_that_seed(tmp_path):
    claims = VariantClaims(tmp_path / "seed-3", BASE, "sketch", [*RECIPES["reference-attention"], *seed_args(3)],
                           ["with"], 1)
    for args in claims.tune_commands().values():
        text = " ".join(args)
        assert "--seed_everything 3 --model.init_args.init_seed 3" in text
        assert " ".join(RECIPES["reference-attention"]) in text and str(tmp_path / "seed-3") in text


def test_an_interrupted_picture_stage_is_made_again_and_a_finished_one_is_kept(tmp_path):
    claims = VariantClaims(tmp_path / "seed-0", BASE, "sketch", seed_args(0), ["with"], 1)
    runs = []

    def predict(stage, *args):  # the predict process: writes into its output folder; the first one dies half-way
        out = Path(args[args.index("--data.init_args.output_dir") + 1])
        (out / "0000-a").mkdir(parents=True)
        runs.append(out)
        if len(runs) == 1:
            raise SystemExit(f"claims: {stage} failed (exit 1)")

    claims.cli = predict
    with pytest.raises(SystemExit):
        claims.predict_into("with", "regional with", "--config", "c.yaml")
    assert not (tmp_path / "seed-0" / "regional" / "with").exists()  # half a folder is not taken for finished
    claims.predict_into("with", "regional with", "--config", "c.yaml")
    assert (tmp_path / "seed-0" / "regional" / "with" / "0000-a").is_dir() and not runs[-1].exists()
    claims.predict_into("with", "regional with", "--config", "c.yaml")
    assert len(runs) == 2  # finished: not made again


def test_the_interval_counts_the_spread_between_tunings():
    """Two tunings, one drawing every box and one none: resampling only the pictures would give [50 %, 50 %]."""
    result = compare(scores([[True, True]] * 8, [[False, False]] * 8), None, ["with"])
    value, low, high = result["with"]["rates"]["boxes"]
    assert value == 0.5 and low == 0.0 and high == 1.0
    assert [t["boxes"] for t in result["with"]["tunings"]] == [1.0, 0.0]


def test_two_recipes_are_paired_picture_by_picture():
    """Recipe a draws what b draws and the first box of four more pictures (of 40): paired, that gain is certain;
    the pictures themselves (half the boxes hit, at random) vary far more than it. The tunings agree, so only the
    pictures' resampling is left to see."""
    b = np.random.default_rng(1).random((40, 2)) < 0.5
    b[:4, 0] = False
    a = b.copy()
    a[:4, 0] = True
    value, draws = two_level_draws([[[(a, a)]] * 3, [[(b, b)]] * 3])
    gain = draws[:, 0, 0] - draws[:, 1, 0]
    assert value[0, 0] - value[1, 0] == pytest.approx(4 / 80)
    assert np.percentile(gain, 2.5) > 0  # the pictures resampled apart for a and b: the interval holds 0
    with pytest.raises(ValueError, match="different numbers of pictures"):
        two_level_draws([[[(a, a)]], [[(b[:20], b[:20])]]])


def test_two_settings_of_the_same_tunings_are_paired_tuning_by_tuning():
    """A setting that draws what the control draws and one box more in four pictures of 40, for tunings that differ
    far more from each other (one draws nearly every box, one nearly none): the same tunings on both sides make the
    gain certain; tunings resampled apart for each setting would bury it in the tunings' spread."""
    control = [np.ones((40, 2), bool), np.zeros((40, 2), bool)]
    for hits in control:
        hits[:4, 0] = False
    setting = [h.copy() for h in control]
    for hits in setting:
        hits[:4, 0] = True
    value, draws = two_level_draws([[[(h, h)] for h in setting], [[(h, h)] for h in control]], same_tunings=True)
    assert value[0, 0] - value[1, 0] == pytest.approx(4 / 80) and np.percentile(draws[:, 0, 0] - draws[:, 1, 0], 2.5) > 0
    _, apart = two_level_draws([[[(h, h)] for h in setting], [[(h, h)] for h in control]])
    assert np.percentile(apart[:, 0, 0] - apart[:, 1, 0], 2.5) < 0
    tunings = [{"layouts": {"a": {c: {"hits": h.tolist(), "classes": {"hits": h.tolist()}} for c, h in
                                  (("alone", c_), ("with", c_), ("context", s_), ("without", c_))}}}
               for c_, s_ in zip(control, setting, strict=True)]
    result = compare(tunings, None, ["with", "context"])
    assert result["context"]["minus control"]["boxes"][::3] == (pytest.approx(4 / 80), "better")
    assert "minus control" not in result["with"] and "minus against" not in result["context"]


def test_a_folder_to_pair_with_that_lacks_a_setting_stops_before_any_tuning(tmp_path):
    for setting in ("alone", "with", "without"):
        (tmp_path / "world" / "seed-0" / "regional" / setting).mkdir(parents=True)
    (tmp_path / "world" / "seed-1" / "regional" / "with").mkdir(parents=True)
    with pytest.raises(SystemExit, match="seed-0/regional/context, seed-1/regional/alone"):
        main([str(tmp_path / "other"), "--against", str(tmp_path / "world"), "--conditions", "with", "context"])
    assert not (tmp_path / "other").exists()
    with pytest.raises(SystemExit, match="no seed-<k> folders"):
        main([str(tmp_path / "other"), "--against", str(tmp_path)])
