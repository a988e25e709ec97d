"""Layer-wise concept tokens: bookkeeping, initialisation and prompt encoding.

A concept token (e.g. ``<potter1>``) is one entry in the tokenizer, but owns one embedding per
UNet cross-attention layer. A prompt is encoded L times (L = number of cross-attention layers);
copy l carries the layer-l embedding of every concept token, and the L encodings are laid side
by side along the sequence axis, ``[B, L * T, C]``, so that cross-attention layer l can take
its slice (see :mod:`mos_lightning.attention`). With ``layerwise=False`` every token has a
single embedding shared by all layers (the paper's "LoRA" baseline).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import nn

RAND_INIT = re.compile(r"^<rand-(?P<std>[0-9.eE+-]+)>$")


class LayerwiseTokens(nn.Module):
    """Embeddings of new tokens, ``weight[i, l]`` = token i's embedding for cross-attention layer l.

    ``weight`` has shape ``[N, L, C]`` (layer-wise) or ``[N, 1, C]`` (one embedding for all layers).
    It is the only trainable part of the text input: the text encoder's embedding table stays frozen.
    """

    def __init__(self, names: Sequence[str], token_ids: Sequence[int], weight: torch.Tensor):
        super().__init__()
        if weight.ndim != 3 or weight.shape[0] != len(names) or len(names) != len(token_ids):
            raise ValueError(f"weight must be [N, L, C] for N={len(names)} tokens, got {tuple(weight.shape)}")
        self.names = list(names)
        self.register_buffer("token_ids", torch.tensor(list(token_ids), dtype=torch.long), persistent=False)
        self._cpu_token_ids = self.token_ids.clone()  # type: ignore[operator]  # a registered buffer  # matching CPU ids must not copy from the GPU (a sync)
        self.weight = nn.Parameter(weight.clone())

    @property
    def layerwise(self) -> bool:
        return self.weight.shape[1] > 1

    def matches(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``[B, T, N]`` boolean: position (b, t) holds token n."""
        ids = self._cpu_token_ids if input_ids.device.type == "cpu" else self.token_ids.to(input_ids.device)
        return input_ids[..., None] == ids  # type: ignore[return-value]  # torch's stubs type == as bool

    def substitute(self, input_ids: torch.Tensor, base_embeds: torch.Tensor, num_copies: int) -> torch.Tensor:
        """Input embeddings for ``num_copies`` layer copies of a batch: ``[num_copies * B, T, C]``.

        ``base_embeds`` are the frozen table's embeddings of ``input_ids`` (``[B, T, C]``); positions
        holding a concept token get that token's embedding of the copy's layer. A single copy of
        layer-wise tokens is only asked for when no position holds one (the copies would be identical).
        """
        match = self.matches(input_ids)
        present = match.any(-1)  # [B, T]
        index = match.to(torch.int8).argmax(-1)  # [B, T]; 0 where absent (masked out below)
        weight = self.weight if self.weight.shape[1] == num_copies else self.weight[:, :1]
        per_layer = weight.to(base_embeds.dtype)[index]  # [B, T, L' or 1, C]
        per_layer = per_layer.expand(-1, -1, num_copies, -1).permute(2, 0, 1, 3)  # [copies, B, T, C]
        out = torch.where(present[None, ..., None], per_layer, base_embeds[None])
        return out.reshape(-1, *base_embeds.shape[1:])

    def mean_norm(self) -> torch.Tensor:
        """Mean L2 norm over tokens and layers (the paper's embedding-norm guard watches this)."""
        return self.weight.norm(dim=-1).mean()


def add_tokens_to_tokenizer(tokenizer, text_encoder, names: Sequence[str]) -> list[int]:
    """Add ``names`` as new tokens and grow the text encoder's embedding table; return their ids.

    Raises if a name already exists in the tokenizer (see :func:`check_token_names`).
    """
    check_token_names(names, tokenizer.get_vocab())
    tokenizer.add_tokens(list(names))
    ids = tokenizer.convert_tokens_to_ids(list(names))
    text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    return list(ids)


