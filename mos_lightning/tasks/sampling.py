"""Sampling as a LightningModule: ``mos-lightning predict`` over a :class:`~mos_lightning.data.PromptDataModule`."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal

import lightning.pytorch as pl
import torch

from ..base_checks import BaseShape, base_fingerprint, check_edlora_fits
from ..data.scenes import CONCEPT_REFERENCE
from ..defaults import BASE_MODEL, NEGATIVE_PROMPT, PLACEHOLDER
from ..edlora_file import CONCEPTS_FILE, REFERENCE_CONCEPTS_FILE, EDLoRA, load_edlora, reference_concept_name
from ..models import Geometry, resolve_dtype, resolve_source
from ..pipelines import EDLoRAPipeline, SchedulerName, make_scheduler
from .sampling_checks import check_sampling_settings
from .termination import step_check, stop_if_terminated


class SamplingTask(pl.LightningModule):
    """Images from a base model plus ED-LoRA files, or from a fused model folder (its concepts load with it).

    ``predict_step`` returns ``{"images": uint8 [B, H, W, 3], "prompt", "seed", "prompt_index", "metadata"}``; pair
    it with :class:`mos_lightning.callbacks.ImageWriter` to save them.
    """

    def __init__(
        self,
        base_model: str = BASE_MODEL,
        edloras: list[str] | None = None,
        lora_scale: float = 0.7,
        scheduler: SchedulerName = "dpm_solver",
        num_inference_steps: int = 20,
        guidance_scale: float = 7.5,
        negative_prompt: str = NEGATIVE_PROMPT,
        height: int | None = None,
        width: int | None = None,
        dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto",
    ):
        """
        Args:
            base_model: Local diffusers folder or hub id; a fused model folder brings its concepts along.
            edloras: ED-LoRA files (``.safetensors``, or the reference ``.pth``) to load on top of the base.
            lora_scale: Scale of the merged LoRA weights (paper default 0.7; 0 = embeddings only).
            scheduler: Sampler: ``dpm_solver`` (the paper's), ``ddim``, ``euler``, ``euler_ancestral``, ``pndm``,
                or ``model`` (the model folder's own).
            num_inference_steps: Denoising steps (paper: 20).
            guidance_scale: Classifier-free guidance scale (paper: 7.5; 1 disables CFG).
            negative_prompt: Negative prompt for CFG (default: the paper's); ``""`` for none.
            height: Image height in pixels (default: the model's native size).
            width: Image width in pixels (default: the model's native size).
            dtype: Weight dtype for sampling; ``auto`` = float16 on GPUs, float32 on CPU.
        """
        super().__init__()
        self.save_hyperparameters()
        check_sampling_settings(num_inference_steps, guidance_scale, [lora_scale] if edloras else [])
        for size in (height, width):
            if size is not None and size <= 0:
                raise ValueError(f"height and width must be positive, got {size}")
        self.pipe: EDLoRAPipeline | None = None
        self._edloras: list[EDLoRA] = []

    subcommands = ("predict",)  # the CLI refuses others with a clear message

    def setup(self, stage: str) -> None:
        """Check sizes and read and cross-check the ED-LoRA files before the (large) base model loads."""
        # diffusers' pipelines take multiples of 8 only (whatever the VAE), and the latents multiples of the VAE's factor
        multiple = math.lcm(8, Geometry.of(self.hparams.base_model).vae_factor)
        for size in (self.hparams.get("height"), self.hparams.get("width")):  # a subclass may size per item
            if size is not None and size % multiple:
                raise ValueError(f"height and width must be multiples of {multiple} (diffusers' pipelines need 8, this "
                                 f"model's VAE {Geometry.of(self.hparams.base_model).vae_factor}), got {size}")
        if self.hparams.edloras and not self._edloras:
            self.read_edloras()
        resolve_source(self.hparams.base_model)  # a clear error for a missing folder, before anything loads
        prompts = getattr(getattr(self.trainer, "datamodule", None), "prompts", None)
        if isinstance(prompts, list):
            self.check_prompts(prompts)

    def read_edloras(self) -> None:
        missing = [p for p in self.hparams.edloras if not Path(p).is_file()]
        if missing:
            raise FileNotFoundError(f"ED-LoRA file(s) not found: {missing}; tune them first (mos-lightning fit …)")
        seen: dict[str, str] = {}
        base = self.hparams.base_model
        shape, fingerprint = BaseShape.of(base), base_fingerprint(base)
        for path in self.hparams.edloras:
            edlora = load_edlora(path)
            check_edlora_fits(edlora, base, str(path), shape, fingerprint)
            for token in edlora.token_names:
                if token in seen:
                    raise ValueError(f"token {token} is in both {seen[token]} and {path}; tune one concept with other token names")
                seen[token] = path
            self._edloras.append(edlora)

    def known_tokens(self) -> set[str]:
        """``<concept name>`` and token names of the model folder's table and the ED-LoRA files (cheap: no model);
        with exactly one concept, the placeholder too."""
        sources = list(self._edloras)
        source, local = resolve_source(self.hparams.base_model)
        if local and (Path(source) / CONCEPTS_FILE).is_file():
            sources.append(load_edlora(Path(source) / CONCEPTS_FILE))
        known, concepts = set(), []
        for edlora in sources:
            known |= {f"<{name}>" for name in edlora.concepts} | set(edlora.token_names)
            concepts += [f"<{name}>" for name in edlora.concepts]
        if local and (Path(source) / REFERENCE_CONCEPTS_FILE).is_file():  # a reference fused folder
            config = json.loads((Path(source) / REFERENCE_CONCEPTS_FILE).read_text())
            names = {reference_concept_name(token) for token in config}
            known |= set(config) | {f"<{name}>" for name in names}
            concepts += [f"<{name}>" for name in sorted(names)]
        self._concept_names = concepts
        return known | ({PLACEHOLDER} if len(concepts) == 1 else set())

    def check_prompts(self, prompts: list[str]) -> None:
        """Refuse prompts naming a concept the model does not have (they would sample without it, silently)."""
        known = self.known_tokens()
        for prompt in prompts:
            unknown = [t for t in CONCEPT_REFERENCE.findall(prompt) if t not in known]
            if unknown == [PLACEHOLDER] and len(self._concept_names) > 1:
                raise ValueError(f"prompt {prompt!r}: {PLACEHOLDER} stands for the concept only when exactly one is "
                                 f"loaded; with {len(self._concept_names)} loaded, name one: "
                                 f"{', '.join(self._concept_names)}")
            if unknown and not known:
                raise ValueError(f"prompt {prompt!r} names {unknown}, but the model has no concepts: base_model "
                                 f"{self.hparams.base_model} holds no {CONCEPTS_FILE} (a fused folder keeps its tokens "
                                 "there: copy the whole folder) and edloras lists no ED-LoRA file")
            if unknown:
                raise ValueError(f"prompt {prompt!r}: {unknown} are not concepts or tokens of the model (known: "
                                 f"{sorted(known)}); check the spelling, or load the ED-LoRA that has them")

    def configure_model(self) -> None:
        if self.pipe is not None:
            return
        h = self.hparams
        source, local = resolve_source(h.base_model)
        # No safety checker: the paper samples without one, and black images would bias the metrics.
        pipe = EDLoRAPipeline.from_pretrained(source, local_files_only=local, safety_checker=None,
                                              requires_safety_checker=False)
        for path, edlora in zip(h.edloras or [], self._edloras, strict=True):
            try:
                pipe.load_edlora(edlora, scale=h.lora_scale)
            except ValueError as error:
                raise ValueError(f"{path}: {error}") from error
        pipe.scheduler = make_scheduler(h.scheduler, pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)  # Lightning's bar counts batches
        self.pipe = pipe
        # Registered as children so Lightning moves them to the device.
        self.unet, self.text_encoder, self.vae = pipe.unet, pipe.text_encoder, pipe.vae

    def sampling_dtype(self) -> torch.dtype:
        return resolve_dtype(self.hparams.dtype, self.device)

    def on_predict_start(self) -> None:
        dtype = self.sampling_dtype()
        if self.unet.dtype != dtype:
            self.pipe.to(dtype=dtype)

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        h = self.hparams
        stop_if_terminated(self._trainer)
        images = self.pipe.sample(batch["prompt"], batch["seed"], h.negative_prompt, height=h.height, width=h.width,
                                  num_inference_steps=h.num_inference_steps, guidance_scale=h.guidance_scale,
                                  callback_on_step_end=step_check(self._trainer))
        return {**batch, "images": images, "metadata": [{"model": str(h.base_model)}] * len(images)}
