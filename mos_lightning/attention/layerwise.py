"""Cross-attention processors that give layer l of the UNet its own text encoding.

The text side arrives as ``[B, L * T, C]`` (see :func:`mos_lightning.tokens.encode_prompts`);
the processor of cross-attention layer l attends to the slice ``[:, l*T:(l+1)*T]``. Processors
are plain diffusers processors (installed with :func:`set_attention_processors`); self-attention keeps
diffusers' own SDPA processor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from .layers import attention_modules, cross_attention_layers, set_attention_processors, to_heads


@dataclass
class AttentionRecorder:
    """Collects head-averaged cross-attention probabilities ``[B, N_pixels, T]`` per layer while ``active``."""

    active: bool = False
    maps: dict[int, torch.Tensor] = field(default_factory=dict)

    def clear(self) -> None:
        self.maps.clear()


class LayerwiseCrossAttnProcessor:
    """SDPA cross-attention where layer ``layer`` of ``num_layers`` reads its own slice of the text states."""

    def __init__(self, layer: int, num_layers: int, recorder: AttentionRecorder | None = None):
        self.layer = layer
        self.num_layers = num_layers
        self.recorder = recorder

    def text_slice(self, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        total = encoder_hidden_states.shape[1]
        if total % self.num_layers:
            raise ValueError(
                f"text states of length {total} are not {self.num_layers} equal layer copies; "
                "encode prompts with mos_lightning.tokens.encode_prompts"
            )
        width = total // self.num_layers
        # contiguous: a strided slice would send to_k/to_v and their LoRA through batched matmuls with extra
        # expand/clone kernels (about 50 more per step, forward and backward); one copy here is cheaper
        return encoder_hidden_states[:, self.layer * width : (self.layer + 1) * width].contiguous()

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        if encoder_hidden_states is None:
            raise ValueError("LayerwiseCrossAttnProcessor is for cross-attention layers only")
        if hidden_states.ndim != 3 or attention_mask is not None:
            raise NotImplementedError("layer-wise cross-attention expects [B, N, C] states and no mask")
        residual = hidden_states
        context = self.text_slice(encoder_hidden_states)
        if attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        query = to_heads(attn.to_q(hidden_states), attn.heads)
        key = to_heads(attn.to_k(context), attn.heads)
        value = to_heads(attn.to_v(context), attn.heads)
        if self.recorder is not None and self.recorder.active:
            scores = query @ key.transpose(-1, -2) * (attn.scale if attn.scale else 1 / math.sqrt(query.shape[-1]))
            probs = scores.softmax(-1)
            self.recorder.maps[self.layer] = probs.mean(1)  # [B, N, T]
            out = probs @ value
        else:
            out = F.scaled_dot_product_attention(query, key, value)
        out = out.transpose(1, 2).flatten(2).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def install_layerwise_processors(unet, recorder: AttentionRecorder | None = None) -> int:
    """Give every cross-attention layer a :class:`LayerwiseCrossAttnProcessor`; return L."""
    layers = cross_attention_layers(unet)
    index = {name: i for i, name in enumerate(layers)}
    processors = {
        name: LayerwiseCrossAttnProcessor(index[name], len(layers), recorder) if name in index else AttnProcessor2_0()
        for name in attention_modules(unet)
    }
    set_attention_processors(unet, processors)
    return len(layers)
