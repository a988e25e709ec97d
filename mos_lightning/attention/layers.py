"""Finding a UNet's attention layers: every attention module by processor name, the cross-attention layers
in the method's order (down → mid → up), and installing processors without walking the UNet each time."""

from __future__ import annotations

import weakref

import torch
from diffusers.models.attention_processor import Attention

_BLOCK_ORDER = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}


# UNet → {processor name: its Attention module}. Walking a UNet's modules (what diffusers'
# ``attn_processors`` / ``set_attn_processor`` do) costs milliseconds at SD 1.5 size, and sampling swaps
# processors on every call: find the attention modules once per UNet (its block structure is fixed).
_ATTENTION_MODULES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def attention_modules(unet) -> dict[str, Attention]:
    """Processor name (as in ``unet.attn_processors``) → that processor's attention module, in module order."""
    found = _ATTENTION_MODULES.get(unet)
    if found is None:
        found = {name: unet.get_submodule(name.rsplit(".processor", 1)[0]) for name in unet.attn_processors}
        _ATTENTION_MODULES[unet] = found
    return found


def attention_processors(unet) -> dict:
    """``unet.attn_processors`` without walking the UNet."""
    return {name: module.processor for name, module in attention_modules(unet).items()}


def set_attention_processors(unet, processors: dict) -> None:
    """``unet.set_attn_processor(processors)`` for a full name → processor dict, without walking the UNet."""
    modules = attention_modules(unet)
    if processors.keys() != modules.keys():
        raise ValueError(f"expected a processor for each of the UNet's {len(modules)} attention layers")
    for name, processor in processors.items():
        modules[name].set_processor(processor)


def cross_attention_layers(unet) -> list[str]:
    """Processor names of the UNet's cross-attention layers in the method's order: down → mid → up.

    ``named_modules`` lists up blocks before the mid block; the method (and the reference
    checkpoints) number layers down → mid → up, so order them explicitly.
    """
    names = [name for name, module in attention_modules(unet).items() if module.is_cross_attention]
    position = {name: i for i, name in enumerate(names)}
    return sorted(names, key=lambda n: (_BLOCK_ORDER.get(n.split(".")[0], 3), position[n]))


def num_cross_attention_layers(unet) -> int:
    return len(cross_attention_layers(unet))



def to_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    batch, length, inner = x.shape
    return x.view(batch, length, heads, inner // heads).transpose(1, 2)
