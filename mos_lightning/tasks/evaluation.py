"""Evaluation as a LightningModule: ``mos-lightning test --config configs/eval/<set>.yaml``.

Each ``test_step`` makes the images of a batch of (concept, prompt, seed) items with every configured
method — single-concept models (base + the concept's ED-LoRA), a fused model, or the base model with
the class word (the paper's bounds) — using the paper's settings (DPM-Solver 20 steps, CFG 7.5, its
negative prompt, fixed seeds). Images are saved under ``<output_dir>/images/<method>/`` and reused
when a run is repeated, so an interrupted evaluation resumes. Scoring is the job of
:class:`mos_lightning.callbacks.CLIPMetrics`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import lightning.pytorch as pl
import numpy as np
import torch
from PIL import Image

from ..edlora_file import load_edlora
from ..models import resolve_dtype, resolve_source
from ..pipelines import DEFAULT_NEGATIVE_PROMPT, EDLoRAPipeline, SchedulerName, make_scheduler

PLACEHOLDER = "<TOK>"


@dataclass
class EvalMethod:
    """One row of the results table: how images are made."""

    name: str
    """Row label (letters, digits, ``-``, ``_``), e.g. ``single-concept``, ``fused``, ``bound``."""
    base_model: str
    """Base model folder / hub id, or a fused model folder (its concepts load with it)."""
    edloras: dict[str, str] | None = None
    """Concept name → ED-LoRA file: single-concept models (each concept sampled with its own file)."""
    lora_scale: float = 0.7
    """LoRA scale of those files."""
    class_word: bool = False
    """Replace ``<TOK>`` by the concept's class word (the paper's text upper / image lower bound)."""


class EvalTask(pl.LightningModule):
    """Makes the evaluation images of every method; pair it with the ``CLIPMetrics`` callback."""

    def __init__(
        self,
        methods: list[EvalMethod] | None = None,
        output_dir: str = "outputs/eval",
        reuse_images: bool = True,
        scheduler: SchedulerName = "dpm_solver",
        num_inference_steps: int = 20,
        guidance_scale: float = 7.5,
        negative_prompt: str = DEFAULT_NEGATIVE_PROMPT,
        height: int | None = None,
        width: int | None = None,
        dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto",
    ):
        """
        Args:
            methods: Table rows: ``{name, base_model, edloras: {concept: file}, lora_scale: 0.7, class_word: false}``.
            output_dir: Images go to ``<output_dir>/images/<method>/<concept>/<prompt>/seed<N>.png``; the
                metrics callback writes its tables here too.
            reuse_images: Score images already on disk instead of making them again (resume).
            scheduler: Sampler (paper: ``dpm_solver``).
            num_inference_steps: Denoising steps (paper: 20).
            guidance_scale: CFG scale (paper: 7.5).
            negative_prompt: Negative prompt (default: the paper's).
            height: Image height (default: the model's native size).
            width: Image width (default: the model's native size).
            dtype: ``auto`` = float16 on GPUs, float32 on CPU.
        """
        super().__init__()
        self.methods = [m if isinstance(m, EvalMethod) else EvalMethod(**m) for m in methods or []]
        if not self.methods:
            raise ValueError("no methods to evaluate: list them under model.init_args.methods")
        names = [m.name for m in self.methods]
        bad = [n for n in names if not re.fullmatch(r"[A-Za-z0-9_-]+", n)]
        if bad or len(set(names)) != len(names):
            raise ValueError(f"method names must be unique and use only letters, digits, - and _: {names}")
        for m in self.methods:
            if m.edloras and m.class_word:
                raise ValueError(f"method {m.name}: class_word runs use the base model only; drop its edloras")
        self.save_hyperparameters()
        self.pipes: dict[str, EDLoRAPipeline] = {}
        self._loaded: dict[str, str | None] = {}  # method → concept whose ED-LoRA is loaded

    def setup(self, stage: str) -> None:
        concepts = {item.concept for item in getattr(self.trainer.datamodule, "items", [])}
        for m in self.methods:
            resolve_source(m.base_model)
            missing = [c for c in concepts if m.edloras is not None and c not in m.edloras]
            if missing:
                raise ValueError(f"method {m.name} has no ED-LoRA for concept(s) {sorted(missing)}")
            for concept, path in (m.edloras or {}).items():
                if not Path(path).is_file():
                    raise FileNotFoundError(f"method {m.name}: ED-LoRA file {path} for {concept} does not exist")

    def configure_model(self) -> None:
        if self.pipes:
            return
        dtype = resolve_dtype(self.hparams.dtype, self.trainer.strategy.root_device)
        modules = {}
        for m in self.methods:
            source, local = resolve_source(m.base_model)
            pipe = EDLoRAPipeline.from_pretrained(source, local_files_only=local, torch_dtype=dtype,
                                                  safety_checker=None, requires_safety_checker=False)
            pipe.scheduler = make_scheduler(self.hparams.scheduler, pipe.scheduler.config)
            pipe.set_progress_bar_config(disable=True)
            self.pipes[m.name] = pipe
            self._loaded[m.name] = None
            modules[m.name] = torch.nn.ModuleList([pipe.unet, pipe.text_encoder, pipe.vae])
        self.models = torch.nn.ModuleDict(modules)  # moved to the device by Lightning

    # --------------------------------------------------------------- images
    def image_path(self, method: EvalMethod, item: dict) -> Path:
        from ..data.evaluation import EvalItem

        return Path(self.hparams.output_dir) / "images" / method.name / EvalItem(**item).name

    def prompt_for(self, method: EvalMethod, item: dict) -> str:
        if method.class_word:
            return item["class_prompt"]
        if method.edloras:
            return item["prompt"]  # the concept's own file is the only one loaded: <TOK> is its tokens
        return item["prompt"].replace(PLACEHOLDER, f"<{item['concept']}>")  # a fused model knows every concept

    def use_concept(self, method: EvalMethod, concept: str) -> None:
        if not method.edloras or self._loaded[method.name] == concept:
            return
        pipe = self.pipes[method.name]
        pipe.unload_edlora()
        pipe.load_edlora(load_edlora(method.edloras[concept]), scale=method.lora_scale)
        self._loaded[method.name] = concept

    def generate(self, method: EvalMethod, items: list[dict]) -> list[np.ndarray]:
        """uint8 HWC images of ``items`` (all of one concept) made by ``method``."""
        h = self.hparams
        self.use_concept(method, items[0]["concept"])
        images = self.pipes[method.name].sample(
            [self.prompt_for(method, i) for i in items], [i["seed"] for i in items], h.negative_prompt,
            num_inference_steps=h.num_inference_steps, guidance_scale=h.guidance_scale, height=h.height, width=h.width,
        )
        return list(images)

    def method_images(self, method: EvalMethod, items: list[dict]) -> list[np.ndarray]:
        """Images for ``items``: read from disk when already made, else generated (per concept) and saved."""
        from mos_lightning.callbacks.image_writer import save_png

        out: list[np.ndarray | None] = [None] * len(items)
        todo: dict[str, list[int]] = {}
        for k, item in enumerate(items):
            path = self.image_path(method, item)
            if self.hparams.reuse_images and path.is_file():
                out[k] = np.asarray(Image.open(path).convert("RGB"))
            else:
                todo.setdefault(item["concept"], []).append(k)
        for ks in todo.values():
            for k, image in zip(ks, self.generate(method, [items[k] for k in ks])):
                out[k] = image
                item = items[k]
                save_png(self.image_path(method, item), image,
                         {"prompt": self.prompt_for(method, item), "seed": str(item["seed"]), "method": method.name})
        return out

    def test_step(self, batch: list[dict | None], batch_idx: int) -> dict | None:
        items = [item for item in batch if item is not None]  # None: padding of a shorter shard
        if not items:
            return None
        items.sort(key=lambda i: i["concept"])  # fewer ED-LoRA switches
        return {"items": items, "images": {m.name: self.method_images(m, items) for m in self.methods}}
