"""The ED-LoRA model as a plain ``nn.Module`` (no Lightning): a frozen SD 1.x base, one concept's layer-wise
token embeddings and a LoRA on UNet and text-encoder attention, with the training forward pass.

:meth:`EDLoRAModel.forward` runs one denoising-training step up to the prediction and returns a
:class:`StepOutput`; the loss is made from it by loss terms (:mod:`mos_lightning.losses`). The Lightning
task (:class:`mos_lightning.tasks.EDLoRATask`) adds the optimiser, logging, checkpoints and export.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from peft.tuners.lora import LoraLayer
from torch import nn

from .attention import AttentionRecorder, install_layerwise_processors
from .defaults import PLACEHOLDER
from .edlora_file import ConceptInfo, EDLoRA
from .latent_cache import encode_posterior
from .lora import ADAPTER, TEXT_ENCODER_TARGETS, UNET_TARGETS, add_lora, lora_modules, lora_state_dict
from .models import BaseModel, cast_frozen
from .tokens import create_layerwise_tokens, encode_prompts, initial_embedding, tokenize


@dataclass
class StepOutput:
    """What one training forward computed: everything a loss term may read."""

    prediction: torch.Tensor  # [B, C, h, w] the UNet's output
    target: torch.Tensor  # [B, C, h, w] what it should have been (noise, or velocity for v-prediction)
    timesteps: torch.Tensor  # [B] diffusion timesteps
    latents: torch.Tensor  # [B, C, h, w] clean latents (scaled)
    noise: torch.Tensor  # [B, C, h, w] the noise added (noise offset included)
    noisy_latents: torch.Tensor  # [B, C, h, w] the UNet's input
    input_ids: torch.Tensor  # [B, T] the captions' token ids (one copy)
    concept_positions: torch.Tensor  # [B, T] True where a concept token stands
    embeddings: torch.Tensor  # [N, L, C] the concept's trainable layer-wise embeddings
    scheduler: Any  # the training noise scheduler (``alphas_cumprod``, ``config.prediction_type``, …)
    vocabulary: torch.Tensor  # [V, C] the frozen input embeddings of the tokens before the concept's (a view)
    attention_maps: dict[int, torch.Tensor] = field(default_factory=dict)  # layer → [B, N_pixels, T], if recorded


class EDLoRAModel(nn.Module):
    """A base model with one trainable concept: layer-wise tokens (``layerwise=False``: one embedding for every
    layer, the paper's "LoRA" baseline) and rank-``lora_rank`` LoRA (0: embeddings only, the "P+" baseline).

    Only :attr:`concept_tokens` and the LoRA weights require gradients; every base weight and every other
    row of the embedding table stays bit-identical.
    """

    def __init__(
        self,
        base: BaseModel,
        tokens: Sequence[str],
        initializers: Sequence[str],
        layerwise: bool = True,
        lora_rank: int = 4,
        lora_alpha: float = 1.0,
        noise_offset: float = 0.01,
        prediction_type: str | None = None,
        init_seed: int = 0,
        cache_latents: bool = True,
        kv_lora_dropout: float = 0.0,
        unet_lora_targets: Sequence[str] = UNET_TARGETS,
    ):
        super().__init__()
        if not 0.0 <= kv_lora_dropout <= 1.0:
            raise ValueError(f"kv_lora_dropout must be in [0, 1], got {kv_lora_dropout}")
        from diffusers import DDPMScheduler

        if not tokens or len(tokens) != len(initializers):
            raise ValueError(f"need one initializer per token, got tokens={list(tokens)} initializers={list(initializers)}")
        self.tokenizer = base.tokenizer
        self.text_encoder, self.unet, self.vae = base.text_encoder, base.unet, base.vae
        self.noise_scheduler = DDPMScheduler.from_config(
            base.scheduler_config, **({"prediction_type": prediction_type} if prediction_type else {})
        )
        self.noise_offset = noise_offset
        self.cache_latents = cache_latents
        self.latent_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # view → (mean, std)
        self.recorder = AttentionRecorder()
        self.num_layers = install_layerwise_processors(self.unet, self.recorder)
        generator = torch.Generator().manual_seed(init_seed)
        initial = torch.stack([initial_embedding(i, self.tokenizer, self.text_encoder, generator) for i in initializers])
        copies = self.num_layers if layerwise else 1
        self.concept_tokens = create_layerwise_tokens(self.tokenizer, self.text_encoder, tokens,
                                                      initial[:, None].repeat(1, copies, 1))
        self.vocabulary_size = min(self.concept_tokens.token_ids.tolist())  # type: ignore[operator]  # rows before the concept's new tokens
        self.lora_rank, self.lora_alpha = lora_rank, lora_alpha
        if lora_rank > 0:
            add_lora(self.unet, unet_lora_targets, lora_rank, lora_alpha)
            add_lora(self.text_encoder, TEXT_ENCODER_TARGETS, lora_rank, lora_alpha)
        self.kv_lora_dropout = kv_lora_dropout
        self.kv_lora = [m for n, m in self.unet.named_modules()
                        if isinstance(m, LoraLayer) and n.endswith(("attn2.to_k", "attn2.to_v"))]

    def configure_speed(self, frozen_dtype: torch.dtype = torch.float32, gradient_checkpointing: bool = False,
                        channels_last: bool = False, compile_parts: Sequence[str] = (), compile_mode: str = "default"):
        """Memory and speed settings that leave results unchanged (within float tolerance): frozen weights stored in
        ``frozen_dtype``, activation checkpointing, channels-last UNet, ``torch.compile`` of ``compile_parts``
        (``unet``, ``text_encoder``, ``vae``: its encoder) in place, so module names and checkpoint keys stay."""
        cast_frozen((self.unet, self.text_encoder, self.vae), frozen_dtype)
        if gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
            self.text_encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            self.text_encoder.train()  # transformers checkpoints only in train mode (CLIP's dropout rates are 0)
        if channels_last:
            self.unet.to(memory_format=torch.channels_last)
        modules = {"unet": self.unet, "text_encoder": self.text_encoder, "vae": self.vae.encoder}
        for part in compile_parts:
            modules[part].compile(mode=compile_mode)

    @property
    def token_string(self) -> str:
        """The concept's tokens as they stand in a prompt (``<TOK>`` is replaced by this)."""
        return " ".join(self.concept_tokens.names)

    # --------------------------------------------------------------- inputs
    def encode(self, captions: list[str], placeholder: str = PLACEHOLDER) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer-wise text states ``[B, L*T, C]`` and token ids ``[B, T]`` of captions holding ``placeholder``."""
        ids = tokenize(self.tokenizer, [c.replace(placeholder, self.token_string) for c in captions])
        # Training captions always hold the placeholder (the dataset checks), so the layer copies are
        # always needed: saying so keeps the step free of host reads.
        return encode_prompts(self.text_encoder, ids, self.concept_tokens, self.num_layers, layer_copies=True), ids

    def posterior(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """VAE posterior mean and std of the batch's pixels, from the latent cache where allowed."""
        views = batch.get("view") if self.cache_latents else None
        return encode_posterior(self.vae, batch["pixel_values"], views, self.latent_cache)

    # -------------------------------------------------------------- forward
    def forward(
        self,
        batch: dict,
        record_attention: bool = False,
        placeholder: str = PLACEHOLDER,
        latent_noise: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        offset_noise: torch.Tensor | None = None,
        timesteps: torch.Tensor | None = None,
    ) -> StepOutput:
        """One training forward on ``batch`` (``pixel_values``, ``caption``; ``view`` for the latent cache).

        Randomness is drawn in the reference's order — the VAE posterior sample, the noise, the noise
        offset, the timesteps — except what is given: ``latent_noise`` (the posterior sample's standard
        normal, like the latents), ``noise`` (standard normal, like the latents), ``offset_noise``
        (``[B, C, 1, 1]``, scaled by ``noise_offset`` and added to the noise) and ``timesteps`` (``[B]``).
        """
        with torch.no_grad():
            mean, std = self.posterior(batch)
            if latent_noise is None:
                latent_noise = torch.randn(mean.shape, device=mean.device, dtype=mean.dtype)
            latents = (mean + std * latent_noise.to(mean)) * self.vae.config.scaling_factor  # = latent_dist.sample()
        if noise is None:
            noise = torch.randn_like(latents)
        if self.noise_offset:
            if offset_noise is None:
                offset_noise = torch.randn(*latents.shape[:2], 1, 1, device=latents.device, dtype=latents.dtype)
            noise = noise.to(latents) + self.noise_offset * offset_noise.to(latents)
        if timesteps is None:
            steps = self.noise_scheduler.config.num_train_timesteps
            timesteps = torch.randint(0, steps, (latents.shape[0],), device=latents.device)
        noise, timesteps = noise.to(latents), timesteps.to(latents.device)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        text_states, ids = self.encode(batch["caption"], placeholder)
        self.recorder.active = record_attention
        dropped = self.drop_kv_lora() if self.training and self.kv_lora_dropout else []
        try:
            prediction = self.unet(noisy, timesteps, text_states).sample
        finally:
            self.recorder.active = False
            for module, scale in dropped:
                module.scaling[ADAPTER] = scale
        maps = dict(self.recorder.maps)
        self.recorder.clear()
        if self.noise_scheduler.config.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        positions = self.concept_tokens.matches(ids).any(-1).to(latents.device, non_blocking=True)
        vocabulary = self.text_encoder.get_input_embeddings().weight[: self.vocabulary_size]
        return StepOutput(prediction, target, timesteps, latents, noise, noisy, ids, positions,
                          self.concept_tokens.weight, self.noise_scheduler, vocabulary, maps)

    def pipeline(self, concept_name: str, info: ConceptInfo, scheduler: str = "dpm_solver",
                 placeholder: str = PLACEHOLDER):
        """An :class:`~mos_lightning.pipelines.EDLoRAPipeline` over this model's live modules (no copies)."""
        from .pipelines import EDLoRAPipeline, make_scheduler

        pipe = EDLoRAPipeline(
            vae=self.vae, text_encoder=self.text_encoder, tokenizer=self.tokenizer, unet=self.unet,
            scheduler=make_scheduler(scheduler, self.noise_scheduler.config),  # type: ignore[arg-type]  # checked there
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
        pipe.set_concept_tokens(self.concept_tokens, {concept_name: info})
        pipe.placeholder = placeholder
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def drop_kv_lora(self) -> list:
        """The research branch's k/v LoRA dropout: this step, each cross-attention ``to_k``/``to_v`` LoRA is off
        with probability ``kv_lora_dropout`` (drawn on the host: no device sync). Returns what to restore."""
        dropped = [(m, m.scaling[ADAPTER]) for m in self.kv_lora if random.random() < self.kv_lora_dropout]
        for module, _ in dropped:
            module.scaling[ADAPTER] = 0.0
        return dropped

    # ---------------------------------------------------------------- files
    @torch.no_grad()
    def load_weights(self, edlora: EDLoRA) -> None:
        """Start from a tuned concept: copy its embeddings (by token name) and LoRA weights into this model."""
        weight = self.concept_tokens.weight
        missing = [t for t in self.concept_tokens.names if t not in edlora.embeddings]
        if missing:
            raise ValueError(f"the ED-LoRA has no embedding for token(s) {missing}; it has {sorted(edlora.embeddings)}")
        for i, name in enumerate(self.concept_tokens.names):
            embedding = edlora.embeddings[name]
            if embedding.shape[0] != weight.shape[1]:
                raise ValueError(f"{name} has {embedding.shape[0]} layer embeddings, the model {weight.shape[1]}")
            weight[i] = embedding.to(weight)
        for model, state in ((self.unet, edlora.unet_lora), (self.text_encoder, edlora.text_encoder_lora)):
            if state and self.lora_rank == 0:
                raise ValueError("the ED-LoRA has LoRA weights but this model has none (lora_rank 0)")
            for name, (a, b) in lora_modules(state).items():
                layer = model.get_submodule(name)
                layer.lora_A[ADAPTER].weight.copy_(a)
                layer.lora_B[ADAPTER].weight.copy_(b)

    #: Names (prefixes) of a subclass's extra trainable parameters that its :meth:`export` folds into the file.
    folded_in_export: tuple[str, ...] = ()

    def unexported_parameters(self) -> list[str]:
        """Trainable parameters an ED-LoRA file does not hold (only embeddings and LoRA A/B pairs): a subclass's own
        go into those in its :meth:`export` (named in :attr:`folded_in_export`), or they are lost."""
        return [n for n, p in self.named_parameters() if p.requires_grad and p is not self.concept_tokens.weight
                and not (".lora_A." in n or ".lora_B." in n) and not n.startswith(self.folded_in_export or ("\0",))]

    def export(self, concept_name: str, class_word: str | None = None, base_model: str = "",
               extra: dict | None = None, base_fingerprint: str = "") -> EDLoRA:
        """The tuned concept as an in-memory :class:`EDLoRA` (copies: later training never changes it)."""
        left_out = self.unexported_parameters()
        if left_out:
            warnings.warn(f"the ED-LoRA file does not hold these trainable parameters: {left_out[:5]}; fold them into "
                          "the LoRA or embeddings in an export() override (EXTENDING.md) or they are lost", stacklevel=2)
        lora = self.lora_rank > 0
        weight = self.concept_tokens.weight.detach().float().cpu()
        return EDLoRA(
            concepts={concept_name: ConceptInfo(tokens=list(self.concept_tokens.names), class_word=class_word)},
            embeddings={name: weight[i].clone() for i, name in enumerate(self.concept_tokens.names)},
            unet_lora=lora_state_dict(self.unet) if lora else {},
            text_encoder_lora=lora_state_dict(self.text_encoder) if lora else {},
            num_layers=self.num_layers,
            rank=self.lora_rank,
            alpha=self.lora_alpha,
            base_model=base_model,
            extra=extra or {},
            base_fingerprint=base_fingerprint,
        )
