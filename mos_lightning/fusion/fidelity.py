"""How well a fused model reproduces each concept's own model: relative errors of its text-encoder outputs and
of its UNet noise predictions along the concept's own sampling trajectory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch


@dataclass
class Reference:
    """What concept i's own model produced, kept to measure how well the fused model reproduces it."""

    text_states: torch.Tensor  # [P, L*T, C] own text-encoder outputs for the text prompts
    latents: torch.Tensor  # [S*B, 4, h, w] UNet inputs along the own sampling trajectory
    timesteps: torch.Tensor  # [S*B]
    noise: torch.Tensor  # [S*B, 4, h, w] own UNet predictions


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    diff = (value.double() - reference.double()).norm()
    return float(diff / reference.double().norm().clamp_min(1e-30))


@torch.no_grad()
def unet_fidelity(fuser, index: int, which: Literal["fused", "naive"], batch: int = 8) -> float:
    """Relative error of the fused (or naive) model's noise predictions along concept ``index``'s own trajectory."""
    weights = fuser.fused if which == "fused" else fuser.naive
    pipe, ref, settings = fuser.pipe, fuser.references[index], fuser.settings
    device, dtype = pipe.unet.device, pipe.unet.dtype
    fuser.set_weights("text_encoder", weights["text_encoder"])
    fuser.set_weights("unet", weights["unet"])
    try:
        prompts = [p for p in fuser.prompts(index, settings.spatial_prompts) for _ in settings.spatial_seeds]
        states = pipe.encode_layerwise(prompts, device).to(dtype)
        per_step = len(prompts)
        outputs = []
        for start in range(0, ref.latents.shape[0], batch * per_step):
            x = ref.latents[start : start + batch * per_step].to(device, dtype)
            t = ref.timesteps[start : start + batch * per_step].to(device)
            context = states.repeat(x.shape[0] // per_step, 1, 1)
            outputs.append(pipe.unet(x, t, context).sample.float().cpu())
    finally:
        fuser.restore_base()
    return relative_error(torch.cat(outputs), ref.noise)


@torch.no_grad()
def text_fidelity(fuser, index: int, which: Literal["fused", "naive"]) -> float:
    """Relative error of the fused (or naive) text encoder's outputs on concept ``index``'s text prompts."""
    fuser.set_weights("text_encoder", (fuser.fused if which == "fused" else fuser.naive)["text_encoder"])
    try:
        states = fuser.pipe.encode_layerwise(fuser.prompts(index, fuser.settings.text_prompts), fuser.device)
    finally:
        fuser.restore_base()
    return relative_error(states.float().cpu(), fuser.references[index].text_states)
