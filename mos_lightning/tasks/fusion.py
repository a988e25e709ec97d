"""Center-node fusion as a LightningModule: ``mos-lightning fit --config configs/fusion/<set>.yaml``.

Nothing is trained: each "training step" gathers one concept's statistics from its own model (the
concepts are split across processes), and at the end of the epoch the statistics are summed over
processes, every process solves the same layers (milliseconds each), each measures the fidelity of
its own concepts, and rank 0 writes the fused model folder and ``fusion_report.json``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import lightning.pytorch as pl
import torch

from ..components import describe
from ..data.fusion import IDLE
from ..edlora_file import CONCEPTS_FILE, save_edlora
from ..fusion import Fuser, FusionSettings, all_reduce_sums
from ..fusion.concept_stats import load_record, save_record, stats_path
from ..fusion.solvers import ClosedForm, FusionSolver
from ..io import atomic_dir, write_json
from ..models import all_gather_objects, model_identity, resolve_dtype, resolve_source
from ..pipelines import EDLoRAPipeline
from .edlora import DEFAULT_BASE


class FusionTask(pl.LightningModule):
    """Fuses the ED-LoRAs of a :class:`~mos_lightning.data.FusionDataModule` into one model.

    Writes ``<output_dir>/model/`` (a diffusers folder with the concepts' token table
    ``concepts.safetensors``; load it with ``EDLoRAPipeline.from_pretrained``) and
    ``<output_dir>/fusion_report.json`` (per layer objectives and residuals, per concept fidelity of
    the fused model and of the naive merge).
    """

    def __init__(
        self,
        base_model: str = DEFAULT_BASE,
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
                default ``ClosedForm(ridge=1e-5)``, the exact least squares with a small ridge towards W0. Others:
                ``LBFGS`` (the paper's iterative solver, same objective), ``NaiveSum`` (W0 + Σ α_i ΔW_i, the
                paper's baseline) and ``NaiveAverage`` (W0 + Σ α_i ΔW_i / N, the research branch's).
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
        self.solver = solver if solver is not None else ClosedForm()
        # The solver is an object: the checkpoint and the report keep its description (no pickle in files).
        self.save_hyperparameters(ignore=["solver"])
        self.hparams["solver"] = describe(self.solver)
        self.automatic_optimization = False
        # DDP refuses to wrap a module without trainable parameters; fusion trains nothing.
        self.ddp_anchor = torch.nn.Parameter(torch.zeros(1))
        self.pipe: EDLoRAPipeline | None = None
        self.fuser: Fuser | None = None
        self.report: dict = {}
        self.statistics: dict[str, str] = {}  # concept → where its own-model statistics came from

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
            stats_dtype=getattr(torch, h.stats_dtype),
        )

    def setup(self, stage: str) -> None:
        concepts = getattr(getattr(self.trainer, "datamodule", None), "fusion_concepts", None)
        if not concepts:
            raise ValueError("FusionTask needs a mos_lightning.data.FusionDataModule with at least one concept")
        for prompt in (self.settings.text_prompts + self.settings.spatial_prompts):
            if "<TOK>" not in prompt:
                raise ValueError(f"fusion prompt {prompt!r} lacks <TOK>; the statistics must see the concept's tokens")
        resolve_source(self.hparams.base_model)  # clear error for a missing folder before anything loads

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

    def on_fit_start(self) -> None:
        self._start = time.perf_counter()
        self.fuser = Fuser(self.pipe, self.trainer.datamodule.fusion_concepts, self.settings,
                           base_model=model_identity(self.hparams.base_model))

    def configure_optimizers(self):
        return None

    # ------------------------------------------------------------ the work
    def training_step(self, index, batch_idx: int) -> None:
        index = int(index)
        if index == IDLE:
            return
        fuser, h = self.fuser, self.hparams
        concept, key = fuser.concepts[index], fuser.statistics_key(index)
        path = stats_path(concept.source)
        record, why = load_record(path, key) if h.use_saved_stats else (None, "use_saved_stats is off")
        if record is None:
            record = fuser.record(index)
            self.statistics[concept.name] = "recorded" + (f" ({why})" if path.exists() else "")
            if h.save_stats:
                save_record(path, record, key)
        else:
            self.statistics[concept.name] = f"read from {path}"
        fuser.add(index, record)

    def _reduce(self, stage: str) -> None:
        sums = self.fuser.sums[stage]
        layouts = all_gather_objects(sums.layout())
        for layout in layouts:
            sums.fill_missing(layout, self.device, self.fuser.settings.stats_dtype)
        all_reduce_sums(sums, lambda t: self.trainer.strategy.reduce(t, reduce_op="sum"))

    def on_train_epoch_end(self) -> None:
        fuser, timing = self.fuser, {"statistics_s": time.perf_counter() - self._start}
        progress = self.trainer.is_global_zero
        start = time.perf_counter()
        layers = {}
        self._reduce("text_encoder")
        layers["text_encoder"] = fuser.solve("text_encoder", progress)
        text_fidelity = {}
        for i in sorted(fuser.references):  # this process's concepts: k/v statistics need the fused text encoder
            text_fidelity[i] = (fuser.collect_kv(i), fuser.text_fidelity_naive(i))
        self._reduce("kv")
        self._reduce("spatial")
        layers["kv"] = fuser.solve("kv", progress)
        layers["spatial"] = fuser.solve("spatial", progress)
        timing["solve_s"] = time.perf_counter() - start
        start = time.perf_counter()
        fidelity = {}
        for i in sorted(fuser.references):
            fidelity[fuser.concepts[i].name] = {
                "text_encoder": {"fused": text_fidelity[i][0], "naive": text_fidelity[i][1]},
                "unet": {"fused": fuser.unet_fidelity(i, "fused"), "naive": fuser.unet_fidelity(i, "naive")},
            }
        gathered, statistics = {}, {}
        for part in all_gather_objects(fidelity):
            gathered.update(part)
        for part in all_gather_objects(self.statistics):
            statistics.update(part)
        timing["fidelity_s"] = time.perf_counter() - start
        self.report = self.build_report(layers, gathered, timing)
        self.report["statistics"] = {c.name: statistics.get(c.name) for c in fuser.concepts}
        if self.trainer.is_global_zero:
            self.write_outputs()
        self.trainer.strategy.barrier("fusion-written")
        self.trainer.should_stop = True  # one pass over the concepts, whatever trainer.max_epochs says

    # ------------------------------------------------------------- output
    def build_report(self, layers: dict, fidelity: dict, timing: dict) -> dict:
        h, fuser = self.hparams, self.fuser
        order = [c.name for c in fuser.concepts]
        return {
            "base_model": h.base_model,
            "solver": h.solver,
            "settings": {k: v for k, v in dict(h).items()
                         if k not in ("base_model", "output_dir") and not k.startswith("_")},
            "concepts": [
                {"name": c.name, "file": c.source, "tokens": c.tokens, "unet_alpha": c.unet_alpha,
                 "text_encoder_alpha": c.text_encoder_alpha}
                for c in fuser.concepts
            ],
            "fidelity": {name: fidelity[name] for name in order if name in fidelity},
            "layers": layers,
            "timing": timing,
            "world_size": self.trainer.world_size,
        }

    def write_outputs(self) -> None:
        fuser, out = self.fuser, Path(self.hparams.output_dir)
        start = time.perf_counter()
        from diffusers import StableDiffusionPipeline

        fuser.set_weights("text_encoder", fuser.fused["text_encoder"])
        fuser.set_weights("unet", fuser.fused["unet"])
        table = fuser.token_table(self.hparams.base_model)
        pipe = self.pipe
        pipe.unload_edlora()  # the saved folder has the base vocabulary; the tokens live in concepts.safetensors
        try:
            with atomic_dir(out / "model") as tmp:
                plain = StableDiffusionPipeline(
                    vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, unet=pipe.unet,
                    scheduler=pipe.scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
                )
                plain.save_pretrained(tmp)
                save_edlora(tmp / CONCEPTS_FILE, table)
        finally:
            fuser.restore_base()
        self.report["timing"]["write_s"] = time.perf_counter() - start
        self.report["timing"]["total_s"] = time.perf_counter() - self._start
        write_json(out / "fusion_report.json", self.report)
        lines = [f"fused {len(fuser.concepts)} concept(s) with {type(self.solver).__name__} → {out / 'model'}",
                 "relative error vs each concept's own model (fused | naive merge):"]
        for name, f in self.report["fidelity"].items():
            lines.append(f"  {name:<20} text encoder {f['text_encoder']['fused']:.4f} | {f['text_encoder']['naive']:.4f}"
                         f"   UNet {f['unet']['fused']:.4f} | {f['unet']['naive']:.4f}")
        print("\n".join(lines))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"] = {}  # nothing is trained; the result is the model folder
