"""A fusion's results on disk: the fused diffusers folder (with the concepts' token table) and its report."""

from __future__ import annotations

from pathlib import Path

from ..edlora_file import CONCEPTS_FILE, save_edlora
from ..atomic import atomic_dir, write_json
from .fuser import Fuser
from .run import FusionResult


def fusion_report(fuser: Fuser, result: FusionResult, solver: dict, settings: dict, base_model: str,
                  world_size: int = 1) -> dict:
    """``fusion_report.json``: the solver (class path and arguments) and settings that made the model, each
    concept, per concept fidelity (fused and naive merge), per layer objectives, timing."""
    return {
        "base_model": base_model,
        "solver": solver,
        "settings": settings,
        "concepts": [
            {"name": c.name, "file": c.source, "tokens": c.tokens, "unet_alpha": c.unet_alpha,
             "text_encoder_alpha": c.text_encoder_alpha}
            for c in fuser.concepts
        ],
        "fidelity": result.fidelity,
        "base_preservation": result.base_preservation,
        "layers": result.layers,
        "timing": dict(result.timing),
        "world_size": world_size,
        "statistics": result.statistics,
    }


def save_fused_model(fuser: Fuser, folder: str | Path, base_model: str = "") -> Path:
    """Write the fused weights as a diffusers folder plus ``concepts.safetensors``, atomically; the pipeline's
    weights and vocabulary are restored afterwards."""
    from diffusers import StableDiffusionPipeline

    fuser.set_weights("text_encoder", fuser.fused["text_encoder"])
    fuser.set_weights("unet", fuser.fused["unet"])
    table = fuser.token_table(base_model)
    pipe = fuser.pipe
    pipe.unload_edlora()  # the saved folder has the base vocabulary; the tokens live in concepts.safetensors
    try:
        with atomic_dir(folder) as tmp:
            plain = StableDiffusionPipeline(
                vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, unet=pipe.unet,
                scheduler=pipe.scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
            )
            plain.save_pretrained(tmp)
            save_edlora(tmp / CONCEPTS_FILE, table)
    finally:
        fuser.restore_base()
    return Path(folder)


def write_report(folder: str | Path, report: dict) -> Path:
    path = Path(folder) / "fusion_report.json"
    write_json(path, report)
    return path
