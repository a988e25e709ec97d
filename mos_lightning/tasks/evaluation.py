"""Evaluation as a LightningModule: ``mos-lightning test --config configs/eval/<set>.yaml``.

Each ``test_step`` makes the images of a batch of (concept, prompt, seed) items with every configured
method — single-concept models (base + the concept's ED-LoRA), a fused model, or the base model with
the class word (the paper's bounds) — using the paper's settings (DPM-Solver 20 steps, CFG 7.5, its
negative prompt, fixed seeds), and scores them with the paper's CLIP metrics (text and image alignment,
summed over processes). Images are saved under ``<output_dir>/images/<method>/`` and reused when a run
is repeated, so an interrupted evaluation resumes. The scores are logged (``test/<metric>/<method>/<concept>``)
and handed out by :meth:`EvalTask.evaluation_results`; :class:`mos_lightning.callbacks.EvalReport` writes
them as Table-1-shaped reports.
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

from ..atomic import check_writable
from ..base_checks import check_edlora_fits
from ..data.concept import open_image
from ..data.evaluation import EvalItem, reference_images
from ..defaults import NEGATIVE_PROMPT, PLACEHOLDER
from ..distributed import all_gather_objects
from ..edlora_file import load_edlora
from ..images import save_png
from ..metrics import ALL_GROUPS, TEXT_PREFIX, AlignmentTable, CLIPFeatures, EvalResults
from ..models import resolve_dtype, resolve_source
from ..pipelines import EDLoRAPipeline, SchedulerName, make_scheduler
from .eval_reuse import check_method_images, method_record, record_method_images
from .sampling_checks import check_sampling_settings
from .termination import step_check


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
    """Makes and scores the evaluation images of every method; pair it with the ``EvalReport`` callback for tables.

    ``test_step`` returns ``{"items", "images": {method: [uint8 HWC]}, "paths": {method: [path]}, "scores":
    [per image row]}``; after the run, :meth:`evaluation_results` gives the :class:`~mos_lightning.metrics.EvalResults`.
    """

    def __init__(
        self,
        methods: list[EvalMethod] | None = None,
        output_dir: str = "outputs/eval",
        reuse_images: bool = True,
        scheduler: SchedulerName = "dpm_solver",
        num_inference_steps: int = 20,
        guidance_scale: float = 7.5,
        negative_prompt: str = NEGATIVE_PROMPT,
        height: int | None = None,
        width: int | None = None,
        dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto",
        clip_model: str = "openai/clip-vit-base-patch32",
        clip_batch_size: int = 32,
    ):
        """
        Args:
            methods: Table rows: ``{name, base_model, edloras: {concept: file}, lora_scale: 0.7, class_word: false}``.
            output_dir: Images go to ``<output_dir>/images/<method>/<concept>/<prompt>/seed<N>.png``; the
                ``EvalReport`` callback writes its tables here too.
            reuse_images: Score images already on disk instead of making them again (resume) — only when the same
                method made them: each method's folder keeps ``made_by.json`` (settings and model file contents),
                and a rerun that differs is refused by name. ``false`` makes every image again.
            scheduler: Sampler (paper: ``dpm_solver``).
            num_inference_steps: Denoising steps (paper: 20).
            guidance_scale: CFG scale (paper: 7.5).
            negative_prompt: Negative prompt (default: the paper's).
            height: Image height (default: the model's native size).
            width: Image width (default: the model's native size).
            dtype: ``auto`` = float16 on GPUs, float32 on CPU.
            clip_model: transformers CLIP model for the metrics (local folder or hub id); the paper uses ViT-B/32.
            clip_batch_size: Reference images per CLIP forward pass.
        """
        super().__init__()
        self.methods = [m if isinstance(m, EvalMethod) else EvalMethod(**m) for m in methods or []]
        if not self.methods:
            raise ValueError("no methods to evaluate: list them under model.init_args.methods")
        names = [m.name for m in self.methods]
        bad = [n for n in names if not re.fullmatch(r"[A-Za-z0-9_-]+", n)]
        if bad or len(set(names)) != len(names):
            raise ValueError(f"method names must be unique and use only letters, digits, - and _: {names}")
        check_sampling_settings(num_inference_steps, guidance_scale, [m.lora_scale for m in self.methods if m.edloras])
        for m in self.methods:
            if m.edloras and m.class_word:
                raise ValueError(f"method {m.name}: class_word runs use the base model only; drop its edloras")
        self.save_hyperparameters()
        self.pipes: dict[str, EDLoRAPipeline] = {}
        self._loaded: dict[str, str | None] = {}  # method → concept whose ED-LoRA is loaded
        self.results: EvalResults | None = None

    subcommands = ("test",)  # the CLI refuses others with a clear message

    def setup(self, stage: str) -> None:
        check_writable(self.hparams.output_dir, "--model.init_args.output_dir")
        concepts = {item.concept for item in getattr(self.trainer.datamodule, "items", [])}
        for m in self.methods:
            resolve_source(m.base_model)
            missing = [c for c in concepts if m.edloras is not None and c not in m.edloras]
            if missing:
                raise ValueError(f"method {m.name} has no ED-LoRA for concept(s) {sorted(missing)}")
            for concept, path in (m.edloras or {}).items():
                if not Path(path).is_file():
                    raise FileNotFoundError(f"method {m.name}: ED-LoRA file {path} for {concept} does not exist")
                check_edlora_fits(load_edlora(path), m.base_model, f"method {m.name}: {path}")
        # images on disk are reused only when this method made them (eval_reuse); with reuse off, the record is
        # written when every image is new (on_test_end), so a killed remake never vouches for old images
        self.records = {m.name: check_method_images(self.method_folder(m), m, self.hparams) if self.hparams.reuse_images
                        else method_record(m, self.hparams) for m in self.methods}
        if self.hparams.reuse_images and self.trainer.is_global_zero:
            for m in self.methods:
                record_method_images(self.method_folder(m), self.records[m.name])

    def on_test_end(self) -> None:
        if not self.hparams.reuse_images and self.trainer.is_global_zero:
            for m in self.methods:
                record_method_images(self.method_folder(m), self.records[m.name])

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
        self.clip = CLIPFeatures(self.hparams.clip_model)

    def on_test_start(self) -> None:
        data, size = self.trainer.datamodule, self.hparams.clip_batch_size
        self.references = {}
        for spec in data.specs:
            paths = reference_images(spec)
            features = [self.clip.images([open_image(p, "RGB") for p in paths[i : i + size]])
                        for i in range(0, len(paths), size)]
            self.references[spec.name] = torch.cat(features)
        self.concepts = [s.name for s in data.specs]
        self.groups = sorted({item.group for item in data.items})
        self.table = AlignmentTable([m.name for m in self.methods], self.concepts, self.groups).to(self.device)
        self.rows: list[dict] = []

    # --------------------------------------------------------------- images
    def method_folder(self, method: EvalMethod) -> Path:
        return Path(self.hparams.output_dir) / "images" / method.name

    def image_path(self, method: EvalMethod, item: dict) -> Path:
        return self.method_folder(method) / EvalItem(**item).name

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
            callback_on_step_end=step_check(self._trainer),
        )
        return list(images)

    def method_images(self, method: EvalMethod, items: list[dict]) -> list[np.ndarray]:
        """Images for ``items``: read from disk when already made, else generated (per concept) and saved."""
        out: list[np.ndarray | None] = [None] * len(items)
        todo: dict[str, list[int]] = {}
        for k, item in enumerate(items):
            path = self.image_path(method, item)
            if self.hparams.reuse_images and path.is_file():
                out[k] = np.asarray(Image.open(path).convert("RGB"))
            else:
                todo.setdefault(item["concept"], []).append(k)
        for ks in todo.values():
            for k, image in zip(ks, self.generate(method, [items[k] for k in ks]), strict=True):
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
        images = {m.name: self.method_images(m, items) for m in self.methods}
        paths = {m.name: [str(self.image_path(m, item)) for item in items] for m in self.methods}
        texts = self.clip.texts([TEXT_PREFIX + item["class_prompt"] for item in items])
        scores = []
        for method, method_images in images.items():
            features = self.clip.images(method_images)
            for k, item in enumerate(items):
                own = self.table.update(method, item["concept"], item["group"], features[k : k + 1], texts[k : k + 1],
                                        self.references[item["concept"]])
                scores.append({"method": method, **item, **own, "path": paths[method][k]})
        self.rows.extend(scores)
        return {"items": items, "images": images, "paths": paths, "scores": scores}

    def on_test_epoch_end(self) -> None:
        values = self.table.compute()  # a collective: every process, same order
        for (method, concept, group), metrics in values.items():
            if group == ALL_GROUPS:
                for name, value in metrics.items():
                    self.log(f"test/{name}/{method}/{concept}", value, sync_dist=False, rank_zero_only=True)
        rows = [r for part in all_gather_objects(self.rows) for r in part]
        rows.sort(key=lambda r: (r["method"], r["concept"], r["prompt_index"], r["seed"]))
        self.results = EvalResults(self.hparams.output_dir, [m.name for m in self.methods], self.concepts,
                                   self.groups, values, rows)

    def evaluation_results(self) -> EvalResults:
        """The scores of the finished ``test`` run (what report callbacks read)."""
        if self.results is None:
            raise RuntimeError("no evaluation results yet: they exist after a finished `test` run")
        return self.results
