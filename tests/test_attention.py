"""Processor bookkeeping without walking the UNet: the same answers as diffusers' own walk."""

from __future__ import annotations

import pytest
from diffusers.models.attention_processor import AttnProcessor2_0

from mos_lightning.attention import (
    LayerwiseCrossAttnProcessor,
    attention_processors,
    cross_attention_layers,
    install_layerwise_processors,
    set_attention_processors,
)
from mos_lightning.models import load_base_model


def test_processor_helpers_agree_with_diffusers(tiny_model_dir):
    unet = load_base_model(str(tiny_model_dir)).unet
    assert attention_processors(unet) == unet.attn_processors  # before any change
    assert install_layerwise_processors(unet) == 16
    walked = unet.attn_processors
    cached = attention_processors(unet)
    assert cached.keys() == walked.keys() and all(cached[k] is walked[k] for k in walked)
    layers = cross_attention_layers(unet)
    assert [walked[name].layer for name in layers] == list(range(16))  # down → mid → up
    assert all(isinstance(p, AttnProcessor2_0) for n, p in walked.items() if n not in layers)

    plain = {name: AttnProcessor2_0() for name in walked}
    set_attention_processors(unet, plain)
    assert all(unet.attn_processors[k] is plain[k] for k in plain)
    assert not any(isinstance(p, LayerwiseCrossAttnProcessor) for p in unet.attn_processors.values())
    with pytest.raises(ValueError, match="a processor for each"):
        set_attention_processors(unet, {layers[0]: AttnProcessor2_0()})
