"""``world.train vae``: a base's VAE trained further, written as a new base folder that loads like any other."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import REPO

from mos_lightning.world.claims_regional import LAYOUTS
from mos_lightning.world.vae_train import check_summary, recolour

BASE = REPO / "demo" / "world" / "base"


def test_recolouring_turns_colours_keeps_greys_grey_and_leaves_the_rest():
    x = torch.rand(64, 3, 8, 8) * 2 - 1
    x[:, :, 0, 0] = 0.3  # a grey pixel: hue and saturation cannot move it off the grey axis
    unchanged = recolour(x, torch.Generator().manual_seed(0), share=0.0)
    assert torch.equal(unchanged, x)
    changed = recolour(x, torch.Generator().manual_seed(0), share=1.0)
    assert changed.min() >= -1 and changed.max() <= 1
    assert (changed - x).abs().flatten(1).amax(1).min() > 0.01  # every picture changed
    grey = changed[:, :, 0, 0]
    assert torch.allclose(grey, grey[:, :1].expand_as(grey), atol=1e-5)
    some = recolour(x, torch.Generator().manual_seed(0), share=0.5)
    kept = [torch.equal(some[k], x[k]) for k in range(64)]
    assert 16 < sum(kept) < 48


def test_things_weigh_more_than_the_background():
    from mos_lightning.world.scenes import Scene, Thing
    from mos_lightning.world.vae_train import thing_weights

    scenes = [Scene("grass", (Thing("ball", "red", x=0.25, y=0.5, radius=0.15), Thing("cube", "blue", x=0.75, y=0.5,
                                                                                           radius=0.15)))]
    weights = thing_weights(scenes, 64, 4.0)[0, 0].float()
    assert weights[32, 16] == weights[32, 48] == 5.0  # each thing's centre
    assert weights[0, 0] == weights[32, 32] == weights[60, 16] == 1.0  # a corner, between the things, below one
    assert 0.05 < (weights > 1).float().mean() < 0.25


def test_a_vae_trained_further_is_a_new_base_with_its_record(tmp_path):
    """The decoder alone: the encoder, UNet and text encoder stay bit-exact (every latent unchanged); both halves:
    the scaling factor is measured again; the folder loads through ``from_pretrained``, and is never overwritten."""
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file

    from mos_lightning.world.train import main as train

    out = tmp_path / "decoder"
    train(["vae", str(out), "--from", str(BASE), "--vae-steps", "3", "--pictures", "24", "--decoder-only", "--no-check",
           "--thing-weight", "4"])
    source, trained = (load_file(f / "vae" / "diffusion_pytorch_model.safetensors") for f in (BASE, out))
    assert all(torch.equal(source[k], trained[k]) for k in source if k.startswith(("encoder.", "quant_conv.")))
    assert any(not torch.equal(source[k], trained[k]) for k in source if k.startswith("decoder."))
    for part in ("unet", "text_encoder"):
        name = "model.safetensors" if part == "text_encoder" else "diffusion_pytorch_model.safetensors"
        assert (out / part / name).read_bytes() == (BASE / part / name).read_bytes()
    record = json.loads((out / "training.json").read_text())
    assert record["kind"] == "vae" and record["decoder_only"] and record["thing_weight"] == 4 and record["resumed_from"]["kind"] == "base"
    assert record["vae_steps"] == 3 and record["check_after"] is None  # --no-check: the gate is tested below
    with pytest.raises(FileExistsError, match="never overwritten"):
        train(["vae", str(out), "--from", str(BASE), "--vae-steps", "1", "--pictures", "24", "--no-check"])

    both = tmp_path / "both"
    train(["vae", str(both), "--from", str(BASE), "--vae-steps", "3", "--pictures", "24", "--vae-lr", "1e-2", "--no-check"])
    pipe = StableDiffusionPipeline.from_pretrained(both, safety_checker=None, requires_safety_checker=False)
    assert pipe.vae.config.scaling_factor != pytest.approx(json.loads((BASE / "training.json").read_text())["scaling_factor"], abs=1e-6)
    assert not list(tmp_path.glob("*.partial"))


def test_the_gate_reads_what_survives():
    from mos_lightning.world.vae_check import load_vae

    sizes = dict(concepts=["zigcone"], count=4, real=2, things=16, scenes=4, layouts=[LAYOUTS[1]])
    vae = load_vae(str(BASE))
    kept = check_summary(vae, **sizes)
    with torch.no_grad():
        vae.decoder.conv_out.weight.zero_()
        vae.decoder.conv_out.bias.zero_()
    blank = check_summary(vae, **sizes)
    assert kept["concepts"] > 0.5 and kept["things"] > 0.5
    assert blank["concepts"] == 0 and blank["layouts"] == [0, 0] and blank["2 things"][0] == 0
