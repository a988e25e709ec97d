"""Small builders shared by tests."""

from __future__ import annotations

import lightning.pytorch as pl

from mos_lightning.data import ConceptDataModule
from mos_lightning.tasks import EDLoRATask

FAST_LRS = {"embedding_lr": 5e-3, "text_encoder_lr": 1e-3, "unet_lr": 1e-3}


def make_task(tiny_model_dir, out_dir, **overrides) -> EDLoRATask:
    kwargs = dict(
        base_model=str(tiny_model_dir),
        concept_name="redball",
        tokens=("<redball1>", "<redball2>"),
        initializers=("<rand-0.013>", "ball"),
        output_dir=str(out_dir),
        **FAST_LRS,
    )
    kwargs.update(overrides)
    return EDLoRATask(**kwargs)


def make_data(concept_dir, **overrides) -> ConceptDataModule:
    kwargs = dict(concept_dir=str(concept_dir), resolution=64, batch_size=2, num_workers=0)
    kwargs.update(overrides)
    return ConceptDataModule(**kwargs)


def make_trainer(root, max_steps, **overrides) -> pl.Trainer:
    kwargs = dict(
        accelerator="cpu",
        devices=1,
        max_steps=max_steps,
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(root),
    )
    kwargs.update(overrides)
    return pl.Trainer(**kwargs)
