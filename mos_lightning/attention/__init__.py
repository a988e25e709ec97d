"""Attention processors: layer l of the UNet reads its own text encoding (:mod:`.layerwise`); inside a region box
pixels attend to that region's prompt (:mod:`.regions`); finding and ordering the layers (:mod:`.layers`)."""

from .layers import (
                     attention_modules,
                     attention_processors,
                     cross_attention_layers,
                     num_cross_attention_layers,
                     set_attention_processors,
)
from .layerwise import AttentionRecorder, LayerwiseCrossAttnProcessor, install_layerwise_processors

__all__ = [
    "AttentionRecorder", "LayerwiseCrossAttnProcessor", "attention_modules", "attention_processors",
    "cross_attention_layers", "install_layerwise_processors", "num_cross_attention_layers", "set_attention_processors",
]
