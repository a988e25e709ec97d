"""Checks against a base model made from its configs, tokenizer and a few bytes of its weights — before the
model itself loads (on SD 1.5 the load is the slow part, so every mistake these catch costs seconds, not minutes)."""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from .attention import num_cross_attention_layers
from .edlora_file import EDLoRA
from .models import check_shape, resolve_source

# Rows of these tensors make the fingerprint: the token table and the UNet's first convolution change with any
# fine-tuning of the text encoder or UNet, and reading them touches a few kB of the files.
# (transformers 5 writes the text encoder's keys without the ``text_model.`` prefix that older files have)
FINGERPRINT_TENSORS = (("text_encoder", "embeddings.token_embedding.weight"), ("unet", "conv_in.weight"))


@dataclass
class BaseShape:
    """What an ED-LoRA must match: cross-attention layer count and text width (from the configs alone)."""

    num_layers: int
    hidden_size: int

    @classmethod
    def of(cls, base_model: str) -> BaseShape:
        from diffusers import UNet2DConditionModel
        from transformers import CLIPTextConfig

        source, local = resolve_source(base_model)
        config = UNet2DConditionModel.load_config(source, subfolder="unet", local_files_only=local)
        with torch.device("meta"):  # the architecture without memory or weights
            unet = UNet2DConditionModel.from_config(config)
        text = CLIPTextConfig.from_pretrained(source, subfolder="text_encoder", local_files_only=local)
        return cls(num_cross_attention_layers(unet), text.hidden_size)


def base_fingerprint(base_model: str) -> str:
    """A short content hash of a base model's weights (``""`` when they are not on this machine as safetensors).
    Rows are hashed as float16, so the fp32 and fp16 files of one model agree."""
    source, local = resolve_source(base_model)
    if not local:
        try:
            from huggingface_hub import snapshot_download

            source = snapshot_download(source, local_files_only=True)
        except Exception:  # noqa: BLE001 — not downloaded yet: nothing to compare
            return ""
    from safetensors import safe_open

    digest = hashlib.sha256()
    for subfolder, name in FINGERPRINT_TENSORS:
        for file in sorted((Path(source) / subfolder).glob("*.safetensors")):
            with safe_open(str(file), framework="pt") as f:
                key = next((k for k in f.keys() if k == name or k.endswith("." + name)), None)
                if key is not None:
                    rows = f.get_slice(key)[:64]
                    digest.update(rows.to(torch.float16).contiguous().view(torch.uint8).numpy().tobytes())
                    break
        else:
            return ""
    return digest.hexdigest()[:16]


def check_edlora_fits(edlora: EDLoRA, base_model: str, source: str = "ED-LoRA file",
                      shape: BaseShape | None = None, fingerprint: str | None = None) -> None:
    """Refuse an ED-LoRA tuned on a base of another shape; warn when it was tuned on another base of the same
    shape (a fine-tune of it can be what the user wants: the weights still load)."""
    shape = shape or BaseShape.of(base_model)
    check_shape(edlora, shape.num_layers, shape.hidden_size, f"{source} (for base {base_model})")
    fingerprint = base_fingerprint(base_model) if fingerprint is None else fingerprint
    if edlora.base_fingerprint and fingerprint and edlora.base_fingerprint != fingerprint:
        warnings.warn(f"{source} was tuned on another base model ({edlora.base_model}, weights {edlora.base_fingerprint})"
                      f" than {base_model} (weights {fingerprint}); same shape, so it loads, but the concept may "
                      "look different — use the base it was tuned on", stacklevel=2)


def check_new_tokens(base_model: str, tokens: list[str], initializers: list[str]) -> None:
    """Token names free in the base's vocabulary and single-token initializers, checked with the tokenizer only."""
    from transformers import CLIPTokenizer

    from .tokens import check_token_names, initializer_token

    source, local = resolve_source(base_model)
    tokenizer = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", local_files_only=local)
    check_token_names(tokens, tokenizer.get_vocab())
    for initializer in initializers:
        initializer_token(initializer, tokenizer)


def damaged_weight_files(folder: str | Path) -> list[str]:
    """The ``.safetensors`` files under ``folder`` whose header or length is broken (cheap: no tensor is read)."""
    from safetensors import safe_open

    damaged = []
    for file in sorted(Path(folder).rglob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt"):
                pass
        except Exception as error:  # noqa: BLE001 — any failure to open is what we report
            damaged.append(f"{file} ({error})")
    return damaged


def explain_load_failure(source: str, error: Exception) -> None:
    """A base whose weights cannot be read failed with the library's raw error, the file unnamed: name it."""
    damaged = damaged_weight_files(source) if Path(source).is_dir() else []
    if damaged:
        raise ValueError(f"base model {source} has damaged weight files: {'; '.join(damaged)}; copy or download them "
                         "again") from error
