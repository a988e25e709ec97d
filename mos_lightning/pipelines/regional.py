"""Regionally controllable multi-concept sampling, with optional T2I-Adapter conditions (pose, sketch…).

Wraps an :class:`~mos_lightning.pipelines.EDLoRAPipeline` (usually a fused model, whose concepts are
loaded) and runs its own denoising loop, so that the cross-attention sees every region's prompt and
the UNet gets the adapters' residuals. Usable without Lightning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..attention import attention_processors, set_attention_processors
from ..attention.regions import BoxRounding, Region, RegionLayout, box_fractions, feature_mask, install_regional_processors
from ..defaults import NEGATIVE_PROMPT
from .collage import check_canvas, check_fit, check_scale, paste, plain_canvas, resized, start_index
from .edlora import EDLoRAPipeline, to_uint8


@dataclass
class AdapterCondition:
    """One T2I-Adapter with its condition image (resized to the output) and weight (0 = no effect); ``regions``
    give other weights inside boxes (the reference's ``region_*_adaptor_weight``; later boxes win on overlaps)."""

    adapter: Any  # diffusers T2IAdapter
    image: Image.Image
    weight: float = 1.0
    regions: list[tuple[tuple, float]] = field(default_factory=list)  # (box [top, left, bottom, right], weight)

    def weight_map(self, height: int, width: int, h: int, w: int, rounding: BoxRounding = "inward") -> torch.Tensor | float:
        """The weight at every cell of an ``h × w`` feature map of a ``height × width`` image."""
        if not self.regions:
            return self.weight
        weights = torch.full((h, w), float(self.weight))
        for box, weight in self.regions:
            weights[feature_mask(box_fractions(box, height, width), h, w, rounding)] = weight
        return weights


class RegionalPipeline:
    """``pipe`` with regional prompts: ``RegionalPipeline(pipe)(prompt, regions, …)`` → uint8 ``[H, W, 3]`` images."""

    def __init__(self, pipe: EDLoRAPipeline, box_rounding: BoxRounding = "inward", solo_steps: int = 0,
                 bounded_steps: int = 0, collage_strength: float = 0.0,
                 collage_canvas: Literal["regional", "plain"] = "regional", collage_guidance: float | None = None,
                 collage_fit: Literal["cover", "thing"] = "cover", collage_scale: int = 1):
        self.pipe = pipe
        self.box_rounding = box_rounding  # which feature cells a box covers (see attention.regions.feature_mask)
        # the first `solo_steps` steps: each box's noise prediction from its own prompt alone (see solo_noise)
        self.solo_steps = solo_steps
        # the first `bounded_steps` steps: a box's cells attend (self-attention) to their box and the background only
        self.bounded_steps = bounded_steps
        # > 0: start from a collage of each region drawn alone, denoised again for this share of the steps (collage.py)
        self.collage_strength = collage_strength
        # what the collage's pieces are pasted on: the regional picture, or one colour (their borders' mean)
        self.collage_canvas = check_canvas(collage_canvas)
        self.collage_guidance = collage_guidance  # the collage's steps' guidance scale (None: the sampling's)
        self.collage_fit = check_fit(collage_fit)  # a piece scaled to cover its box, or only its thing fitted in it
        # the collage made and denoised at this multiple of the size, then resized to it: pieces shrink less
        self.collage_scale = check_scale(collage_scale)

    def image_size(self, height: int | None, width: int | None, conditions: list[AdapterCondition]) -> tuple[int, int]:
        native = self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor
        height, width = height or native, width or native
        multiple = max([self.pipe.vae_scale_factor] + [int(c.adapter.total_downscale_factor) for c in conditions])
        if height % multiple or width % multiple:
            raise ValueError(f"height and width must be multiples of {multiple} (the VAE's and adapters' downscale "
                             f"factor), got {height}x{width}")
        return height, width

    @torch.no_grad()
    def adapter_states(self, conditions: list[AdapterCondition], height: int, width: int) -> list[torch.Tensor] | None:
        """Σ weight · adapter(condition image), per UNet level (None without conditions)."""
        states = None
        device, dtype = self.pipe.unet.device, self.pipe.unet.dtype
        for c in conditions:
            image = c.image.convert("RGB").resize((width, height), Image.Resampling.BICUBIC)
            pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
            if c.adapter.config.in_channels == 1:  # sketch adapters read one channel
                pixels = pixels.mean(1, keepdim=True)
            features = [f * _on(c.weight_map(height, width, f.shape[-2], f.shape[-1], self.box_rounding), f)
                        for f in c.adapter(pixels.to(device, dtype))]
            states = features if states is None else [s + f for s, f in zip(states, features, strict=True)]
        return states

    def guided_states(self, conditions: list[AdapterCondition], height: int, width: int, cfg: bool):
        """:meth:`adapter_states`, doubled for classifier-free guidance's two halves when ``cfg``."""
        states = self.adapter_states(conditions, height, width)
        return [torch.cat([s, s]) for s in states] if states is not None and cfg else states

    def encode_contexts(self, prompts: list[str]) -> torch.Tensor:
        """``[1, K1 * L * T, C]``: each prompt's layer-wise encoding, side by side."""
        device = self.pipe.unet.device
        return torch.cat([self.pipe.encode_layerwise([p], device) for p in prompts], dim=1).to(self.pipe.unet.dtype)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str,
        regions: list[Region],
        negative_prompt: str = NEGATIVE_PROMPT,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 20,
        guidance_scale: float = 7.5,
        generator: torch.Generator | None = None,
        conditions: list[AdapterCondition] | None = None,
    ) -> np.ndarray:
        pipe, conditions = self.pipe, list(conditions or [])
        height, width = self.image_size(height, width, conditions)
        layout = RegionLayout([r.box for r in regions], height, width, pipe.vae_scale_factor, self.box_rounding)
        cfg = guidance_scale > 1
        context = self.encode_contexts([prompt] + [r.prompt for r in regions])
        if cfg:
            negatives = [negative_prompt] + [negative_prompt if r.negative_prompt is None else r.negative_prompt
                                              for r in regions]
            context = torch.cat([self.encode_contexts(negatives), context])
        states = self.guided_states(conditions, height, width, cfg)
        latents = pipe.prepare_latents(1, pipe.unet.config.in_channels, height, width, context.dtype, pipe.unet.device,
                                       generator)
        collage = self.collage_strength > 0 and bool(regions)
        image = None  # on a plain canvas the regional picture is not needed (its noise is still drawn, above)
        if not (collage and self.collage_canvas == "plain"):
            solo = self.solo_inputs(regions, negative_prompt, cfg, height, width, latents) if self.solo_steps else None
            image = self.decode(self.denoise(latents, layout, context, states, guidance_scale, num_inference_steps, solo))
        if collage:
            image = self.from_collage(image, regions, (height, width), context, states, conditions, negative_prompt,
                                      num_inference_steps, guidance_scale, generator)
        return image

    def denoise(self, latents: torch.Tensor, layout: RegionLayout, context: torch.Tensor, states, guidance_scale: float,
                num_inference_steps: int, solo=None, start: int = 0) -> torch.Tensor:
        """The denoising loop under ``layout``, from step ``start`` of ``num_inference_steps`` (``latents`` noised
        to that step)."""
        pipe, cfg = self.pipe, guidance_scale > 1
        pipe.scheduler.set_timesteps(num_inference_steps, device=pipe.unet.device)
        if start and hasattr(pipe.scheduler, "set_begin_index"):  # multistep solvers: their step count starts here
            pipe.scheduler.set_begin_index(start)
        previous = attention_processors(pipe.unet)
        install_regional_processors(pipe.unet, layout)
        try:
            for step, t in enumerate(pipe.progress_bar(pipe.scheduler.timesteps[start:]), start=start):
                layout.bounded = step < self.bounded_steps
                model_input = torch.cat([latents] * 2) if cfg else latents
                model_input = pipe.scheduler.scale_model_input(model_input, t)
                noise = self.guided_noise(model_input, t, context, states, guidance_scale)
                if solo is not None and step < self.solo_steps:
                    noise = self.solo_noise(noise, model_input, t, solo, states, guidance_scale)
                latents = pipe.scheduler.step(noise, t, latents).prev_sample
        finally:
            set_attention_processors(pipe.unet, previous)
        return latents

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """One latent as a uint8 ``[H, W, 3]`` picture."""
        image = self.pipe.vae.decode(latents / self.pipe.vae.config.scaling_factor).sample
        return to_uint8(self.pipe.image_processor.postprocess(image, output_type="np")[0])

    def from_collage(self, image: np.ndarray | None, regions: list[Region], size: tuple[int, int], context: torch.Tensor,
                     states, conditions: list[AdapterCondition], negative_prompt: str, num_inference_steps: int,
                     guidance_scale: float, generator: torch.Generator | None) -> np.ndarray:
        """Each region's prompt drawn alone (no regions, no adapters; the generator's next noise), pasted over
        ``image`` (the regional picture; None: a plain canvas) into its box (:mod:`~mos_lightning.pipelines.collage`)
        at ``collage_scale`` times the size, then noised to the last ``collage_strength`` of the steps, denoised
        again under region control and resized to ``size``."""
        pipe, cfg = self.pipe, guidance_scale > 1
        height, width = size
        alone_layout = RegionLayout([], height, width, pipe.vae_scale_factor, self.box_rounding)
        pieces = []
        for region in regions:
            alone = self.alone_context(region, negative_prompt, cfg)
            noise = pipe.prepare_latents(1, pipe.unet.config.in_channels, height, width, alone.dtype, pipe.unet.device,
                                         generator)
            pieces.append(self.decode(self.denoise(noise, alone_layout, alone, None, guidance_scale, num_inference_steps)))
        height, width = height * self.collage_scale, width * self.collage_scale
        layout = RegionLayout([r.box for r in regions], height, width, pipe.vae_scale_factor, self.box_rounding)
        if self.collage_scale > 1:  # the adapters' states for the larger size (``states``: the picture's)
            states = self.guided_states(conditions, height, width, cfg)
        canvas = plain_canvas(pieces, height, width) if image is None else resized(image, height, width)
        collage = paste(canvas, pieces, [r.box for r in regions], self.collage_fit)
        pixels = torch.from_numpy(collage.astype(np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
        latents = pipe.vae.encode(pixels.to(pipe.vae.device, pipe.vae.dtype)).latent_dist.mean
        latents = latents.to(context.dtype) * pipe.vae.config.scaling_factor
        start = start_index(num_inference_steps, self.collage_strength)
        pipe.scheduler.set_timesteps(num_inference_steps, device=pipe.unet.device)
        noise = pipe.prepare_latents(1, pipe.unet.config.in_channels, height, width, context.dtype, pipe.unet.device,
                                     generator) / pipe.scheduler.init_noise_sigma
        latents = pipe.scheduler.add_noise(latents, noise, pipe.scheduler.timesteps[start:start + 1])
        guidance = guidance_scale if self.collage_guidance is None else self.collage_guidance
        if cfg and guidance <= 1:  # unguided: the prompts' half of the context and adapter states only
            context, states = context[1:], None if states is None else [s[1:] for s in states]
        image = self.decode(self.denoise(latents, layout, context, states, guidance, num_inference_steps, start=start))
        return resized(image, *size)

    def guided_noise(self, model_input: torch.Tensor, t, context: torch.Tensor, states, guidance_scale: float):
        """The UNet's noise prediction with classifier-free guidance (``model_input`` doubled when guided)."""
        residuals = [s.clone() for s in states] if states is not None else None
        noise = self.pipe.unet(model_input, t, encoder_hidden_states=context,
                               down_intrablock_additional_residuals=residuals).sample
        if guidance_scale > 1:
            uncond, cond = noise.chunk(2)
            noise = uncond + guidance_scale * (cond - uncond)
        return noise

    def solo_inputs(self, regions: list[Region], negative_prompt: str, cfg: bool, height: int, width: int,
                    latents: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """Per region, once per picture: its prompt's context alone (with its negative when guided) and its cells'
        share of the latent (``mask / count``: overlapping boxes share a cell equally)."""
        if not regions:
            return None
        h, w = latents.shape[-2:]
        masks = torch.stack([feature_mask(box_fractions(r.box, height, width), h, w, self.box_rounding)
                             for r in regions]).to(latents.device, latents.dtype)  # [R, h, w]
        shares = masks / masks.sum(0).clamp_min(1)
        contexts = [self.alone_context(region, negative_prompt, cfg) for region in regions]
        return list(zip(contexts, shares, strict=True))

    def alone_context(self, region: Region, negative_prompt: str, cfg: bool) -> torch.Tensor:
        """``region``'s prompt as the only context, after its negative prompt when guided."""
        context = self.encode_contexts([region.prompt])
        if cfg:
            negative = negative_prompt if region.negative_prompt is None else region.negative_prompt
            context = torch.cat([self.encode_contexts([negative]), context])
        return context

    def solo_noise(self, noise: torch.Tensor, model_input: torch.Tensor, t, solo: list[tuple[torch.Tensor, torch.Tensor]],
                   states, guidance_scale: float) -> torch.Tensor:
        """Inside each box, the noise prediction of the whole latent under that region's prompt alone (no other
        context can leak into it); outside every box, ``noise`` (the regional prediction). Later work
        (MultiDiffusion-style latent compositing) uses this in the first steps, where the layout and colours are
        decided, against attributes leaking between regions."""
        processors = [p for p in attention_processors(self.pipe.unet).values() if hasattr(p, "layout")]
        regional = processors[0].layout
        latent_height, latent_width = regional.latent
        alone = RegionLayout([], latent_height, latent_width, vae_scale=1)  # no boxes: every position reads the one context
        out = noise * (sum(share for _, share in solo) == 0)
        try:
            for p in processors:
                p.layout = alone
            for context, share in solo:
                out = out + self.guided_noise(model_input, t, context, states, guidance_scale) * share
        finally:
            for p in processors:
                p.layout = regional
        return out

PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240)]


def draw_regions(image: np.ndarray, regions: list[Region]) -> np.ndarray:
    """A copy of ``image`` with each region's box and prompt drawn (the debug image)."""
    height, width = image.shape[:2]
    canvas = Image.fromarray(image).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    from ..attention.regions import box_fractions

    for k, region in enumerate(regions):
        top, left, bottom, right = box_fractions(region.box, height, width)
        color = PALETTE[k % len(PALETTE)]
        x0, y0 = left * width, top * height
        xy = (x0, y0, max(x0, right * width - 1), max(y0, bottom * height - 1))
        draw.rectangle(xy, outline=color, width=max(1, min(height, width) // 128))
        draw.text((xy[0] + 2, xy[1] + 2), region.prompt[:40], fill=color)
    return np.asarray(canvas)


def _on(weights: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor | float:
    return weights.to(like.device, like.dtype) if isinstance(weights, torch.Tensor) else weights
