"""ED-LoRA single-concept tuning as a LightningModule (and the paper's LoRA / P+ baselines)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn

from ..atomic import check_writable
from ..base_checks import base_fingerprint, check_new_tokens
from ..components import describe, describe_callable
from ..defaults import BASE_MODEL, PLACEHOLDER
from ..distributed import check_ddp_settings, offset_seeds_by_rank
from ..edlora_file import ConceptInfo, EDLoRA
from ..edlora_model import EDLoRAModel
from ..host_values import LaggedHostScalar
from ..lora import UNET_TARGETS
from ..losses import DiffusionLoss, LossTerm, term_names
from ..models import BaseModel, load_base_model
from .edlora_checks import check_arguments, check_masks
from .edlora_optim import ParameterGroups
from .export_rescue import save_during_training, save_or_rescue
from .trainable_state import TrainableStateCheckpoints


class EDLoRATask(ParameterGroups, TrainableStateCheckpoints, pl.LightningModule):
    """Tunes one concept: layer-wise token embeddings plus rank-r LoRA on UNet and text-encoder attention.

    The model (:class:`~mos_lightning.edlora_model.EDLoRAModel`, ``self.model``) is built in
    :meth:`configure_model`, after the data has been validated; the loss is the sum of ``losses`` on its
    step output. Only the concept's embeddings and the LoRA weights train; the base weights and every
    other embedding row stay bit-identical. At the end of ``fit`` rank 0 writes
    ``<output_dir>/edlora.safetensors``.
    """

    def __init__(
        self,
        base_model: str = BASE_MODEL,
        concept_name: str = "concept",
        tokens: tuple[str, ...] = ("<concept1>", "<concept2>"),
        initializers: tuple[str, ...] = ("<rand-0.013>", "man"),
        class_word: str | None = None,
        layerwise: bool = True,
        lora_rank: int = 4,
        lora_alpha: float = 1.0,
        unet_lora_targets: tuple[str, ...] = UNET_TARGETS,
        embedding_lr: float = 1e-3,
        text_encoder_lr: float = 1e-5,
        unet_lr: float = 1e-4,
        optimizer: OptimizerCallable | None = None,
        lr_schedule: Literal["linear", "constant"] = "linear",
        lr_scheduler: LRSchedulerCallable | None = None,
        noise_offset: float = 0.01,
        prediction_type: Literal["epsilon", "v_prediction"] | None = None,
        losses: list[LossTerm] | None = None,
        kv_lora_dropout: float = 0.0,
        max_embedding_norm: float | None = 0.55,
        init_seed: int = 0,
        frozen_dtype: Literal["float32", "bfloat16", "float16"] = "float32",
        gradient_checkpointing: bool = False,
        compile_unet: bool = False,
        compile_text_encoder: bool = False,
        compile_vae: bool = False,
        compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default",
        channels_last: bool = False,
        cache_latents: bool = True,
        output_dir: str = "outputs/edlora",
        export_every_n_steps: int = 0,
        fusion_stats: bool = False,
    ):
        """
        Args:
            base_model: Local diffusers folder or hub id of the SD 1.x base model.
            concept_name: Name of the concept, stored in the ED-LoRA file (used by fusion and sampling).
            tokens: New token names for the concept, in prompt order (e.g. ``<potter1>``, ``<potter2>``).
            initializers: One per token: ``<rand-σ>`` (Gaussian, std σ) or a single-token word to copy.
            class_word: The concept's class word (for evaluation bounds); default: the first word initializer.
            layerwise: One embedding per cross-attention layer (ED-LoRA); False = one shared embedding ("LoRA" baseline).
            lora_rank: LoRA rank on UNet and text-encoder attention; 0 trains embeddings only (the "P+" baseline).
            lora_alpha: LoRA scale in ``W x + alpha * B(A x)`` (reference: 1.0).
            unet_lora_targets: UNet linear layers that get a LoRA, as module-name suffixes (the reference's: attention
                ``to_q``, ``to_k``, ``to_v``, ``to_out.0``); add ``ff.net.0.proj``, ``ff.net.2`` for the feed-forward
                layers (not the paper's; fusion solves any linear layer, a file's layers are what it holds).
            embedding_lr: Learning rate of the concept embeddings.
            text_encoder_lr: Learning rate of the text-encoder LoRA.
            unet_lr: Learning rate of the UNet LoRA.
            optimizer: Builds the optimizer from the three parameter groups, each carrying its rate (``class_path`` of
                a ``torch.optim`` class + ``init_args``); default AdamW, betas 0.9/0.999, weight decay 0.01 (fused).
            lr_schedule: ``linear`` decays every group's rate to 0 at ``trainer.max_steps``; ``constant`` keeps it.
            lr_scheduler: Builds a schedule from the optimizer instead (stepped every optimizer step).
            noise_offset: Adds ``noise_offset * randn(B, C, 1, 1)`` to the noise.
            prediction_type: Override the scheduler's prediction type (default: the base model's).
            losses: The loss terms, summed (``class_path`` + ``init_args`` each, see :mod:`mos_lightning.losses`);
                default ``[DiffusionLoss()]``; the reference's recipes add ``mask_loss`` and ``AttentionRegularisation``
                (``configs/edlora/``).
            kv_lora_dropout: Each step, each cross-attention k/v LoRA is off with this probability (research
                branch: 0.2–0.3 for some concepts; 0 disables).
            max_embedding_norm: Concept embeddings stop updating once their mean norm reaches this (None disables).
            init_seed: Seed of the random token initialisation.
            frozen_dtype: Storage dtype of the frozen base (``bfloat16`` with ``trainer.precision: bf16-mixed`` halves
                memory); trainable tensors and optimizer state stay float32.
            gradient_checkpointing: Recompute activations in backward (less memory, ~30 % slower); not with a term
                that reads attention maps.
            compile_unet: ``torch.compile`` the UNet in place (a one-time compile of minutes; for long GPU runs).
            compile_text_encoder: Also compile the text encoder (16 layer copies per prompt: many small kernels).
            compile_vae: Also compile the VAE encoder (idle once ``cache_latents`` holds every view).
            compile_mode: ``torch.compile`` mode: ``reduce-overhead`` adds CUDA graphs (needs a fixed batch size: the
                data module's batches are always whole); ``max-autotune`` also tunes kernels.
            channels_last: Store the UNet's convolution weights channels-last (often faster on GPUs with bf16/fp16).
            cache_latents: Reuse the VAE posterior of every deterministic view (letterboxed, not randomly cropped):
                each is encoded once, on its own (so the value does not depend on which batch held it first).
            output_dir: Where ``edlora.safetensors`` is written.
            export_every_n_steps: Also write ``edlora-step<N>.safetensors`` every N optimizer steps (0 disables).
            fusion_stats: Also write ``edlora.fusion-stats.safetensors`` (fusion statistics at the default settings),
                so the center node fuses without running this concept's model again.
        """
        super().__init__()
        self.losses: list[LossTerm] = list(losses) if losses is not None else [DiffusionLoss()]
        if not any(isinstance(term, DiffusionLoss) for term in self.losses):
            rank_zero_warn(f"no DiffusionLoss among the loss terms {term_names(self.losses)}: tuning on these alone. "
                           "`--model.init_args.losses+=…` appends to the list the config gives (every shipped recipe "
                           "lists DiffusionLoss); without one in the config it starts from an empty list")
        check_arguments(tokens, initializers, lora_rank, self.losses, gradient_checkpointing,
                        {"embedding_lr": embedding_lr, "text_encoder_lr": text_encoder_lr, "unet_lr": unet_lr})
        self.loss_names = term_names(self.losses)
        self.record_attention = any(term.needs_attention_maps for term in self.losses)
        self.optimizer_factory, self.scheduler_factory = optimizer, lr_scheduler
        # Components are objects: the checkpoint keeps their description, not the objects (no pickle in files).
        self.save_hyperparameters(ignore=["losses", "optimizer", "lr_scheduler"])
        self.hparams.update(losses=[describe(t) for t in self.losses], optimizer=describe_callable(optimizer),
                            lr_scheduler=describe_callable(lr_scheduler))
        self.strict_loading = False  # checkpoints hold only the trainable state (TrainableStateCheckpoints)
        self.host_loss = LaggedHostScalar()
        # the string in captions that stands for the concept: the data module's (one source of truth), set in setup
        self.placeholder = PLACEHOLDER
        self.model: EDLoRAModel | None = None
        self.base_fingerprint = ""  # set by check_base

    subcommands = ("fit",)  # the CLI refuses others with a clear message

    # ----------------------------------------------------------------- model
    @property
    def concept_class_word(self) -> str | None:
        words = [w for w in self.hparams.initializers if not w.startswith("<rand-")]
        return self.hparams.class_word or next(iter(words), None)

    def load_base(self) -> BaseModel:
        """The frozen base model; override to build components another way (benchmarks build random ones)."""
        return load_base_model(self.hparams.base_model)

    def check_base(self) -> None:
        """Checks against the base before it loads (tokens, initializers; its fingerprint); override with load_base."""
        check_new_tokens(self.hparams.base_model, list(self.hparams.tokens), list(self.hparams.initializers))
        self.base_fingerprint = base_fingerprint(self.hparams.base_model)

    #: The model class :meth:`build_model` makes: a subclass of :class:`EDLoRAModel` plugs in here (EXTENDING.md).
    model_class: type[EDLoRAModel] = EDLoRAModel

    def build_model(self, base: BaseModel) -> EDLoRAModel:
        """The trainable model around the frozen ``base``, from this task's arguments; override (or set
        :attr:`model_class`) to tune another model without copying :meth:`configure_model`."""
        h = self.hparams
        return self.model_class(
            base, h.tokens, h.initializers, layerwise=h.layerwise, lora_rank=h.lora_rank, lora_alpha=h.lora_alpha,
            noise_offset=h.noise_offset, prediction_type=h.prediction_type, init_seed=h.init_seed,
            cache_latents=h.cache_latents, kv_lora_dropout=h.kv_lora_dropout, unet_lora_targets=h.unet_lora_targets,
        )

    def configure_model(self) -> None:
        if self.model is not None:
            return
        h = self.hparams
        self.model = model = self.build_model(self.load_base())
        compile_parts = [p for p in ("unet", "text_encoder", "vae") if h[f"compile_{p}"]]
        model.configure_speed(getattr(torch, h.frozen_dtype), h.gradient_checkpointing, h.channels_last, compile_parts,
                              h.compile_mode)
        for term in self.losses:  # terms that need the tokenizer, the concept's tokens or its class word get them now
            term.setup(self)

    def setup(self, stage: str) -> None:
        dataset = getattr(getattr(self.trainer, "datamodule", None), "dataset", None)
        check_masks(self.losses, dataset)
        self.placeholder = getattr(dataset, "placeholder", PLACEHOLDER)
        if stage == "fit" and self.trainer.max_steps == 0:
            raise ValueError("trainer.max_steps is 0: nothing would be tuned and no ED-LoRA written; give a step count")
        if self.model is None:
            check_writable(self.hparams.output_dir, "--model.init_args.output_dir")
            self.check_base()
        check_ddp_settings(self.trainer)

    def on_fit_start(self) -> None:
        offset_seeds_by_rank(self.global_rank)

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        # noise, timesteps and dropout follow the batch (its seed comes from the data stream), not the process's
        # history: a resumed run draws what the uninterrupted one drew (mos_lightning.data.draws)
        if isinstance(batch, dict) and "noise_seed" in batch:
            torch.manual_seed(int(batch["noise_seed"]))

    def sampling_pipeline(self, scheduler: str = "dpm_solver"):
        """An :class:`~mos_lightning.pipelines.EDLoRAPipeline` over this module's live modules (no copies); the LoRA
        stays injected (scale it with :func:`mos_lightning.lora.scaled_lora` on the pipeline's ``unet`` and
        ``text_encoder``); ``<TOK>`` and this module's placeholder stand for the concept."""
        info = ConceptInfo(tokens=list(self.hparams.tokens), class_word=self.concept_class_word)
        return self.model.pipeline(self.hparams.concept_name, info, scheduler, self.placeholder)

    # -------------------------------------------------------------- training
    def compute_loss(self, batch: dict, return_output: bool = False, **forward_kwargs):
        """The training loss of one batch and its terms by name (detached, for logging), plus the model's
        :class:`StepOutput` with ``return_output``; no logging, no host syncs.

        ``forward_kwargs`` go to :meth:`EDLoRAModel.forward` (e.g. fixed ``noise`` and ``timesteps``).
        """
        h = self.hparams
        if (h.compile_unet or h.compile_text_encoder or h.compile_vae) and h.compile_mode in ("reduce-overhead",
                                                                                            "max-autotune"):
            torch.compiler.cudagraph_mark_step_begin()  # CUDA graphs may now reuse the last step's output memory
        output = self.model(batch, record_attention=self.record_attention, placeholder=self.placeholder,
                            **forward_kwargs)
        parts = {name: term(output, batch) for name, term in zip(self.loss_names, self.losses, strict=True)}
        loss = torch.stack(list(parts.values())).sum() if len(parts) > 1 else next(iter(parts.values()))
        detached = {name: value.detach() for name, value in parts.items()}
        return (loss, detached, output) if return_output else (loss, detached)

    def training_step(self, batch: dict, batch_idx: int) -> dict:
        """Returns ``{"loss", "terms", "step"}``: what callbacks get as ``outputs`` in ``on_train_batch_end``
        (the loss, each loss term's detached value by name, and the :class:`StepOutput`)."""
        loss, parts, output = self.compute_loss(batch, return_output=True)
        # each self.log costs ~1 ms of Python: log the loss's parts only when there are several
        self.log("train/loss", loss.detach())
        if len(parts) > 1:
            for name, value in parts.items():
                self.log(f"train/{name}", value)
        self.log("train/embedding_norm", self.model.concept_tokens.mean_norm().detach())
        # the progress bar reads its values on the host every step (a GPU stall): show a lagged host copy instead
        self.host_loss.push(loss)
        if self.host_loss.ready is not None:
            self.log("loss", self.host_loss.ready, prog_bar=True, logger=False)
        return {"loss": loss, "terms": parts, "step": output}

    # ----------------------------------------------------------------- files
    def export(self) -> EDLoRA:
        """The tuned concept as an in-memory :class:`EDLoRA`."""
        h = self.hparams
        return self.model.export(h.concept_name, self.concept_class_word, h.base_model,
                                 extra={"layerwise": h.layerwise, "global_step": int(self.global_step)},
                                 base_fingerprint=self.base_fingerprint)

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        every = self.hparams.export_every_n_steps
        step = self.global_step
        if every > 0 and step > 0 and step % every == 0 and self.trainer.is_global_zero:
            save_during_training(Path(self.hparams.output_dir) / f"edlora-step{step:06d}.safetensors", self.export())

    def on_train_end(self) -> None:
        if self.trainer.is_global_zero:
            path = save_or_rescue(Path(self.hparams.output_dir) / "edlora.safetensors", self.export())
            print(f"wrote {path}")
            if self.hparams.fusion_stats:
                from ..fusion.stats_file import compute_concept_stats
                print("recording this concept's fusion statistics (fusion_stats: true) …", flush=True)
                for stats in compute_concept_stats(self.hparams.base_model, [str(path)], self.device):
                    print(f"wrote {stats}")
