"""The world base's denoiser training loop: UNet and text encoder together on the diffusion loss, with an
exponential moving average of the weights (used by :mod:`mos_lightning.world.train`); optionally a grounding loss
that asks each thing's words to attend inside its box (:mod:`mos_lightning.world.grounding`)."""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F

from .grounding import Targets, attention_maps, grounding_loss


def train_denoiser(pipe, latents: tuple[torch.Tensor, torch.Tensor], captions: list[list[str]], steps: int,
                   batch: int, lr: float, device: str, drop_text: float = 0.1, ema_decay: float = 0.999,
                   warmup: int = 500, stream: int = 2, grounding: float = 0.0, targets: Targets | None = None) -> float:
    """UNet and text encoder together on the diffusion loss (captions dropped 10% of the time, for CFG); the
    returned model is the exponential moving average of the weights. ``captions[k]``: picture k's captions, one
    drawn per step (a single caption per picture draws nothing: the batches are those of one caption each), the
    first its exact caption. ``grounding`` > 0 adds that times :func:`~mos_lightning.world.grounding.grounding_loss`
    for the pictures drawn with their exact caption (``targets[k]``: picture k's things, its words and box)."""
    from diffusers import DDPMScheduler

    from .train import log

    unet, text_encoder, tokenizer = pipe.unet.to(device).train(), pipe.text_encoder.to(device).train(), pipe.tokenizer
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    ids = tokenizer([c for options in captions for c in options], padding="max_length",
                    max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
    counts = torch.tensor([len(options) for options in captions])
    first = torch.cumsum(counts, 0) - counts  # row of picture k's first caption
    empty = tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt").input_ids
    params = [*unet.parameters(), *text_encoder.parameters()]
    ema = [p.detach().clone() for p in params]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    warmup = min(warmup, steps // 10 + 1)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
    generator = torch.Generator().manual_seed(stream)  # a resumed run draws other batches than its first part
    mean, std = latents
    scale = pipe.vae.config.scaling_factor
    if grounding and targets is None:
        raise ValueError("a grounding loss needs each picture's things (targets)")
    running = grounded_running = None
    with attention_maps(unet) if grounding else nullcontext() as maps:
        for step in range(steps):
            index = torch.randint(0, mean.shape[0], (batch,), generator=generator)
            x0 = (mean[index] + std[index] * torch.randn(mean[index].shape, generator=generator)) * scale
            noise = torch.randn(x0.shape, generator=generator)
            t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (batch,), generator=generator)
            row = first[index]
            if counts.max() > 1:
                row = row + (torch.rand(batch, generator=generator) * counts[index]).long()
            tokens = ids[row].clone()
            dropped = torch.rand(batch, generator=generator) < drop_text
            tokens[dropped] = empty[0]
            noisy = noise_scheduler.add_noise(x0, noise, t)
            states = text_encoder(tokens.to(device))[0]
            if maps is not None:
                maps.clear()
                maps.recording = True
            prediction = unet(noisy.to(device), t.to(device), states).sample
            diffusion = loss = F.mse_loss(prediction, noise.to(device))
            if maps is not None:
                maps.recording = False
                exact = (row == first[index]) & ~dropped  # the targets name the words of each exact caption
                asked = [targets[k] if keep else [] for k, keep in zip(index.tolist(), exact.tolist(), strict=True)]
                grounded = grounding_loss(maps, asked)
                loss = diffusion + grounding * grounded
                grounded_running = grounded.item() if grounded_running is None else 0.98 * grounded_running + 0.02 * grounded.item()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            with torch.no_grad():
                decay = min(ema_decay, (1 + step) / (10 + step))
                for e, p in zip(ema, params, strict=True):
                    e.mul_(decay).add_(p.detach(), alpha=1 - decay)
            running = diffusion.item() if running is None else 0.98 * running + 0.02 * diffusion.item()
            if step % 200 == 0 or step == steps - 1:
                log(f"denoiser step {step}/{steps}: loss {running:.4f}"
                    + (f", grounding {grounded_running:.4f}" if maps is not None else ""))
    with torch.no_grad():
        for e, p in zip(ema, params, strict=True):
            p.copy_(e)
    return running
