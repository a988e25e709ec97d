"""A StableDiffusionPipeline that understands layer-wise concept tokens (ED-LoRA).

Prompts are encoded into L layer copies (see :mod:`mos_lightning.tokens`) and cross-attention layer
l reads copy l. ED-LoRA files are loaded by adding their tokens and merging their LoRA into the
weights at a chosen scale; :meth:`EDLoRAPipeline.unload_edlora` restores the base bit-exactly.
A fused model folder (a diffusers folder with a ``concepts.safetensors`` token table beside it)
loads its concepts in :meth:`EDLoRAPipeline.from_pretrained`.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import StableDiffusionPipeline

from ..attention import (
    attention_processors,
    install_layerwise_processors,
    num_cross_attention_layers,
    set_attention_processors,
)
from ..defaults import NEGATIVE_PROMPT, PLACEHOLDER
from ..edlora_file import CONCEPTS_FILE, REFERENCE_CONCEPTS_FILE, EDLoRA, import_reference_concepts, load_edlora
from ..lora import merge_lora, restore
from ..models import check_compatible
from ..tokens import LayerwiseTokens, create_layerwise_tokens, encode_prompts, tokenize


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Float images in [0, 1] (diffusers' ``output_type="np"``) as uint8, rounded like diffusers' PIL output."""
    return (images * 255).round().clip(0, 255).astype(np.uint8)