def check_token_names(names: Sequence[str], vocab) -> None:
    """Unique single words new to ``vocab``: a clash would silently reuse another concept's or a real word's embedding."""
    if len(set(names)) != len(names):
        raise ValueError(f"token names must be unique, got {list(names)}")
    clashes = [n for n in names if n in vocab]
    if clashes:
        raise ValueError(
            f"token name(s) {clashes} already exist in the tokenizer (a base-model word or another "
            "concept's token); give this concept different token names, e.g. '<myconcept1>'"
        )
    bad = [n for n in names if len(n.split()) != 1]
    if bad:
        raise ValueError(f"token names must not contain spaces: {bad}")


def initializer_token(initializer: str, tokenizer) -> int | None:
    """The token id a word initializer copies (``None`` for ``<rand-σ>``); an error if the word is several tokens."""
    if RAND_INIT.match(initializer):
        return None
    ids = tokenizer(initializer, add_special_tokens=False).input_ids
    if len(ids) != 1:
        raise ValueError(
            f"initializer {initializer!r} is {len(ids)} tokens for this tokenizer; use a word that is "
            "a single token (e.g. 'man', 'dog') or '<rand-0.013>'"
        )
    return ids[0]


def create_layerwise_tokens(tokenizer, text_encoder, names: Sequence[str], weight: torch.Tensor) -> LayerwiseTokens:
    """Add ``names`` to tokenizer and text encoder and return their :class:`LayerwiseTokens`.

    The frozen table's new rows get the layer mean, so code that bypasses the layer-wise path
    still sees a sensible embedding.
    """
    ids = add_tokens_to_tokenizer(tokenizer, text_encoder, names)
    table = text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        table[ids] = weight.mean(1).to(table.dtype).to(table.device)
    return LayerwiseTokens(names, ids, weight.to(table.device))


def initial_embedding(initializer: str, tokenizer, text_encoder, generator: torch.Generator | None = None):
    """One token's initial embedding: ``<rand-σ>`` (Gaussian, std σ) or a copy of a single-token word."""
    table = text_encoder.get_input_embeddings().weight
    rand = RAND_INIT.match(initializer)
    if rand:
        std = float(rand.group("std"))
        # device named: Lightning runs configure_model under a torch.device("cuda") default, and a CPU
        # generator cannot draw there
        device = generator.device if generator is not None else "cpu"
        return torch.randn(table.shape[1], generator=generator, device=device) * std
    return table[initializer_token(initializer, tokenizer)].detach().float().cpu().clone()


def tokenize(tokenizer, prompts: Sequence[str]) -> torch.Tensor:
    """Token ids ``[B, T]`` padded/truncated to the tokenizer's max length (77 for CLIP)."""
    return tokenizer(
        list(prompts),
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids


def encode_prompts(
    text_encoder,
    input_ids: torch.Tensor,
    tokens: LayerwiseTokens | None,
    num_layers: int,
    layer_copies: bool | None = None,
) -> torch.Tensor:
    """Encode ``input_ids`` into ``[B, num_layers * T, C]``: one text-encoder copy per cross-attention layer.

    Copies differ only where a concept token appears. When no prompt holds a layer-wise token the
    copies are identical, so the text encoder runs once and its output is repeated. ``layer_copies``
    says whether to run the copies; ``None`` decides from ``input_ids`` (keep them on the CPU then:
    reading device ids would stall the GPU). Running copies for prompts without a concept token gives
    the same result, only slower.
    """
    batch = input_ids.shape[0]
    if layer_copies is None:
        layer_copies = tokens is not None and bool(tokens.matches(input_ids.cpu()).any())
    needs_copies = layer_copies and tokens is not None and tokens.layerwise
    copies = num_layers if needs_copies else 1
    hook = None
    if tokens is not None:
        embedding = text_encoder.get_input_embeddings()

        def swap_in(_module, args, output):
            return tokens.substitute(args[0][:batch], output[:batch], copies)

        hook = embedding.register_forward_hook(swap_in)
    try:
        # non_blocking: a blocking host-to-device copy waits for all queued GPU work (a sync per step)
        ids = input_ids.to(text_encoder.device, non_blocking=True).repeat(copies, 1)
        hidden = text_encoder(ids).last_hidden_state  # [copies * B, T, C]
    finally:
        if hook is not None:
            hook.remove()
    hidden = hidden.view(copies, batch, *hidden.shape[1:]).transpose(0, 1)  # [B, copies, T, C]
    if copies == 1:
        hidden = hidden.expand(-1, num_layers, -1, -1)
    return hidden.reshape(batch, -1, hidden.shape[-1])
