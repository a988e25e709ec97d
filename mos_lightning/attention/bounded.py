"""Bounded self-attention for regional sampling: while on, a feature cell inside a box attends only to cells of its
own box(es) and to cells outside every box, so two boxes cannot pull each other's pixels into one thing.

Region prompts decide what each box is *told*; self-attention still lets every cell look at every other, and in
the first steps, where the layout and the colours are settled, that is how a picture ends up with one thing drawn
across two boxes or a colour carried from one box to the other. Later work on multi-subject generation (e.g.
Dahary et al., "Be Yourself: Bounded Attention for Multi-Subject T2I Generation", 2024) masks self-attention
between subjects for this reason. The reference does not (its self-attention is the UNet's own): it is an option,
``RegionalPipeline(bounded_steps=N)``, measured in CLAIMS.md (c).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from .layers import to_heads


def bounded_mask(members: torch.Tensor) -> torch.Tensor:
    """``[N, N]`` bool (True = may attend) from ``members`` ``[K, N]`` (cell n lies in box k): a cell in a box
    sees the cells of any box it lies in and the cells in no box; a cell in no box sees everything."""
    members = members.float()
    inside = members.sum(0) > 0
    share = (members.T @ members) > 0
    return share | ~inside[:, None] | ~inside[None, :]


class BoundedSelfAttnProcessor:
    """Self-attention masked by :func:`bounded_mask` of ``layout``'s boxes while ``layout.bounded``; the UNet's
    plain SDPA self-attention otherwise."""

    def __init__(self, layout):
        self.layout = layout
        self.plain = AttnProcessor2_0()

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        unusual = (hidden_states.ndim != 3 or encoder_hidden_states is not None or attention_mask is not None
                   or attn.group_norm is not None or attn.spatial_norm is not None or attn.norm_q is not None)
        if not self.layout.bounded or unusual:
            return self.plain(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        batch, tokens, _ = hidden_states.shape
        query = to_heads(attn.to_q(hidden_states), attn.heads)
        key = to_heads(attn.to_k(hidden_states), attn.heads)
        value = to_heads(attn.to_v(hidden_states), attn.heads)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=self.layout.self_attention_mask(tokens, hidden_states.device))
        out = attn.to_out[1](attn.to_out[0](out.transpose(1, 2).reshape(batch, tokens, -1)))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor
