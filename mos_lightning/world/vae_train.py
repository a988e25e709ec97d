"""Train a world base's VAE further — the ceiling of every picture the base draws (``world.check vae``) — and
record that check before and after, so a new VAE is judged by what survives it, not by its loss.

    python -m mos_lightning.world.train vae outputs/world/base-vae --from demo/world/base --vae-steps 1000
    python -m mos_lightning.world.train base outputs/world/base-vae-unet --resume outputs/world/base-vae --unet-steps 2000

The first writes a copy of the base whose VAE (both halves, or with ``--decoder-only`` the decoder alone) trained
``--vae-steps`` more, its latent scaling factor measured again, and ``training.json`` with the run and the check of
the VAE it started from and of the new one. With the decoder alone every latent is unchanged, so every tuning,
fusion and sampler output too: only the pictures they decode to change. With the encoder trained too the latents
move, and the UNet was trained on the old ones: the second command trains its denoiser further on the new ones.

The pictures are world pictures, a share of them recoloured (hue turned about the grey axis, saturation and
brightness scaled, per picture): the VAE then sees colours off the world's eight — a concept's pink or navy —
without seeing any concept.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import torch

from .data import world_pictures, world_scenes
from .model import RESOLUTION
from .scenes import Scene


def recolour(x: torch.Tensor, generator: torch.Generator, share: float) -> torch.Tensor:
    """``share`` of the pictures ``x`` (``[B, 3, H, W]`` in ``[-1, 1]``) recoloured, each its own way: hue turned
    by a random angle about the grey axis, saturation scaled by 0.4–1.3, brightness by 0.6–1.2; the rest unchanged."""
    b = x.shape[0]
    axis = torch.full((3,), 1 / math.sqrt(3))
    cross = torch.tensor([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    angle = torch.rand(b, generator=generator) * 2 * math.pi
    turn = (torch.eye(3) + torch.sin(angle)[:, None, None] * cross  # Rodrigues: rotation about the grey axis
            + (1 - torch.cos(angle))[:, None, None] * (cross @ cross))
    saturation = 0.4 + 0.9 * torch.rand(b, generator=generator)
    brightness = 0.6 + 0.6 * torch.rand(b, generator=generator)
    grey = x.mean(1, keepdim=True)
    y = torch.einsum("bij,bjhw->bihw", turn, x - grey) * saturation[:, None, None, None] + grey
    y = (y + 1) * brightness[:, None, None, None] - 1
    chosen = (torch.rand(b, generator=generator) < share)[:, None, None, None]
    return torch.where(chosen, y, x).clamp(-1, 1)


def thing_weights(scenes: list[Scene], size: int, weight: float) -> torch.Tensor:
    """``[N, 1, size, size]``: 1 on the background, ``1 + weight`` inside each thing's circle (its radius and a
    tenth more, shadow included). The backgrounds' texture (grass, sand, water) is most of a picture's area and of
    its L1 error but none of what the detector reads; the weight spends the VAE's capacity on the things."""
    centre = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    weights = torch.ones(len(scenes), 1, size, size, dtype=torch.float16)  # 8 kB a picture
    for k, scene in enumerate(scenes):
        for thing in scene.things:
            inside = (centre[None, :] - thing.x) ** 2 + (centre[:, None] - thing.y) ** 2 <= (1.1 * thing.radius) ** 2
            weights[k, 0][inside] = 1 + weight
    return weights


