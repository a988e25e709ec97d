"""The VAE check: what of the world's pictures survives a base's VAE, the ceiling of every generated picture."""

from __future__ import annotations

import torch
from conftest import REPO
from PIL import Image

from mos_lightning.world.claims_regional import LAYOUTS
from mos_lightning.world.vae_check import load_vae, vae_check

ARGS = dict(concepts=["zigcone"], count=6, real=2, things=48, scenes=6, layouts=[LAYOUTS[1]])  # zigcone-buoyring


def test_the_round_trip_is_read_not_the_real_pictures(tmp_path):
    """Real pictures read as what they show; their round trip through the shipped VAE keeps the world's own colours,
    and through a VAE whose decoder draws nothing, nothing is read (the check decodes what it judges)."""
    vae = load_vae(str(REPO / "demo/world/base"))
    kept = vae_check(vae, **ARGS, figure=tmp_path / "vae.png")
    assert Image.open(tmp_path / "vae.png").size == (4 * 64 * 2, 64 * 2)  # one layout: its 2 real pictures, 2 round trips
    assert kept["things"]["real"]["colour"] >= 0.9 and kept["things"]["round_trip"]["colour"] >= 0.8
    assert kept["concepts"]["zigcone"]["real"][0] == 1.0 and kept["layouts"]["pooled"]["real"]["boxes"][0] >= 0.8
    with torch.no_grad():
        vae.decoder.conv_out.weight.zero_()
        vae.decoder.conv_out.bias.zero_()  # every decoded picture mid-grey
    blank = vae_check(vae, **ARGS)
    assert blank["concepts"]["zigcone"]["real"][0] == 1.0 and blank["concepts"]["zigcone"]["round_trip"][0] == 0.0
    assert blank["layouts"]["pooled"]["round_trip"]["boxes"][0] == 0.0 and blank["things"]["round_trip"]["class"] < 0.5
    assert blank["2 things"]["real"]["thing"] >= 0.5 and blank["2 things"]["round_trip"]["thing"] == 0.0
