"""Center-node fusion as a LightningModule: ``mos-lightning predict --config configs/fusion/<set>.yaml``.

Nothing is trained, so fusion runs under ``predict``: each process takes one step holding its share of
the concepts and runs :func:`mos_lightning.fusion.run_fusion` (statistics of its own concepts, summed
over processes; every process solves the same layers; each measures its concepts' fidelity); rank 0
writes the fused model folder and ``fusion_report.json``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import lightning.pytorch as pl
import torch

from ..atomic import check_writable
from ..base_checks import BaseShape, base_fingerprint, check_edlora_fits
from ..components import describe
from ..defaults import BASE_MODEL, NEGATIVE_PROMPT, PLACEHOLDER
from ..fusion import Fuser, FusionSettings, run_fusion
from ..fusion.output import fusion_report, write_results
from ..fusion.solvers import FusionSolver, default_solver
from ..fusion.stats_file import saved_or_recorded
from ..models import model_identity, resolve_dtype, resolve_source
from ..pipelines import EDLoRAPipeline
from ..results_page import write_results_page


class FusionTask(pl.LightningModule):
    """Fuses the ED-LoRAs of a :class:`~mos_lightning.data.FusionDataModule` into one model.

    Writes ``<output_dir>/model/`` (a diffusers folder with the concepts' token table
    ``concepts.safetensors``; load it with ``EDLoRAPipeline.from_pretrained``) and
    ``<output_dir>/fusion_report.json`` (per layer objectives and residuals, per concept fidelity of
    the fused model and of the naive merge).
    """

    def __init__(
        self,
        base_model: str = BASE_MODEL,
        output_dir: str = "outputs/fusion",
        solver: FusionSolver | None = None,
        text_prompts: list[str] | None = None,
        spatial_prompts: list[str] | None = None,
        spatial_seeds: list[int] | None = None,
        num_inference_steps: int = 20,
        scheduler: str = "dpm_solver",
        height: int | None = None,
        width: int | None = None,
        kv_positions: Literal["all", "prompt", "concept"] = "all",
        text_rows: Literal["padded", "unpadded"] = "padded",
        spatial_model: Literal["own", "hybrid"] = "own",
        base_prompts: list[str] | None = None,
        held_out_prompts: list[str] | None = None,
        held_out_seeds: list[int] | None = None,
        guidance_scale: float = 7.5,
        negative_prompt: str = NEGATIVE_PROMPT,
        dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto",
        stats_dtype: Literal["float64", "float32"] = "float64",
        use_saved_stats: bool = True,
        save_stats: bool = False,
    ):
        """
        Args:
            base_model: Local diffusers folder or hub id of the base every concept was tuned on.
            output_dir: Gets ``model/`` (the fused diffusers folder) and ``fusion_report.json``.
            solver: How each layer is solved (``class_path`` + ``init_args``, see :mod:`mos_lightning.fusion.solvers`);
                default ``ClosedForm(ridge=1.0, towards=naive)``: least squares where the concepts' statistics are strong,
                the naive merge where they are weak (it kept the most identity on held-out prompts, CLAIMS.md). Others:
                ``ClosedForm`` (``ridge: 1e-5``, ``towards: base``: the paper's objective solved exactly), ``LBFGS``
                (the paper's iterative solver, same objective), ``NaiveSum`` (W0 + Σ α_i ΔW_i, the paper's baseline),
                ``NaiveAverage`` (W0 + Σ α_i ΔW_i / N, the research branch's), ``KeepBase`` and ``PerLayer`` (a solver
                per stage or layer group).
            text_prompts: Prompts for the text-encoder and k/v statistics (``<TOK>`` = the concept's tokens);
                default ``["photo of a <TOK>", "<TOK>"]``.
            spatial_prompts: Prompts each concept's own model samples for the spatial statistics;
                default ``["photo of a <TOK>"]``.
            spatial_seeds: One sampling trajectory per prompt and seed (default ``[0]``).
            num_inference_steps: DPM-Solver steps of those trajectories (paper: 20, every step recorded).
            scheduler: Sampler for the trajectories (see ``mos_lightning.pipelines.make_scheduler``).
            height: Trajectory image height (default: the model's native size).
            width: Trajectory image width (default: the model's native size).
            kv_positions: Text positions whose features feed the cross-attention k/v statistics: ``all`` (every
                position, padding included — the UNet attends to all of them; on the demo this cut the fused
                model's UNet error about 10×), ``prompt`` (up to the end token) or ``concept`` (concept tokens + end
                token, as the reference implementation).
            text_rows: Text-encoder statistics over every position of the padded prompts (``padded``) or only each
                prompt's own tokens (``unpadded``, the reference).
            spatial_model: Spatial statistics along the concept's own model's trajectory (``own``) or, as the
                reference, a hybrid's: fused text encoder and k/v with the concept's own other layers (``hybrid``;
                recorded after the k/v solve, so never read from statistics files).
            base_prompts: Prompts without any concept on which the report measures how far the fused (and the naive)
                model drift from the base (text-encoder outputs; noise predictions along the base's own trajectories);
                default four generic prompts (``mos_lightning.fusion.fuser.BASE_PROMPTS``); ``[]`` skips the check.
            held_out_prompts: Prompts of the report's lead check, which no statistics used (``<TOK>`` = the concept):
                each concept's own model samples them with guidance, as a user does, and the report gives the share of
                the concept's LoRA effect (own model minus the same at LoRA scale 0) that the fused model and the naive
                merge miss; default ``mos_lightning.fusion.fuser.HELD_OUT_PROMPTS``; ``[]`` skips the check.
            held_out_seeds: Seeds of that check (default ``[1000, 1001]``; keep them apart from ``spatial_seeds``).
            guidance_scale: Classifier-free guidance of that check (as you sample; paper 7.5).
            negative_prompt: Negative prompt of that check (as you sample; default the paper's).
            dtype: Model dtype while recording; ``auto`` = float16 on GPUs, float32 on CPU. The saved model has it too.
            stats_dtype: Accumulation dtype of the summed statistics and the solves.
            use_saved_stats: Use a concept's ``<file stem>.fusion-stats.safetensors`` (written at the end of tuning
                or by an earlier fusion) instead of running its model, when it was made with the same settings.
            save_stats: Write each concept's statistics beside its ED-LoRA file, so later fusions (e.g. with one
                concept more) only record the new concept.
        """
        super().__init__()
        if num_inference_steps < 1:
            raise ValueError("num_inference_steps must be >= 1")
        self.solver = solver if solver is not None else default_solver()
        # The solver is an object: the checkpoint and the report keep its description (no pickle in files).
        self.save_hyperparameters(ignore=["solver"])
        self.hparams["solver"] = describe(self.solver)
        self.pipe: EDLoRAPipeline | None = None
        self.fuser: Fuser | None = None
        self.report: dict = {}
        self.config_text: str | None = None  # the run's config (the CLI hands it over): saved with the model

    keeps_config = True  # SaveConfig hands the config over instead of writing it before the fusion has run

    subcommands = ("predict",)  # the CLI refuses others with a clear message

    # ----------------------------------------------------------------- setup
    @property
    def settings(self) -> FusionSettings:
        h = self.hparams
        defaults = FusionSettings()
        return FusionSettings(
            solver=self.solver, text_prompts=list(h.text_prompts or defaults.text_prompts),
            spatial_prompts=list(h.spatial_prompts or defaults.spatial_prompts),
            spatial_seeds=list(h.spatial_seeds or defaults.spatial_seeds), num_inference_steps=h.num_inference_steps,
            scheduler=h.scheduler, height=h.height, width=h.width, kv_positions=h.kv_positions,
            text_rows=h.text_rows, spatial_model=h.spatial_model,
            base_prompts=list(defaults.base_prompts if h.base_prompts is None else h.base_prompts),
            stats_dtype=getattr(torch, h.stats_dtype),
            held_out_prompts=list(defaults.held_out_prompts if h.held_out_prompts is None else h.held_out_prompts),
            held_out_seeds=list(h.held_out_seeds or defaults.held_out_seeds), guidance_scale=h.guidance_scale,
            negative_prompt=h.negative_prompt,
        )

    def setup(self, stage: str) -> None:
        concepts = getattr(getattr(self.trainer, "datamodule", None), "fusion_concepts", None)
        if not concepts:
            raise ValueError("FusionTask needs a mos_lightning.data.FusionDataModule with at least one concept")
        for prompt in (self.settings.text_prompts + self.settings.spatial_prompts + self.settings.held_out_prompts):
            if PLACEHOLDER not in prompt:
                raise ValueError(f"fusion prompt {prompt!r} lacks {PLACEHOLDER}; the statistics must see the concept's tokens")
        resolve_source(self.hparams.base_model)  # clear error for a missing folder before anything loads
        check_writable(self.hparams.output_dir, "--model.init_args.output_dir")
        shape, fingerprint = BaseShape.of(self.hparams.base_model), base_fingerprint(self.hparams.base_model)
        for concept in concepts:
            check_edlora_fits(concept.edlora, self.hparams.base_model, concept.source or concept.name, shape, fingerprint)

    def configure_model(self) -> None:
        if self.pipe is not None:
            return
        source, local = resolve_source(self.hparams.base_model)
        dtype = resolve_dtype(self.hparams.dtype, self.trainer.strategy.root_device)
        pipe = EDLoRAPipeline.from_pretrained(source, local_files_only=local, torch_dtype=dtype,
                                              safety_checker=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        for module in (pipe.unet, pipe.text_encoder, pipe.vae):
            module.requires_grad_(False).eval()
        self.pipe = pipe
        self.unet, self.text_encoder, self.vae = pipe.unet, pipe.text_encoder, pipe.vae  # moved by Lightning

    # ------------------------------------------------------------ the work
    def build_fuser(self, concepts: list) -> Fuser:
        """The :class:`~mos_lightning.fusion.Fuser` that fuses ``concepts`` into this task's pipeline; override to fuse
        with a subclass of it (other statistics, other stages) without copying :meth:`predict_step`."""
        return Fuser(self.pipe, concepts, self.settings, base_model=model_identity(self.hparams.base_model))

    def predict_step(self, indices: list[int], batch_idx: int = 0) -> str:
        """Fuse, with this process gathering the statistics of concepts ``indices``; rank 0 writes the results.
        Returns the fused model folder."""
        start = time.perf_counter()
        # Lightning predicts under inference mode; L-BFGS needs autograd, and tensors made in inference mode
        # cannot enter it later: run the fusion in plain no-grad mode.
        with torch.inference_mode(False), torch.no_grad():
            h = self.hparams
            self.fuser = fuser = self.build_fuser(self.trainer.datamodule.fusion_concepts)
            result = run_fusion(fuser, [int(i) for i in indices], saved_or_recorded(fuser, h.use_saved_stats, h.save_stats),
                                progress=self.trainer.is_global_zero)
            settings = {k: v for k, v in dict(h).items() if k not in ("base_model", "output_dir", "solver")
                        and not k.startswith("_")}
            self.report = fusion_report(fuser, result, h.solver, settings, h.base_model, self.trainer.world_size)
            if self.trainer.is_global_zero:
                self.write_outputs(start)
        self.trainer.strategy.barrier("fusion-written")
        return str(Path(self.hparams.output_dir) / "model")

    # ------------------------------------------------------------- output
    def write_outputs(self, start: float) -> None:
        fuser, out = self.fuser, Path(self.hparams.output_dir)
        write_results(fuser, out, self.hparams.base_model, self.report, self.config_text, start)
        write_results_page(out)  # index.html: the fidelity chart
        lines = [f"fused {len(fuser.concepts)} concept(s) with {type(self.solver).__name__} → {out / 'model'}"]
        if any("held_out" in f for f in self.report["fidelity"].values()):
            lines.append("identity on held-out prompts and seeds (fused | naive merge): net = kept − stray/2, kept = share of "
                         "the concept's LoRA effect on its pictures reproduced, stray = what is added besides")
            lines += [f"  {name:<20} net {h['fused']['net']:.3f} | {h['naive']['net']:.3f}   kept {h['fused']['kept']:.3f} | "
                      f"{h['naive']['kept']:.3f}   stray {h['fused']['stray']:.3f} | {h['naive']['stray']:.3f}"
                      for name, h in ((n, f["held_out"]) for n, f in self.report["fidelity"].items() if "held_out" in f)]
        lines.append("relative error vs each concept's own model on the statistics' prompts (fused | naive merge):")
        for name, f in self.report["fidelity"].items():
            lines.append(f"  {name:<20} text encoder {f['text_encoder']['fused']:.4f} | {f['text_encoder']['naive']:.4f}"
                         f"   UNet {f['unet']['fused']:.4f} | {f['unet']['naive']:.4f}")
        base = self.report.get("base_preservation")
        if base:
            lines.append(f"  {'base (no concept)':<20} text encoder {base['fused']['text_encoder']:.4f} | "
                         f"{base['naive']['text_encoder']:.4f}   UNet {base['fused']['unet']:.4f} | "
                         f"{base['naive']['unet']:.4f}   (vs the base model)")
        print("\n".join(lines))
