"""LoRA through peft: configs, injection, state dicts, and exact merge/unmerge for inference.

Reference update: ``W x + alpha * B(A x)`` with alpha = 1.0, i.e. peft's ``lora_alpha = alpha * r``.
State dicts use peft's key names without the adapter name: ``<module>.lora_A.weight`` ([r, in])
and ``<module>.lora_B.weight`` ([out, r]).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence

import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from torch import nn

UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")  # the reference's: every attention projection
FEED_FORWARD_TARGETS = ("ff.net.0.proj", "ff.net.2")  # the transformer blocks' feed-forward layers (not the paper's)
TEXT_ENCODER_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
ADAPTER = "edlora"


def add_lora(model: nn.Module, targets: Sequence[str], rank: int, alpha: float) -> None:
    """Inject a trainable rank-``rank`` LoRA (A Kaiming-uniform, B zeros) into ``targets`` (module-name suffixes);
    every target must name linear layers: fusion and merging work on linear weights."""
    config = LoraConfig(r=rank, lora_alpha=alpha * rank, target_modules=list(targets), init_lora_weights=True)
    inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    wrapped = {n: getattr(m, "base_layer", m) for n, m in model.named_modules() if isinstance(m, LoraLayer)}
    not_linear = sorted(n for n, m in wrapped.items() if not isinstance(m, nn.Linear))
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in wrapped)]
    if not_linear or missing:
        raise ValueError(f"LoRA targets must name linear layers of {type(model).__name__}: "
                         + (f"{not_linear[:3]} are not linear" if not_linear else f"{missing} match no layer"))


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the injected LoRA's A/B weights (CPU, fp32), keyed ``<module>.lora_{A,B}.weight``: changing the
    model afterwards never changes them, and nothing else a peft layer holds (a researcher's extra parameter on it)
    gets in (see :func:`unexported_lora_tensors`)."""
    state = get_peft_model_state_dict(model, adapter_name=ADAPTER)
    return {k: v.detach().to("cpu", torch.float32, copy=True).contiguous() for k, v in state.items()
            if k.endswith((".lora_A.weight", ".lora_B.weight"))}


def unexported_lora_tensors(model: nn.Module) -> list[str]:
    """What peft's state dict holds besides LoRA A/B pairs (e.g. an extra parameter attached to a LoRA layer)."""
    state = get_peft_model_state_dict(model, adapter_name=ADAPTER)
    return sorted(k for k in state if not k.endswith((".lora_A.weight", ".lora_B.weight")))


def lora_modules(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Group a LoRA state dict by module: ``{module: (A [r, in], B [out, r])}``."""
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        module, _, kind = key.rpartition(".lora_")
        pairs.setdefault(module, {})[kind.split(".")[0]] = value
    broken = [m for m, p in pairs.items() if set(p) != {"A", "B"}]
    if broken:
        raise ValueError(f"LoRA state has modules without both A and B weights: {broken[:3]}")
    return {m: (p["A"], p["B"]) for m, p in pairs.items()}


def lora_delta(a: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    """ΔW = alpha * B @ A, computed in fp32."""
    return alpha * (b.float() @ a.float())


def base_linear(model: nn.Module, name: str) -> nn.Linear:
    """The plain ``nn.Linear`` behind ``name`` (unwrapping a peft LoRA layer if present)."""
    module = model.get_submodule(name)
    module = getattr(module, "base_layer", module)
    if not isinstance(module, nn.Linear):
        raise ValueError(f"{name} is a {type(module).__name__}, not a linear layer; was the file tuned on this base?")
    return module


@torch.no_grad()
def merge_lora(
    model: nn.Module, state: Mapping[str, torch.Tensor], alpha: float, scale: float
) -> dict[str, torch.Tensor]:
    """Add ``scale * alpha * B @ A`` into each target weight; return the original weights for :func:`restore`."""
    originals: dict[str, torch.Tensor] = {}
    for name, (a, b) in lora_modules(state).items():
        linear = base_linear(model, name)
        if tuple(linear.weight.shape) != (b.shape[0], a.shape[1]):
            raise ValueError(
                f"LoRA for {name} is {b.shape[0]}x{a.shape[1]} but the model's layer is "
                f"{tuple(linear.weight.shape)}: the file was tuned on a different base model"
            )
        originals[name] = linear.weight.detach().clone()
        delta = lora_delta(a, b, alpha * scale).to(linear.weight.device)
        linear.weight.copy_((linear.weight.float() + delta).to(linear.weight.dtype))
    return originals


@torch.no_grad()
def restore(model: nn.Module, originals: Mapping[str, torch.Tensor]) -> None:
    """Put back weights saved by :func:`merge_lora`, bit-exactly."""
    for name, weight in originals.items():
        base_linear(model, name).weight.copy_(weight)


@contextlib.contextmanager
def scaled_lora(models: Sequence[nn.Module], scale: float) -> Iterator[None]:
    """Temporarily multiply every injected LoRA's output by ``scale`` (0 = base model); restored exactly."""
    saved = []
    for model in models:
        for module in model.modules():
            if isinstance(module, LoraLayer) and ADAPTER in module.scaling:
                saved.append((module, module.scaling[ADAPTER]))
                module.scaling[ADAPTER] = module.scaling[ADAPTER] * scale
    try:
        yield
    finally:
        for module, value in saved:
            module.scaling[ADAPTER] = value
