"""A wider latent (``world.train vae --latent-channels``): what the narrow VAE and UNet learnt is kept exactly at
the start, the new channels carry something once trained, and the chain vae → base gives a base that draws."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import REPO

from mos_lightning.world.latent_width import widen_unet_latent, widen_vae_latent

BASE = REPO / "demo" / "world" / "base"


@pytest.fixture(scope="module")
def pictures():
    from mos_lightning.world.data import world_pictures

    images, _ = world_pictures(6, 5, 64)
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1


def test_a_widened_vae_encodes_and_decodes_the_old_channels_as_before(pictures):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(BASE / "vae").eval()
    wide = widen_vae_latent(vae, 16).eval()
    assert wide.config.latent_channels == 16
    with torch.no_grad():
        narrow, widened = vae.encode(pictures).latent_dist, wide.encode(pictures).latent_dist
        assert torch.equal(widened.mean[:, :4], narrow.mean)
        assert torch.allclose(widened.logvar[:, :4], narrow.logvar, atol=1e-5)
        assert widened.mean[:, 4:].std() > 0.05  # the new channels carry the picture from the start
        # as noisy as the old ones, so the new channels' means are not drowned by the sampling noise
        assert torch.allclose(widened.logvar[:, 4:].mean(), narrow.logvar.mean(), atol=1e-4)
        assert torch.equal(wide.decode(widened.mean).sample, vae.decode(narrow.mean).sample)
    with pytest.raises(ValueError, match="only be widened"):
        widen_vae_latent(vae, 2)


def test_a_widened_unet_predicts_the_old_channels_as_before():
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(BASE / "unet").eval()
    wide = widen_unet_latent(unet, 8).eval()
    latents, context = torch.randn(2, 8, 16, 16), torch.randn(2, 77, unet.config.cross_attention_dim)
    with torch.no_grad():
        out = wide(latents, 500, context).sample
        assert torch.equal(out[:, :4], unet(latents[:, :4], 500, context).sample)
    assert torch.equal(out[:, 4:], torch.zeros_like(out[:, 4:]))


def test_the_chain_writes_a_wide_base_that_draws(tmp_path):
    """vae --latent-channels 8, then base --resume: the UNet is widened to match, trained, and the folder loads
    through ``from_pretrained`` and samples a picture."""
    from diffusers import StableDiffusionPipeline

    from mos_lightning.world.train import main as train

    vae_out, base_out = tmp_path / "vae8", tmp_path / "base8"
    with pytest.raises(ValueError, match="decoder-only"):
        train(["vae", str(vae_out), "--from", str(BASE), "--vae-steps", "1", "--pictures", "8", "--no-check",
               "--latent-channels", "8", "--decoder-only"])
    train(["vae", str(vae_out), "--from", str(BASE), "--vae-steps", "2", "--pictures", "8", "--no-check",
           "--latent-channels", "8"])
    assert json.loads((vae_out / "training.json").read_text())["latent_channels"] == 8
    train(["base", str(base_out), "--resume", str(vae_out), "--unet-steps", "2", "--pictures", "8", "--batch", "4"])
    pipe = StableDiffusionPipeline.from_pretrained(base_out, safety_checker=None, requires_safety_checker=False)
    assert pipe.vae.config.latent_channels == pipe.unet.config.in_channels == pipe.unet.config.out_channels == 8
    picture = pipe("a red ball on the grass", num_inference_steps=2, output_type="np",
                   generator=torch.Generator().manual_seed(0)).images
    assert picture.shape == (1, 64, 64, 3) and picture.std() > 0.01
