"""Checks of sampling settings shared by the sampling, regional and evaluation tasks: impossible values fail at once,
legitimate but risky ones are named."""

from __future__ import annotations

from lightning.pytorch.utilities import rank_zero_warn

MAX_LORA_SCALE = 2  # beyond 2× the tuned LoRA a concept's model is far from what was tuned


def check_sampling_settings(num_inference_steps: int, guidance_scale: float, lora_scales=()) -> None:
    """Raise for no denoising steps (the images would be noise); warn for negative or sub-1 guidance and LoRA scales
    outside [0, 2]."""
    if num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be >= 1 (got {num_inference_steps}): with no denoising step the "
                         "images are pure noise; the paper samples 20")
    if guidance_scale < 0:
        rank_zero_warn(f"guidance_scale {guidance_scale} is negative: the sampler is pushed *away* from the prompt "
                       "(the paper uses 7.5; 1 disables guidance)")
    elif 0 < guidance_scale < 1:
        rank_zero_warn(f"guidance_scale {guidance_scale} is between 0 and 1: a weaker than unguided prompt; 1 disables "
                       "guidance, the paper uses 7.5")
    for scale in lora_scales:
        if not 0 <= scale <= MAX_LORA_SCALE:
            rank_zero_warn(f"lora_scale {scale} is outside [0, {MAX_LORA_SCALE}]: the concept's LoRA is "
                           f"{'reversed' if scale < 0 else 'amplified far beyond what was tuned'} (paper 0.7; evaluation 1.0)")