def fine_tune_vae(vae, pixels: torch.Tensor, steps: int, batch: int = 32, lr: float = 3e-4, recolour_share: float = 0.25,
                  decoder_only: bool = False, device: str = "cpu", seed: int = 0,
                  weights: torch.Tensor | None = None) -> float:
    """Train ``vae`` ``steps`` steps on ``pixels`` (``[N, 3, H, W]`` in ``[-1, 1]``): the L1 reconstruction of a
    posterior sample plus ``1e-6`` × KL, as the world base's VAE was first trained; ``weights`` (``[N, 1, H, W]``,
    :func:`thing_weights`) weigh each pixel's L1 (normalised to mean 1 per batch). Returns the last 50 steps' mean
    loss."""
    from .train import log

    vae.train().to(device)
    vae.requires_grad_(not decoder_only)
    for module in (vae.decoder, vae.post_quant_conv):
        module.requires_grad_(True)
    optimizer = torch.optim.AdamW([p for p in vae.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    for step in range(steps):
        index = torch.randint(0, pixels.shape[0], (batch,), generator=generator)
        x = recolour(pixels[index], generator, recolour_share).to(device)
        with torch.set_grad_enabled(not decoder_only):
            posterior = vae.encode(x).latent_dist
            latents = posterior.sample(generator=None)
        error = (vae.decode(latents).sample - x).abs()
        if weights is not None:
            w = weights[index].to(device, torch.float32)
            error = error * w / w.mean()
        loss = error.mean()
        if not decoder_only:
            loss = loss + 1e-6 * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % 100 == 0 or step == steps - 1:
            log(f"vae step {step}/{steps}: loss {losses[-1]:.4f}")
    vae.requires_grad_(False)
    return sum(losses[-50:]) / max(1, len(losses[-50:]))


def check_summary(vae, **sizes) -> dict:
    """``world.check vae``'s headline numbers: single things (all three right), two- and three-thing scenes (things,
    whole pictures), concepts alone and (c)'s layouts (boxes, whole pictures), through ``vae``. ``sizes``: the
    check's own arguments (how many pictures of each kind; its defaults otherwise)."""
    from .vae_check import vae_check

    result = vae_check(vae.eval(), **sizes)
    return {"things": result["things"]["round_trip"]["all three"],
            **{f"{n} things": [result[f"{n} things"]["round_trip"][k] for k in ("thing", "picture")] for n in (2, 3)},
            "concepts": result["concepts"]["pooled"]["round_trip"][0],
            "layouts": [result["layouts"]["pooled"]["round_trip"][k][0] for k in ("boxes", "all")]}


def train_vae_further(out: Path, source: Path, steps: int, pictures: int, batch: int, lr: float, recolour_share: float,
                      decoder_only: bool, device: str, seed: int, check: bool = True, thing_weight: float = 0.0,
                      latent_channels: int | None = None) -> dict:
    """A copy of the base ``source`` in ``out`` with its VAE trained further (:func:`fine_tune_vae` on ``pictures``
    world pictures of ``seed``, things' pixels weighted ``1 + thing_weight``) and its scaling factor measured again;
    ``training.json`` records the run and, with ``check``, :func:`check_summary` of both VAEs. ``latent_channels``:
    first widen the latent to this many channels (:func:`~mos_lightning.world.latent_width.widen_vae_latent`); the
    UNet of ``out`` is then the source's, widened the next time ``world.train base --resume out`` trains it."""
    from diffusers import AutoencoderKL

    from .train import encode_all, machine

    start = time.time()
    if out.exists():
        raise FileExistsError(f"{out} exists: choose a new folder (a base is never overwritten)")
    if latent_channels is not None and decoder_only:
        raise ValueError("--latent-channels trains the encoder's new channels: it cannot go with --decoder-only")
    vae = AutoencoderKL.from_pretrained(source / "vae")
    if latent_channels is not None:  # widened (or refused) before any picture is drawn
        from .latent_width import widen_vae_latent

        wide = widen_vae_latent(vae, latent_channels)
    images, _ = world_pictures(pictures, seed, RESOLUTION, cache=out.parent / f"world-{pictures}-{seed}.npz")
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    before = check_summary(vae) if check else None
    if latent_channels is not None:
        vae = wide
    weights = thing_weights(world_scenes(pictures, seed), RESOLUTION, thing_weight) if thing_weight else None
    loss = fine_tune_vae(vae, pixels, steps, batch, lr, recolour_share, decoder_only, device, seed, weights)
    vae.to("cpu").eval()
    if not decoder_only:  # the encoder moved: unit-variance latents again, as the UNet expects
        mean, _ = encode_all(vae, pixels[:4096], "cpu")
        vae.register_to_config(scaling_factor=float(1.0 / mean.std()))
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source, partial, ignore=shutil.ignore_patterns("vae", "training.json"))
    vae.save_pretrained(partial / "vae")
    record = {"kind": "vae", "source": str(source), "pictures": pictures, "seed": seed, "vae_steps": steps,
              "batch": batch, "lr": lr, "recolour_share": recolour_share, "thing_weight": thing_weight,
              "decoder_only": decoder_only, "latent_channels": vae.config.latent_channels,
              "final_vae_loss": loss, "scaling_factor": vae.config.scaling_factor,
              "check_before": before, "check_after": check_summary(vae) if check else None,
              "minutes": round((time.time() - start) / 60, 1), "machine": machine(), "torch": torch.__version__}
    source_record = source / "training.json"
    if source_record.is_file():
        record["resumed_from"] = json.loads(source_record.read_text())
    (partial / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    partial.rename(out)  # the folder appears whole or not at all
    return record
