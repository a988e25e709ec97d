"""The weights a fusion works with: each fused layer's base weight W0 and every concept's W_i = W0 + α_i ΔW_i,
put into and taken out of a live model, bit-exactly."""

from __future__ import annotations

from typing import Any, Literal

import torch

from ..attention import cross_attention_layers
from ..lora import base_linear, lora_delta, lora_modules
from .concepts import FusionConcept

Part = Literal["text_encoder", "unet"]
STAGES = ("text_encoder", "kv", "spatial")


class FusionWeights:
    """The LoRA-touched layers of ``text_encoder`` and ``unet`` for ``concepts``, grouped by the method's stages:
    ``text_encoder``, ``kv`` (cross-attention ``to_k``/``to_v``) and ``spatial`` (every other UNet layer)."""

    def __init__(self, text_encoder, unet, concepts: list[FusionConcept]):
        self.concepts = concepts
        self.parts: dict[Part, Any] = {"text_encoder": text_encoder, "unet": unet}
        for concept in concepts:  # every target exists in the base with the right shape
            for part in self.parts:
                self._check_targets(concept, part)
        self.layers = {part: sorted({n for c in concepts for n in self._lora(c, part)}) for part in self.parts}
        cross = {name.rsplit(".processor", 1)[0] for name in cross_attention_layers(unet)}
        kv = {f"{c}.{p}" for c in cross for p in ("to_k", "to_v")}
        self.stage_layers = {
            "text_encoder": self.layers["text_encoder"],
            "kv": [n for n in self.layers["unet"] if n in kv],
            "spatial": [n for n in self.layers["unet"] if n not in kv],
        }
        self.base = {part: {n: base_linear(self.parts[part], n).weight.detach().clone() for n in self.layers[part]}
                     for part in self.parts}
        # Σ_i α_i ΔW_i per layer, for the naive-merge baseline; single concepts' deltas are made on demand.
        self.delta_sum: dict[str, dict[str, torch.Tensor]] = {part: {} for part in self.parts}
        for index in range(len(concepts)):
            for part in self.parts:
                for name, delta in self.deltas(index, part).items():
                    total = self.delta_sum[part]
                    total[name] = total[name] + delta if name in total else delta

    @staticmethod
    def _lora(concept: FusionConcept, part: Part) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return lora_modules(concept.edlora.unet_lora if part == "unet" else concept.edlora.text_encoder_lora)

    def _check_targets(self, concept: FusionConcept, part: Part) -> None:
        for name, (a, b) in self._lora(concept, part).items():
            try:
                linear = base_linear(self.parts[part], name)
            except AttributeError as error:
                raise ValueError(f"{concept.source}: LoRA targets {part} layer {name}, which the base model does "
                                 "not have: the file was tuned on a different base model") from error
            if tuple(linear.weight.shape) != (b.shape[0], a.shape[1]):
                raise ValueError(f"{concept.source}: LoRA for {name} is {b.shape[0]}x{a.shape[1]} but the base layer is "
                                 f"{tuple(linear.weight.shape)}: the file was tuned on a different base model")

    @property
    def device(self) -> torch.device:
        return self.parts["unet"].device

    def deltas(self, index: int, part: Part) -> dict[str, torch.Tensor]:
        """α_i ΔW_i per layer of concept ``index``, fp32 on the model's device."""
        concept = self.concepts[index]
        alpha = concept.edlora.alpha * (concept.unet_alpha if part == "unet" else concept.text_encoder_alpha)
        return {name: lora_delta(a.to(self.device), b.to(self.device), alpha)
                for name, (a, b) in self._lora(concept, part).items()}

    def concept_deltas(self, index: int, part: Part) -> dict[str, torch.Tensor]:
        """α_i ΔW_i for every fused layer of ``part`` (zeros where the concept has no LoRA)."""
        deltas = self.deltas(index, part)
        return {n: deltas[n] if n in deltas else torch.zeros_like(w0, dtype=torch.float32)
                for n, w0 in self.base[part].items()}

    def concept_weights(self, index: int, part: Part) -> dict[str, torch.Tensor]:
        """W_i = W0 + α_i ΔW_i (fp32) for every fused layer of ``part``."""
        return {n: self.base[part][n].float() + d for n, d in self.concept_deltas(index, part).items()}

    @torch.no_grad()
    def set_weights(self, part: Part, weights: dict[str, torch.Tensor]) -> None:
        for name, weight in weights.items():
            linear = base_linear(self.parts[part], name)
            linear.weight.copy_(weight.to(linear.weight.dtype))

    def use_concept(self, index: int, parts: tuple[Part, ...] = ("text_encoder", "unet")) -> None:
        """Turn ``parts`` of the model into concept ``index``'s own (base + its LoRA at its alphas)."""
        for part in parts:
            self.set_weights(part, self.concept_weights(index, part))

    def restore_base(self) -> None:
        """Put every fused layer's base weight back, bit-exactly."""
        for part in self.parts:
            self.set_weights(part, self.base[part])
