"""Regional cross-attention: each region's pixels attend to that region's prompt, the rest to the global one.

The text states arrive as ``[B, K1 * L * T, C]``: K1 = 1 + number of regions contexts (global first),
each encoded into L layer copies (see :func:`mos_lightning.tokens.encode_prompts`). Cross-attention
layer l attends, for every context, to that context's copy l; inside a region box the output is that
region's attention (the mean where boxes overlap), elsewhere the global prompt's. With CFG the
negative branch carries the negative prompts in the same layout, so each region gets its own negative.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

from .layers import attention_modules, cross_attention_layers, set_attention_processors, to_heads


@dataclass
class Region:
    """A box with its own prompt. ``box`` is ``[top, left, bottom, right]``: fractions of the image when every
    value is ≤ 1, else pixels of the output image."""

    prompt: str
    box: tuple[float, float, float, float]
    negative_prompt: str | None = None  # default: the scene's negative prompt


def box_fractions(box, height: int, width: int) -> tuple[float, float, float, float]:
    """``[top, left, bottom, right]`` as fractions of the image; raises if the box is empty or leaves the image."""
    if len(box) != 4:
        raise ValueError(f"a box is [top, left, bottom, right], got {list(box)}")
    top, left, bottom, right = (float(v) for v in box)
    if max(top, left, bottom, right) > 1:
        if any(v != int(v) for v in (top, left, bottom, right)):
            raise ValueError(f"box {list(box)} mixes fractions (all values <= 1) and pixels (whole numbers)")
        top, bottom, left, right = top / height, bottom / height, left / width, right / width
    if not (0 <= top < bottom <= 1 and 0 <= left < right <= 1):
        raise ValueError(f"box {list(box)} is empty or outside the {height}x{width} image "
                         "(need 0 <= top < bottom <= height and 0 <= left < right <= width)")
    return top, left, bottom, right


BoxRounding = Literal["inward", "outward"]


def feature_mask(fractions: tuple[float, float, float, float], h: int, w: int,
                 rounding: BoxRounding = "inward") -> torch.Tensor:
    """Boolean ``[h, w]`` mask of the feature cells of a box. ``inward`` (the reference's rule): the cells wholly
    inside the box — a small box can have none at a coarse resolution, where the global prompt then holds;
    ``outward``: every cell the box touches — never empty, covers the whole box at every resolution."""
    top, left, bottom, right = fractions
    mask = torch.zeros(h, w, dtype=torch.bool)
    if rounding == "inward":
        mask[math.ceil(top * h) : math.floor(bottom * h), math.ceil(left * w) : math.floor(right * w)] = True
    elif rounding == "outward":
        mask[math.floor(top * h) : math.ceil(bottom * h), math.floor(left * w) : math.ceil(right * w)] = True
    else:
        raise ValueError(f"box rounding must be 'inward' or 'outward', got {rounding!r}")
    return mask


def feature_sizes(latent_h: int, latent_w: int, levels: int = 6) -> list[tuple[int, int]]:
    """Feature-map sizes of the UNet levels: stride-2 convolutions (padding 1) give ceil(h / 2)."""
    sizes = [(latent_h, latent_w)]
    for _ in range(levels):
        h, w = sizes[-1]
        sizes.append((math.ceil(h / 2), math.ceil(w / 2)))
    return sizes


class RegionLayout:
    """Region boxes of one image and their masks at each feature resolution (cached)."""

    def __init__(self, boxes: list[tuple[float, float, float, float]], height: int, width: int, vae_scale: int = 8,
                 rounding: BoxRounding = "inward"):
        self.fractions = [box_fractions(b, height, width) for b in boxes]
        self.rounding = rounding
        self.latent = (height // vae_scale, width // vae_scale)
        self.bounded = False  # self-attention bounded by the boxes now (see .bounded; the pipeline sets it per step)
        self._weights: dict[tuple[int, torch.device, torch.dtype], torch.Tensor] = {}
        self._self_masks: dict[tuple[int, torch.device], torch.Tensor] = {}

    @property
    def num_contexts(self) -> int:
        return 1 + len(self.fractions)

    def size_of(self, tokens: int) -> tuple[int, int]:
        for h, w in feature_sizes(*self.latent):
            if h * w == tokens:
                return h, w
        raise ValueError(f"no UNet level of a {self.latent} latent has {tokens} positions")

    def members(self, tokens: int) -> torch.Tensor:
        """``[K, N]`` bool: the cells of each box at the level with ``tokens`` positions."""
        h, w = self.size_of(tokens)
        if not self.fractions:
            return torch.zeros(0, tokens, dtype=torch.bool)
        return torch.stack([feature_mask(f, h, w, self.rounding).flatten() for f in self.fractions])

    def self_attention_mask(self, tokens: int, device) -> torch.Tensor:
        """``[N, N]`` bool: which cells a cell may attend to under bounded self-attention (:mod:`.bounded`)."""
        from .bounded import bounded_mask

        key = (tokens, device)
        if key not in self._self_masks:
            self._self_masks[key] = bounded_mask(self.members(tokens)).to(device)
        return self._self_masks[key]

    def weights(self, tokens: int, device, dtype) -> torch.Tensor:
        """``[K1, N]`` mixing weights: the global context where no box covers a position, else the mean of
        the covering regions."""
        key = (tokens, device, dtype)
        if key not in self._weights:
            masks = self.members(tokens).float()  # [K, N]
            count = masks.sum(0)
            regional = masks / count.clamp_min(1)
            global_ = (count == 0).float()[None]
            self._weights[key] = torch.cat([global_, regional]).to(device=device, dtype=dtype)
        return self._weights[key]


class RegionalCrossAttnProcessor:
    """Cross-attention of layer ``layer`` of ``num_layers`` over K1 contexts, mixed by the region masks (SDPA)."""

    def __init__(self, layer: int, num_layers: int, layout: RegionLayout):
        self.layer, self.num_layers, self.layout = layer, num_layers, layout

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        if encoder_hidden_states is None or hidden_states.ndim != 3 or attention_mask is not None:
            raise NotImplementedError("regional attention is for [B, N, C] cross-attention without a mask")
        batch, tokens, _ = hidden_states.shape
        contexts = self.layout.num_contexts
        total, width = encoder_hidden_states.shape[1], encoder_hidden_states.shape[2]
        if total % (contexts * self.num_layers):
            raise ValueError(f"text states of length {total} are not {contexts} contexts × {self.num_layers} layers")
        length = total // (contexts * self.num_layers)
        context = encoder_hidden_states.view(batch, contexts, self.num_layers, length, width)[:, :, self.layer]
        context = context.reshape(batch * contexts, length, width)
        if attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        query = to_heads(attn.to_q(hidden_states), attn.heads).repeat_interleave(contexts, 0)
        key = to_heads(attn.to_k(context), attn.heads)
        value = to_heads(attn.to_v(context), attn.heads)
        out = F.scaled_dot_product_attention(query, key, value)  # [B*K1, H, N, d]
        out = out.transpose(1, 2).reshape(batch, contexts, tokens, -1)
        weights = self.layout.weights(tokens, out.device, out.dtype)  # [K1, N]
        out = (out * weights[None, :, :, None]).sum(1)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


def install_regional_processors(unet, layout: RegionLayout) -> int:
    """Regional processors on every cross-attention layer, and on self-attention the UNet's own SDPA, bounded by
    the boxes while ``layout.bounded`` (:mod:`.bounded`); returns L."""
    from .bounded import BoundedSelfAttnProcessor

    layers = cross_attention_layers(unet)
    index = {name: i for i, name in enumerate(layers)}
    set_attention_processors(unet, {
        name: RegionalCrossAttnProcessor(index[name], len(layers), layout) if name in index
        else BoundedSelfAttnProcessor(layout)
        for name in attention_modules(unet)
    })
    return len(layers)
