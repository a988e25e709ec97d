"""Widen a world base's latent: more latent channels at the same 16 × 16 grid.

A picture's designs are drawn in details finer than the VAE's 4 × 4-pixel latent cell; four channels a cell is
what blurs them (``world.check vae``: real (c)-layouts read right in 90 % of boxes, through the shipped VAE 47 %).
Sixteen channels hold as many numbers as a scale-factor-2 latent (32 × 32 × 4) while the UNet still works on a
16 × 16 grid — its cost, and so every tuning's, fusion's and sampler's, barely changes (only its first and last
convolutions grow). Later latent diffusion models widened their latents for the same reason.

Both widenings keep what was learnt: the old channels' weights are copied and the new ones start silent, so a
widened VAE decodes a latent's old channels exactly as before and a widened UNet predicts the old channels' noise
exactly as before (and zero for the new ones) until training moves them.
"""

from __future__ import annotations

import torch


def _latent_rows(old: int, new: int) -> torch.Tensor:
    """Where an encoder's ``2 × old`` moment channels (means, then log-variances) sit among ``2 × new``."""
    return torch.cat([torch.arange(old), new + torch.arange(old)])


def _same_shapes_copied(narrow, wide) -> dict:
    """``wide``'s state dict with every tensor that ``narrow`` has in the same shape copied from it (all but the
    layers that touch the latent)."""
    state, target = narrow.state_dict(), wide.state_dict()
    return {name: state[name].clone() if name in state and state[name].shape == t.shape else t
            for name, t in target.items()}


def widen_vae_latent(vae, channels: int):
    """A new ``AutoencoderKL`` like ``vae`` with ``channels`` latent channels (≥ the old count); the old channels'
    weights copied, the new means' encoder rows freshly initialised (so they start carrying something), their
    log-variances the old ones' mean, and nothing of them read by the decoder yet."""
    from diffusers import AutoencoderKL

    old = vae.config.latent_channels
    if channels < old:
        raise ValueError(f"latent_channels {channels} < the VAE's {old}: a latent can only be widened")
    wide = AutoencoderKL.from_config({**vae.config, "latent_channels": channels})
    state, target = vae.state_dict(), _same_shapes_copied(vae, wide)
    rows = _latent_rows(old, channels)
    conv_out_w, conv_out_b = target["encoder.conv_out.weight"], target["encoder.conv_out.bias"]
    conv_out_w[channels:], conv_out_b[channels:] = 0, 0  # new log-variances: read below, from the old ones
    conv_out_w[rows] = state["encoder.conv_out.weight"]
    conv_out_b[rows] = state["encoder.conv_out.bias"]
    old_quant, old_bias = state["quant_conv.weight"][:, :, 0, 0], state["quant_conv.bias"]
    quant, bias = torch.eye(2 * channels), torch.zeros(2 * channels)
    quant[rows[:, None], rows[None, :]], bias[rows] = old_quant, old_bias
    new_logvars = torch.arange(channels + old, 2 * channels)
    quant[new_logvars] = 0  # each new log-variance is the old ones' mean: as small, so the new means are not drowned
    quant[new_logvars[:, None], rows[None, :]] = old_quant[old:].mean(0)
    bias[new_logvars] = old_bias[old:].mean()
    target["quant_conv.weight"], target["quant_conv.bias"] = quant[:, :, None, None], bias
    post = torch.eye(channels)
    post[:old, :old] = state["post_quant_conv.weight"][:, :, 0, 0]
    target["post_quant_conv.weight"] = post[:, :, None, None]
    target["post_quant_conv.bias"] = torch.zeros(channels)
    target["post_quant_conv.bias"][:old] = state["post_quant_conv.bias"]
    decoder_in = torch.zeros_like(target["decoder.conv_in.weight"])
    decoder_in[:, :old] = state["decoder.conv_in.weight"]  # the new channels are not read until trained
    target["decoder.conv_in.weight"] = decoder_in
    wide.load_state_dict(target)
    return wide


def widen_unet_latent(unet, channels: int):
    """A new ``UNet2DConditionModel`` like ``unet`` reading and predicting ``channels`` latent channels: the old
    channels' first- and last-convolution weights copied, the new inputs not read and the new outputs zero until
    trained."""
    from diffusers import UNet2DConditionModel

    old = unet.config.in_channels
    if channels < old or unet.config.out_channels != old:
        raise ValueError(f"cannot widen a UNet of {old} -> {unet.config.out_channels} channels to {channels}")
    wide = UNet2DConditionModel.from_config({**unet.config, "in_channels": channels, "out_channels": channels})
    state, target = unet.state_dict(), _same_shapes_copied(unet, wide)
    conv_in = torch.zeros_like(target["conv_in.weight"])
    conv_in[:, :old] = state["conv_in.weight"]
    target["conv_in.weight"] = conv_in
    conv_out, conv_out_b = torch.zeros_like(target["conv_out.weight"]), torch.zeros(channels)
    conv_out[:old], conv_out_b[:old] = state["conv_out.weight"], state["conv_out.bias"]
    target["conv_out.weight"], target["conv_out.bias"] = conv_out, conv_out_b
    wide.load_state_dict(target)
    return wide
