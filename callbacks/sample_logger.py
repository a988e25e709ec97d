"""Sample grids while tuning: the concept at several LoRA scales, logged and saved every N steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn

from mos_lightning.defaults import NEGATIVE_PROMPT
from mos_lightning.images import make_grid, save_png
from mos_lightning.lora import scaled_lora
from mos_lightning.pipelines import SchedulerName


class SampleLogger(Callback):
    """Every ``every_n_steps`` optimizer steps and at the end of ``fit``, samples ``prompts`` × ``seeds`` at each
    LoRA scale (columns: scales) with the module's live weights, logs the grid to every configured logger
    that takes images (TensorBoard, W&B, …) and saves it under ``output_dir``.

    Runs on global rank 0 only and leaves training untouched: the global RNG state, train/eval modes,
    LoRA scales and attention processors are restored, and sampling uses its own seeded generators.
    Needs a module with ``sampling_pipeline()`` (e.g. :class:`mos_lightning.tasks.EDLoRATask`).
    """

    def __init__(
        self,
        prompts: list[str] | None = None,
        scales: list[float] | None = None,
        seeds: list[int] | None = None,
        every_n_steps: int = 200,
        at_end: bool = True,
        num_inference_steps: int = 20,
        guidance_scale: float = 7.5,
        negative_prompt: str = NEGATIVE_PROMPT,
        scheduler: SchedulerName = "dpm_solver",
        height: int | None = None,
        width: int | None = None,
        output_dir: str | None = None,
    ):
        """
        Args:
            prompts: Validation prompts; the module's placeholder (``<TOK>``) stands for the concept.
                Default: ``["a photo of <TOK>", "<TOK> on the beach"]``.
            scales: LoRA scales, one grid column each (default ``[0, 0.7, 1.0]``; 0 = embeddings only).
            seeds: Seeds, one grid row per prompt and seed (default ``[0]``).
            every_n_steps: Sample every N optimizer steps (0: only at the end).
            at_end: Also sample when ``fit`` ends.
            num_inference_steps: Denoising steps.
            guidance_scale: Classifier-free guidance scale.
            negative_prompt: Negative prompt (default: the paper's).
            scheduler: Sampler name (see :func:`mos_lightning.pipelines.make_scheduler`).
            height: Image height (default: the model's native size).
            width: Image width (default: the model's native size).
            output_dir: Where grids are saved (default: ``<trainer.log_dir or default_root_dir>/samples``).
        """
        super().__init__()
        self.prompts = list(prompts) if prompts else ["a photo of <TOK>", "<TOK> on the beach"]
        self.scales = [float(s) for s in scales] if scales is not None else [0.0, 0.7, 1.0]
        self.seeds = list(seeds) if seeds else [0]
        if not self.scales or every_n_steps < 0:
            raise ValueError("SampleLogger needs at least one scale and every_n_steps >= 0")
        self.every_n_steps = every_n_steps
        self.at_end = at_end
        self.sampling = dict(num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                             height=height, width=width)
        self.negative_prompt = negative_prompt
        self.scheduler = scheduler
        self.output_dir = output_dir
        self._last_step = -1

    def folder(self, trainer) -> Path:
        if self.output_dir:
            return Path(self.output_dir)
        return Path(trainer.log_dir or trainer.default_root_dir) / "samples"

    def setup(self, trainer, pl_module, stage: str) -> None:
        if not hasattr(pl_module, "sampling_pipeline"):
            raise TypeError(f"SampleLogger needs a module with sampling_pipeline(); {type(pl_module).__name__} has none")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every_n_steps and step > 0 and step % self.every_n_steps == 0 and step != self._last_step:
            self.log_samples(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.at_end and trainer.global_step != self._last_step:
            self.log_samples(trainer, pl_module)

    @torch.no_grad()
    def sample_grid(self, trainer, pl_module) -> np.ndarray:
        """The grid (rows: prompt × seed, columns: scales) as uint8 HWC, training state restored afterwards."""
        pipe = pl_module.sampling_pipeline(self.scheduler)
        modes = {m: m.training for m in pl_module.modules()}
        devices = [pl_module.device] if pl_module.device.type == "cuda" else []
        rows = [(p, s) for p in self.prompts for s in self.seeds]
        columns = []
        try:
            with torch.random.fork_rng(devices=devices), trainer.precision_plugin.forward_context():
                pl_module.eval()
                for scale in self.scales:
                    # the denoising steps as a bar that disappears: grids on SD 1.5 take a while
                    pipe.set_progress_bar_config(desc=f"sample grid at step {trainer.global_step}, LoRA scale {scale}",
                                                 leave=False, disable=not getattr(trainer, "progress_bar_callback", None))
                    with scaled_lora([pipe.unet, pipe.text_encoder], scale):
                        columns.append(pipe.sample([p for p, _ in rows], [s for _, s in rows], self.negative_prompt,
                                                   **self.sampling))
        finally:
            for module, training in modes.items():
                module.train(training)
        tiles = [columns[c][r] for r in range(len(rows)) for c in range(len(self.scales))]
        return make_grid(tiles, columns=len(self.scales))

    def log_samples(self, trainer, pl_module) -> None:
        step = trainer.global_step
        self._last_step = step
        folder = self.folder(trainer)  # on every rank: trainer.log_dir is a collective (broadcast)
        if not trainer.is_global_zero:
            return
        grid = self.sample_grid(trainer, pl_module)
        path = folder / f"step{step:06d}.png"
        caption = f"rows: {self.prompts} x seeds {self.seeds}; columns: LoRA scales {self.scales}"
        save_png(path, grid, {"step": str(step), "caption": caption})
        for logger in trainer.loggers:
            log_image(logger, "samples", grid, step, caption)


def log_image(logger, key: str, image: np.ndarray, step: int, caption: str) -> None:
    """Send an HWC uint8 image to a Lightning logger, whichever kind it is; loggers without images are skipped."""
    from lightning.pytorch.loggers import TensorBoardLogger

    if isinstance(logger, TensorBoardLogger):
        logger.experiment.add_image(key, image, step, dataformats="HWC")
    elif hasattr(logger, "log_image"):  # W&B, Neptune, Comet-style API
        try:
            logger.log_image(key=key, images=[image], step=step, caption=[caption])
        except TypeError:
            rank_zero_warn(f"{type(logger).__name__}.log_image has an unexpected signature; grid saved to disk only")
