"""Small builders shared by tests."""

from __future__ import annotations

import lightning.pytorch as pl
import torch

from mos_lightning.data import ConceptDataModule
from mos_lightning.edlora_file import ConceptInfo, EDLoRA
from mos_lightning.lora import TEXT_ENCODER_TARGETS, UNET_TARGETS, add_lora, lora_state_dict
from mos_lightning.losses import AttentionRegularisation, DiffusionLoss
from mos_lightning.models import load_base_model
from mos_lightning.tasks import EDLoRATask

FAST_LRS = {"embedding_lr": 5e-3, "text_encoder_lr": 1e-3, "unet_lr": 1e-3}


def loss_terms(mask_loss: bool = False, attn_reg_weight: float = 0.0) -> list:
    """The loss list for the reference's two switches (mask loss, attention regularisation weight)."""
    return [DiffusionLoss(mask_loss=mask_loss)] + ([AttentionRegularisation(attn_reg_weight)] if attn_reg_weight else [])


def make_task(tiny_model_dir, out_dir, mask_loss=False, attn_reg_weight=0.0, **overrides) -> EDLoRATask:
    kwargs = dict(
        losses=loss_terms(mask_loss, attn_reg_weight),
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
    # centred geometry and plain captions: the tests see deterministic views (cached latents) and their own captions
    kwargs = dict(concept_dir=str(concept_dir), resolution=64, batch_size=2, num_workers=0, geometry="centred",
                  prompt_templates=None)
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


def random_edlora(tiny_model_dir, name="cat", embeddings=None, seed=0, lora_std=0.3, unet_targets=UNET_TARGETS) -> EDLoRA:
    """An ED-LoRA for the tiny model with random embeddings and LoRA weights (a stand-in for a tuned concept)."""
    torch.manual_seed(seed)
    base = load_base_model(str(tiny_model_dir))
    add_lora(base.unet, unet_targets, 4, 1.0)
    add_lora(base.text_encoder, TEXT_ENCODER_TARGETS, 4, 1.0)
    unet = {k: torch.randn_like(v) * lora_std for k, v in lora_state_dict(base.unet).items()}
    text = {k: torch.randn_like(v) * lora_std for k, v in lora_state_dict(base.text_encoder).items()}
    tokens = [f"<{name}1>", f"<{name}2>"]
    embeddings = embeddings or {t: torch.randn(16, 32) for t in tokens}
    return EDLoRA({name: ConceptInfo(tokens, name)}, embeddings, unet, text, num_layers=16, rank=4, alpha=1.0)


def sampling_pipe(tiny_model_dir, *concepts: str):
    """The tiny model as an ``EDLoRAPipeline`` with DPM-Solver, no progress bars, and a random ED-LoRA (at scale 0:
    its tokens only) for each of ``concepts`` — the regional tests' pipeline."""
    from diffusers import DPMSolverMultistepScheduler

    from mos_lightning.pipelines import EDLoRAPipeline

    pipe = EDLoRAPipeline.from_pretrained(tiny_model_dir, local_files_only=True)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    for seed, name in enumerate(concepts):
        pipe.load_edlora(random_edlora(tiny_model_dir, name, seed=seed, lora_std=0.1), scale=0.0)
    return pipe