class EDLoRAPipeline(StableDiffusionPipeline):
    """Stable Diffusion 1.x sampling with layer-wise concept tokens; any diffusers scheduler works.

    ``negative_prompt`` defaults to the paper's negative prompt (pass ``""`` for none). In prompts,
    ``<name>`` stands for the tokens of the loaded concept ``name`` and, with exactly one concept
    loaded, ``<TOK>`` stands for its tokens.
    """

    tokenizer: Any  # registered by diffusers at run time (for the type checker only)

    placeholder = PLACEHOLDER

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """diffusers loading; a fused model folder's token table is loaded too (ours: ``concepts.safetensors``; the
        reference implementation's: ``new_concept_cfg.json``)."""
        try:
            pipe = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except Exception as error:
            from ..base_checks import explain_load_failure

            explain_load_failure(str(pretrained_model_name_or_path), error)
            raise
        folder = Path(str(pretrained_model_name_or_path))
        if (folder / CONCEPTS_FILE).is_file():
            pipe.load_edlora(folder / CONCEPTS_FILE, scale=0.0)
        elif (folder / REFERENCE_CONCEPTS_FILE).is_file():  # a fused folder written by the reference implementation
            config = json.loads((folder / REFERENCE_CONCEPTS_FILE).read_text())
            table = pipe.text_encoder.get_input_embeddings().weight
            pipe.load_edlora(import_reference_concepts(config, table, str(folder / REFERENCE_CONCEPTS_FILE)), scale=0.0)
        return pipe

    @property
    def concept_tokens(self) -> LayerwiseTokens | None:
        return getattr(self, "_concept_tokens", None)

    @property
    def concepts(self) -> dict:
        return dict(getattr(self, "_concepts", {}))

    # ------------------------------------------------------------- loading
    def load_edlora(self, edlora: EDLoRA | str | Path, scale: float = 0.7) -> list[str]:
        """Add a file's concepts: tokens into tokenizer/text encoder, LoRA merged at ``scale`` (0 = embeddings only)."""
        if not isinstance(edlora, EDLoRA):
            edlora = load_edlora(edlora)
        check_compatible(edlora, self.unet, self.text_encoder)
        clash = [n for n in edlora.concepts if n in self.concepts]
        if clash:
            raise ValueError(f"concept(s) {clash} are already loaded")
        if not hasattr(self, "_base_tokenizer"):
            self._base_tokenizer = copy.deepcopy(self.tokenizer)
            self._base_vocab_size = self.text_encoder.get_input_embeddings().weight.shape[0]
            self._originals: dict[str, dict] = {"unet": {}, "text_encoder": {}}
            self._concepts = {}
        layers = num_cross_attention_layers(self.unet)
        weight = edlora.embedding_matrix().expand(-1, layers, -1).float()
        added = create_layerwise_tokens(self.tokenizer, self.text_encoder, edlora.token_names, weight)  # raises on clashes
        previous = self.concept_tokens
        if previous is not None:  # one table for all loaded concepts
            added = LayerwiseTokens(
                previous.names + added.names,
                previous.token_ids.tolist() + added.token_ids.tolist(),  # type: ignore[operator]
                torch.cat([previous.weight.detach(), added.weight.detach()]),
            )
        self._concept_tokens = added
        for part, state in (("unet", edlora.unet_lora), ("text_encoder", edlora.text_encoder_lora)):
            if state and scale != 0:
                saved = merge_lora(getattr(self, part), state, edlora.alpha, scale)
                for name, weight_ in saved.items():
                    self._originals[part].setdefault(name, weight_)
        self._concepts.update(edlora.concepts)
        return list(edlora.concepts)

    def set_concept_tokens(self, tokens: LayerwiseTokens, concepts: dict) -> None:
        """Use tokens already in the tokenizer/text encoder (e.g. a tuning run's live modules); weights untouched."""
        self._concept_tokens = tokens
        self._concepts = dict(concepts)

    def unload_edlora(self) -> None:
        """Remove every loaded concept and restore the base weights and tokenizer exactly."""
        if not hasattr(self, "_base_tokenizer"):
            return
        for part, saved in self._originals.items():
            restore(getattr(self, part), saved)
        self.text_encoder.resize_token_embeddings(self._base_vocab_size, mean_resizing=False)
        self.tokenizer = self._base_tokenizer
        for attr in ("_base_tokenizer", "_base_vocab_size", "_originals", "_concepts", "_concept_tokens"):
            delattr(self, attr)

    # ------------------------------------------------------------ encoding
    def expand_concepts(self, prompts: list[str]) -> list[str]:
        """Replace ``<name>`` by concept ``name``'s tokens and ``<TOK>`` by the only concept's tokens."""
        concepts = self.concepts
        names = {t for c in concepts.values() for t in c.tokens}
        out = []
        for prompt in prompts:
            if self.placeholder in prompt:
                if len(concepts) != 1:
                    raise ValueError(
                        f"'{self.placeholder}' needs exactly one loaded concept ({len(concepts)} loaded: "
                        f"{sorted(concepts)}); write <concept name> instead, e.g. <{next(iter(concepts), 'name')}>"
                    )
                prompt = prompt.replace(self.placeholder, " ".join(next(iter(concepts.values())).tokens))
            for name, info in concepts.items():
                if f"<{name}>" not in names:
                    prompt = prompt.replace(f"<{name}>", " ".join(info.tokens))
            out.append(prompt)
        return out

    def encode_layerwise(self, prompts: list[str], device) -> torch.Tensor:
        """``[B, L*T, C]`` layer-wise text states for ``prompts``."""
        ids = tokenize(self.tokenizer, self.expand_concepts(prompts))
        layers = num_cross_attention_layers(self.unet)
        return encode_prompts(self.text_encoder, ids, self.concept_tokens, layers).to(device)

    def encode_prompt(
        self,
        prompt,
        device,
        num_images_per_prompt,
        do_classifier_free_guidance,
        negative_prompt=None,
        prompt_embeds=None,
        negative_prompt_embeds=None,
        lora_scale=None,
        clip_skip=None,
    ):
        if clip_skip:
            raise NotImplementedError("clip_skip is not supported with layer-wise prompts")
        if prompt_embeds is None:
            prompts = [prompt] if isinstance(prompt, str) else list(prompt)
            prompt_embeds = self.encode_layerwise(prompts, device)
        batch = prompt_embeds.shape[0]
        if do_classifier_free_guidance and negative_prompt_embeds is None:
            negative = negative_prompt if negative_prompt is not None else ""
            negative = [negative] * batch if isinstance(negative, str) else list(negative)
            negative_prompt_embeds = self.encode_layerwise(negative, device)
        prompt_embeds = prompt_embeds.to(self.unet.dtype).repeat_interleave(num_images_per_prompt, 0)
        if negative_prompt_embeds is not None:
            negative_prompt_embeds = negative_prompt_embeds.to(self.unet.dtype).repeat_interleave(num_images_per_prompt, 0)
        return prompt_embeds, negative_prompt_embeds

    def sample(self, prompts: list[str], seeds: list[int], negative_prompt: str = NEGATIVE_PROMPT,
               **kwargs) -> np.ndarray:
        """uint8 ``[B, H, W, 3]`` images, one per (prompt, seed); each depends only on its own pair, because every
        image gets its own CPU generator (the same seed gives the same starting noise on every device)."""
        images = self(
            list(prompts), negative_prompt=[negative_prompt] * len(prompts),
            generator=[torch.Generator().manual_seed(int(s)) for s in seeds], output_type="np", **kwargs,
        ).images
        return to_uint8(images)

    @torch.no_grad()
    def __call__(self, *args, negative_prompt=NEGATIVE_PROMPT, **kwargs):
        previous = attention_processors(self.unet)  # put back afterwards: a tuning run may share this UNet
        install_layerwise_processors(self.unet)  # encode_prompt always yields layer copies
        try:
            return super().__call__(*args, negative_prompt=negative_prompt, **kwargs)
        finally:
            set_attention_processors(self.unet, previous)
