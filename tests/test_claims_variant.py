"""(c) for a variant of the claims run: its commands carry the recipe and nothing else of the claims run, the
recipe parses into the loss terms it names, and the pairing reads each setting against the same setting."""

import pytest
from conftest import REPO

from mos_lightning.cli import build_cli
from mos_lightning.losses import AttentionRegularisation, DiffusionLoss
from mos_lightning.world.claims_variant import RECIPES, VariantClaims, compare, main
from mos_lightning.world.concepts import CONCEPTS, write_concept

BASE = str(REPO / "mos_lightning/demo/world/base")


def rates(hits, classes=None):
    return {"hits": hits, "classes": {"hits": classes or hits}}


def test_a_variant_tunes_fuses_and_composes_only_what_it_names(tmp_path):
    claims = VariantClaims(tmp_path, BASE, "sketch", RECIPES["reference-losses"], ["with", "context-sketch"], 1)
    tunes = claims.tune_commands()
    assert sorted(tunes) == [f"tune ed-lora {c}" for c in sorted(CONCEPTS)]
    assert all(" ".join(RECIPES["reference-losses"]) in " ".join(args) for args in tunes.values())
    assert list(claims.fuse_commands()) == ["fuse weak default"]
    assert list(claims.conditions) == ["with", "context-sketch"]


def test_the_reference_recipes_parse_into_the_losses_they_name(tmp_path, monkeypatch):
    """The recipe's overrides go through the real command line (a typo would fail the first tuning of a long run)."""
    monkeypatch.chdir(REPO)  # where the claims run starts its processes: the configs are relative to it
    concept = write_concept("starbox", tmp_path / "starbox", count=2)
    for recipe, mask_loss in (("reference-losses", True), ("reference-attention", False)):
        args = VariantClaims(tmp_path, BASE, "sketch", RECIPES[recipe], ["with"], 1).tune_commands()["tune ed-lora starbox"]
        args = [a if a != str(tmp_path / "concepts" / "starbox") else str(concept) for a in args]
        assert args[0] == "fit"
        cli = build_cli([*args[1:], "--trainer.logger", "false", "--trainer.callbacks", "[]"], run=False)
        diffusion, attention = cli.model.losses
        assert isinstance(diffusion, DiffusionLoss) and diffusion.mask_loss is mask_loss
        assert isinstance(attention, AttentionRegularisation) and attention.weight == 0.01


def test_a_variant_is_paired_with_the_same_setting_of_the_other_run():
    hits = [[True, False]] * 8
    variant = {"layouts": {"a": {"real": rates(hits), "alone": rates(hits), "with": rates([[True, True]] * 8),
                                 "without": rates(hits)}}}
    against = {"layouts": {"a": {c: rates(hits) for c in ("real", "alone", "without")}}}
    against["layouts"]["a"]["with"] = rates([[False, False]] * 8)  # paired with another setting, "with" would gain 0.5
    result = compare(variant, against)
    assert list(result) == ["real", "alone", "with", "without"] and "minus against" not in result["real"]
    assert result["with"]["rates"]["all"][0] == 1.0
    assert result["with"]["minus against"]["boxes"][::3] == (1.0, "better")
    assert result["without"]["minus against"]["boxes"][::3] == (0.0, "tie")
    against["layouts"]["a"]["with"] = rates(hits[:4])
    with pytest.raises(ValueError, match="different numbers of pictures"):
        compare(variant, against)


def test_a_run_to_pair_with_that_lacks_a_setting_stops_before_any_tuning(tmp_path):
    (tmp_path / "claims" / "regional" / "with").mkdir(parents=True)
    with pytest.raises(SystemExit, match="no regional/alone, regional/context"):
        main([str(tmp_path / "variant"), "--against", str(tmp_path / "claims"), "--conditions", "with", "context"])
    assert not (tmp_path / "variant").exists()
