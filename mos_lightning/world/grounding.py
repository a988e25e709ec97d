"""Where a world base's cross-attention sends each thing's words: the attention maps, each thing's words and box,
and the share of a word's attention that lands in a box.

Composition needs the UNet to read "red" and "ball" *where the ball is*; a base whose cross-attention spreads every
word over the whole picture can only bind colours to things by chance. The maps are read by
:mod:`mos_lightning.world.attention_check` (the diagnostic) and, as a training loss that asks each thing's words to
attend inside its box (Chen et al. 2023's layout loss; TokenCompose, Wang et al. 2024, trains with it), by
``world.train base --grounding``.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from diffusers.models.attention_processor import Attention

from ..attention.layers import attention_processors, cross_attention_layers, set_attention_processors, to_heads
from ..attention.regions import feature_mask
from ..tokens import tokenize
from .scenes import Scene, Thing, caption

Box = tuple[float, float, float, float]
Targets = list[list[tuple[list[int], Box]]]  # per picture, its things' word positions in its caption and boxes


class AttentionMapProcessor:
    """Plain cross-attention (an explicit softmax, so the maps carry gradients) that appends each call's attention
    probabilities, the mean over heads ``[B, N, T]``, to ``maps`` while ``maps.recording``."""

    def __init__(self, maps: AttentionMaps):
        self.maps = maps

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        if encoder_hidden_states is None or hidden_states.ndim != 3 or attention_mask is not None or attn.norm_cross:
            raise NotImplementedError("attention maps are read from [B, N, C] cross-attention without a mask")
        batch, tokens, _ = hidden_states.shape
        query = to_heads(attn.to_q(hidden_states), attn.heads)
        key = to_heads(attn.to_k(encoder_hidden_states), attn.heads)
        value = to_heads(attn.to_v(encoder_hidden_states), attn.heads)
        probs = (query @ key.transpose(-1, -2) * attn.scale).softmax(-1)
        if self.maps.recording:
            self.maps.append(probs.mean(1))
        out = attn.to_out[1](attn.to_out[0]((probs @ value).transpose(1, 2).reshape(batch, tokens, -1)))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


class AttentionMaps(list):
    """The maps of one UNet call, in the cross-attention layers' order (down → mid → up)."""

    recording = False


@contextmanager
def attention_maps(unet):
    """``with attention_maps(unet) as maps:`` — every cross-attention layer records into ``maps`` while
    ``maps.recording``; the UNet's own processors come back on exit."""
    maps, previous = AttentionMaps(), attention_processors(unet)
    crossing = set(cross_attention_layers(unet))
    set_attention_processors(unet, {name: AttentionMapProcessor(maps) if name in crossing else p
                                    for name, p in previous.items()})
    try:
        yield maps
    finally:
        set_attention_processors(unet, previous)


def thing_words_positions(tokenizer, scene: Scene) -> list[list[int]]:
    """Per thing, the token positions of its words (colour, pattern, class) in the scene's caption."""
    ids = tokenize(tokenizer, [caption(scene)])[0].tolist()
    specials = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}
    out, start = [], 0
    for thing in scene.things:
        words = [t for t in tokenizer(thing.words().split(" ", 1)[1]).input_ids if t not in specials]
        found = next((p for p in range(start, len(ids) - len(words) + 1) if ids[p:p + len(words)] == words), None)
        if found is None:
            raise ValueError(f"{thing.words()!r} is not in the caption {caption(scene)!r} as the tokenizer reads it")
        out.append(list(range(found, found + len(words))))
        start = found + len(words)
    return out


def thing_box(thing: Thing) -> Box:
    """``[top, left, bottom, right]`` fractions: the square the renderer draws the thing in."""
    return (max(0.0, thing.y - thing.radius), max(0.0, thing.x - thing.radius),
            min(1.0, thing.y + thing.radius), min(1.0, thing.x + thing.radius))


def scene_targets(tokenizer, scene: Scene) -> list[tuple[list[int], Box]]:
    """The scene's things as (their words' positions in its caption, their box): what the loss asks of them."""
    return list(zip(thing_words_positions(tokenizer, scene), map(thing_box, scene.things), strict=True))


def inside_share(probs: torch.Tensor, positions: list[int], box: Box) -> torch.Tensor:
    """Per token of ``positions``, the share of its attention (``probs`` ``[N, T]`` of a square feature map) that
    falls on the cells ``box`` touches."""
    side = round(probs.shape[0] ** 0.5)
    mask = feature_mask(box, side, side, "outward").flatten().to(probs)
    word = probs[:, positions]
    return (word * mask[:, None]).sum(0) / word.sum(0).clamp_min(1e-12)


def grounding_loss(maps: list[torch.Tensor], targets: Targets, min_side: int = 4) -> torch.Tensor:
    """Mean over the maps of at least ``min_side`` × ``min_side`` cells, the pictures and their things of
    ``(1 − share inside the thing's box)²`` per word (Chen et al. 2023); ``targets[b]``: picture b's things as
    (positions, box), empty for a picture whose caption was dropped. A Python loop over (map, picture, thing): about
    a fifth of a CPU training step at batch 32; kept as it is so that the model card's grounded weights reproduce
    bit for bit (a batched form sums in another order)."""
    terms = [((1 - inside_share(probs[b], positions, box)) ** 2).mean()
             for probs in maps if round(probs.shape[1] ** 0.5) >= min_side
             for b, things in enumerate(targets) for positions, box in things]
    if not terms:
        return maps[0].new_zeros(()) if maps else torch.zeros(())
    return torch.stack(terms).mean()
