"""Loading a Stable Diffusion 1.x base model (local diffusers folder or hub id) and checking compatibility."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .attention import num_cross_attention_layers
from .edlora_file import EDLoRA

SUBFOLDERS = ("tokenizer", "text_encoder", "unet", "vae", "scheduler")


@dataclass
class BaseModel:
    """The parts of an SD 1.x model that ED-LoRA tuning, fusion and sampling need."""

    tokenizer: Any  # the libraries' classes, typed loosely upstream (diffusers resolves attributes at run time)
    text_encoder: Any
    unet: Any
    vae: Any
    scheduler_config: dict

    @property
    def num_layers(self) -> int:
        return num_cross_attention_layers(self.unet)


def resolve_source(base_model: str) -> tuple[str, bool]:
    """``(path or hub id, is_local)`` for a model argument; a clear error if it is neither."""
    path = Path(base_model).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "model_index.json").is_file():
            raise FileNotFoundError(
                f"base model {base_model} is not a diffusers model folder (no model_index.json); "
                "give a folder written by save_pretrained or a hub id like 'stable-diffusion-v1-5/stable-diffusion-v1-5'"
            )
        missing = [s for s in SUBFOLDERS if not (path / s).is_dir()]
        if missing:
            raise FileNotFoundError(f"base model folder {base_model} lacks {missing}")
        return str(path), True
    if base_model.startswith((".", "/", "~")) or base_model.count("/") != 1:
        raise FileNotFoundError(
            f"base model {base_model!r} is neither an existing folder nor a hub id of the form 'owner/name'"
        )
    return base_model, False


def model_identity(base_model: str) -> str:
    """A stable name for a model argument: the absolute path of a local folder, else the hub id."""
    source, local = resolve_source(base_model)
    return str(Path(source).resolve()) if local else source


@dataclass
class Geometry:
    """Image sizes a base model works with, read from its configs (no weights load)."""

    vae_factor: int  # pixels per latent pixel
    unet_factor: int  # latent pixels per pixel of the UNet's coarsest level
    native_size: int  # the UNet's sample size in pixels

    @classmethod
    def of(cls, base_model: str) -> Geometry:
        from diffusers import AutoencoderKL, UNet2DConditionModel

        source, local = resolve_source(base_model)
        unet = UNet2DConditionModel.load_config(source, subfolder="unet", local_files_only=local)
        vae = AutoencoderKL.load_config(source, subfolder="vae", local_files_only=local)
        vae_factor = 2 ** (len(vae["block_out_channels"]) - 1)
        return cls(vae_factor, 2 ** (len(unet["block_out_channels"]) - 1), unet["sample_size"] * vae_factor)


def load_base_model(base_model: str) -> BaseModel:
    """Load tokenizer, text encoder, UNet and VAE through ``from_pretrained`` (weights frozen, eval mode)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    source, local = resolve_source(base_model)
    kwargs = {"local_files_only": local}
    try:
        tokenizer = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", **kwargs)
        text_encoder = CLIPTextModel.from_pretrained(source, subfolder="text_encoder", **kwargs)
        unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet", **kwargs)
        vae = AutoencoderKL.from_pretrained(source, subfolder="vae", **kwargs)
    except Exception as error:
        from .base_checks import explain_load_failure  # (base_checks imports this module)

        explain_load_failure(source, error)
        raise
    scheduler_config = DDPMScheduler.load_config(source, subfolder="scheduler", **kwargs)
    for module in (text_encoder, unet, vae):
        module.requires_grad_(False).eval()
    return BaseModel(tokenizer, text_encoder, unet, vae, dict(scheduler_config))


def check_compatible(edlora: EDLoRA, unet, text_encoder, source: str = "ED-LoRA file") -> None:
    """Raise a clear error if ``edlora`` was tuned on a base whose shape differs from ``unet``/``text_encoder``."""
    check_shape(edlora, num_cross_attention_layers(unet), text_encoder.config.hidden_size, source)


def check_shape(edlora: EDLoRA, layers: int, width: int, source: str = "ED-LoRA file") -> None:
    """The same, given the base's cross-attention layer count and text width (e.g. read from its configs)."""
    tuned_on = f"it was tuned on a different base model ({edlora.base_model or 'not recorded'})"
    if edlora.num_layers != layers:
        raise ValueError(f"{source} has {edlora.num_layers} layer-wise embeddings per token but the base model has "
                         f"{layers} cross-attention layers: {tuned_on}")
    if edlora.hidden_size != width:
        raise ValueError(f"{source} has {edlora.hidden_size}-wide embeddings but the base text encoder is {width} "
                         f"wide: {tuned_on}")


def resolve_dtype(name: str, device: torch.device | str) -> torch.dtype:
    """``auto`` = float16 on GPUs, float32 elsewhere; otherwise the named torch dtype."""
    if name == "auto":
        return torch.float16 if torch.device(device).type == "cuda" else torch.float32
    return getattr(torch, name)


def cast_frozen(modules, dtype: torch.dtype) -> None:
    """Store the frozen (``requires_grad=False``) parameters of ``modules`` in ``dtype``; trainable ones keep theirs."""
    for module in modules:
        for param in module.parameters():
            if not param.requires_grad:
                param.data = param.data.to(dtype)
