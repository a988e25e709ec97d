"""LightningDataModule for one concept's tuning data."""

from __future__ import annotations

import os
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn

from ..defaults import PLACEHOLDER
from .concept import ConceptDataset, ConceptSource, Geometry, read_concept_list
from .draws import DrawLoader, TrainingDraws


class ConceptDataModule(pl.LightningDataModule):
    """Images of one concept, from a folder or the reference concept-list JSON; training length is set by
    ``trainer.max_steps`` (the images repeat as needed), not by an enlarge ratio. Every random choice of training is
    keyed by the step (:mod:`.draws`), so a run resumed from a checkpoint ends bit-identical to an uninterrupted one."""

    def __init__(
        self,
        concept_dir: str | None = None,
        concept_list: str | None = None,
        caption_dir: str | None = None,
        mask_dir: str | None = None,
        instance_prompt: str = PLACEHOLDER,
        placeholder: str = PLACEHOLDER,
        require_placeholder: bool = True,
        resolution: int = 512,
        crop_prob: float = 0.5,
        flip_prob: float = 0.0,
        keep_tags: int = 1,
        shuffle_tags: bool = True,
        prompt_templates: list[str] | str | None = "object",
        geometry: Geometry = "reference",
        mask_downsample: int = 8,
        batch_size: int = 2,
        num_workers: int = 2,
        seed: int | None = None,
    ):
        """
        Args:
            concept_dir: Folder of images; ``captions/`` and ``masks/`` inside it are used when present.
            concept_list: Reference-implementation concept-list JSON (instead of ``concept_dir``).
            caption_dir: Caption folder (``<image stem>.txt``) for ``concept_dir``; default ``concept_dir/captions``.
            mask_dir: Mask folder (``<image stem>.png``) for ``concept_dir``; default ``concept_dir/masks``.
            instance_prompt: Caption for images without a caption file.
            placeholder: The string in captions that stands for the concept (replaced by its tokens).
            require_placeholder: Reject captions that lack the placeholder.
            resolution: Square training resolution in pixels.
            crop_prob: Probability of a random crop (else the whole image, long-edge resized), see ``geometry``.
            flip_prob: Probability of a horizontal flip (the reference never flips: 0).
            keep_tags: Comma-separated caption tags kept in front when shuffling.
            shuffle_tags: Shuffle the caption tags after the first ``keep_tags``.
            prompt_templates: Templates like ``"a photo of a {}"``, one drawn per sample; or the reference's presets
                ``human``, ``object`` (default: its ``EnhanceText`` default), ``style``
                (``mos_lightning.data.caption_templates``); ``null`` uses the captions as they are.
            geometry: ``reference`` (default; its ``HumanResizeCropFinalV3``: top-anchored crops of portraits, random
                placement), ``reference_object`` (its object recipe: random 0.5–1 shrink, random placement) or
                ``centred`` (ours: random square crop, else a centred letterbox whose latents are cached — faster).
            mask_downsample: Pixel → latent downsampling of masks (the VAE scale factor, 8 for SD).
            batch_size: Samples per GPU/process.
            num_workers: DataLoader worker processes (at most the CPUs this process may use); what is trained does
                not depend on it.
            seed: Seed of the data order, the augmentations and each step's noise; ``null`` (default): the run's
                ``seed_everything``. A resumed run keeps its checkpoint's seed.
        """
        super().__init__()
        if (concept_dir is None) == (concept_list is None):
            raise ValueError("give exactly one of concept_dir (a folder of images) or concept_list (a JSON file)")
        self.save_hyperparameters()
        self.dataset: ConceptDataset | None = None

    def sources(self) -> list[ConceptSource]:
        h = self.hparams
        if h.concept_list is not None:
            return read_concept_list(h.concept_list)
        root = Path(h.concept_dir).expanduser()
        caption_dir = h.caption_dir or (str(root / "captions") if (root / "captions").is_dir() else None)
        mask_dir = h.mask_dir or (str(root / "masks") if (root / "masks").is_dir() else None)
        return [ConceptSource(str(root), caption_dir, mask_dir, h.instance_prompt)]

    def setup(self, stage: str | None = None) -> None:
        trainer = getattr(self, "trainer", None)
        if stage == "fit" and trainer is not None and trainer.max_steps < 0:
            raise ValueError("set trainer.max_steps: it is the training length (the images repeat as needed; "
                             "max_epochs plays no part)")
        if self.dataset is not None:
            return
        h = self.hparams
        self.dataset = ConceptDataset(
            self.sources(),
            resolution=h.resolution,
            crop_prob=h.crop_prob,
            flip_prob=h.flip_prob,
            keep_tags=h.keep_tags,
            shuffle_tags=h.shuffle_tags,
            prompt_templates=h.prompt_templates,
            geometry=h.geometry,
            placeholder=h.placeholder,
            require_placeholder=h.require_placeholder,
            mask_downsample=h.mask_downsample,
        )

    def train_dataloader(self) -> DrawLoader:
        """This process's batches, a pure function of the step (:mod:`mos_lightning.data.draws`): a run resumed from a
        checkpoint continues at ``global_step × accumulate_grad_batches`` and ends exactly at ``max_steps``."""
        self.setup("fit")
        assert self.dataset is not None
        trainer = getattr(self, "trainer", None)
        processes = max(1, trainer.world_size) if trainer is not None else 1
        per_step = self.hparams.batch_size * processes
        if per_step > len(self.dataset):
            where = "" if processes == 1 else f" × {processes} processes = {per_step} samples"
            rank_zero_warn(f"batch_size {self.hparams.batch_size}{where} is larger than the {len(self.dataset)} images: "
                           "every step shows some images more than once; lower batch_size (or use "
                           "accumulate_grad_batches, or fewer devices) to train at the batch you mean")
        start, stop = 0, None
        if trainer is not None:
            start = trainer.global_step * trainer.accumulate_grad_batches
            stop = trainer.max_steps * trainer.accumulate_grad_batches
        draws = TrainingDraws(self.dataset, self.hparams.batch_size, self.run_seed(), trainer.global_rank if trainer
                              else 0, processes, start, stop)
        # more workers than CPUs only contend (and torch warns): cap at what this process may use
        workers = min(self.hparams.num_workers, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                      else os.cpu_count() or 1)
        return DrawLoader(draws, num_workers=workers, pin_memory=torch.cuda.is_available())

    def run_seed(self) -> int:
        """``seed`` if given, else the run's ``seed_everything`` (Lightning keeps it in ``PL_GLOBAL_SEED``), else 0."""
        if self.hparams.seed is not None:
            return int(self.hparams.seed)
        return int(os.environ.get("PL_GLOBAL_SEED", 0))
