"""Training losses of ED-LoRA tuning: masked diffusion loss and cross-attention regularisation."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def masked_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per-pixel MSE (mean over channels) weighted by ``weight`` [B,1,h,w], normalised per sample by its sum."""
    if weight.shape[-2:] != pred.shape[-2:]:
        raise ValueError(
            f"loss mask is {tuple(weight.shape[-2:])} but latents are {tuple(pred.shape[-2:])}: set the data "
            "module's mask_downsample to the VAE scale factor"
        )
    err = (pred.float() - target.float()).pow(2).mean(1, keepdim=True)
    per_sample = (err * weight).sum((1, 2, 3)) / weight.sum((1, 2, 3)).clamp_min(1e-8)
    return per_sample.mean()


def attention_regularisation(
    maps: dict[int, torch.Tensor], token_positions: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Cross-attention regularisation of one concept's tokens against its foreground mask.

    ``maps``: layer → head-averaged attention ``[B, N_pixels, T]``; ``token_positions``: ``[B, T, K]``
    (position t holds the concept's k-th token); ``mask``: ``[B, 1, h, w]`` at latent resolution.
    Maps are averaged over the layers of each resolution. The first token is penalised for attention
    outside the mask; the others are pushed towards the mask (MSE). Losses average over resolutions.
    """
    by_size: dict[int, list[torch.Tensor]] = {}
    for layer_map in maps.values():
        by_size.setdefault(layer_map.shape[1], []).append(layer_map)
    positions = token_positions.to(next(iter(maps.values())).dtype)
    h, w = mask.shape[-2:]
    losses = []
    for pixels, layer_maps in by_size.items():
        ratio = math.sqrt(h * w / pixels)
        size = (round(h / ratio), round(w / ratio))
        attn = torch.einsum("bnt,btk->bkn", torch.stack(layer_maps).mean(0), positions)
        attn = attn.view(attn.shape[0], attn.shape[1], *size).float()  # [B, K, h', w']
        m = F.adaptive_avg_pool2d(mask.float(), size)  # [B, 1, h', w']
        outside = 1 - m
        first = (attn[:, :1] * outside).sum((1, 2, 3)) / outside.sum((1, 2, 3)).clamp_min(1e-8)
        loss = first.mean()
        if attn.shape[1] > 1:
            loss = loss + F.mse_loss(attn[:, 1:], m.expand_as(attn[:, 1:]))
        losses.append(loss)
    return torch.stack(losses).mean()
