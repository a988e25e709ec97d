"""A fusion's results on disk: the fused diffusers folder (with the concepts' token table) and its report."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from ..atomic import atomic_dir, atomic_path
from ..edlora_file import CONCEPTS_FILE, save_edlora
from .fuser import Fuser
from .run import FusionResult

# 2: per-concept ``fidelity[*]["held_out"]`` (held-out guided identity), per-layer ``solver``; older readers ignore both
REPORT_VERSION = 2


def fusion_report(fuser: Fuser, result: FusionResult, solver: dict, settings: dict, base_model: str,
                  world_size: int = 1) -> dict:
    """``fusion_report.json``: the solver (class path and arguments) and settings that made the model, each
    concept, per concept fidelity (fused and naive merge), per layer objectives, timing."""
    return {
        "format_version": REPORT_VERSION,
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


def save_fused_model(fuser: Fuser, folder: str | Path, base_model: str = "",
                     describe: Callable[[], dict[str, str]] | None = None) -> Path:
    """Write the fused weights as a diffusers folder plus ``concepts.safetensors``, atomically; the pipeline's
    weights and vocabulary are restored afterwards. ``describe()`` (called after the weights are written) gives
    further files (name → text, e.g. the report and config) that go into the folder in the same swap."""
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
            for name, text in (describe() if describe else {}).items():
                (tmp / name).write_text(text)
    finally:
        fuser.restore_base()
    return Path(folder)


def write_results(fuser: Fuser, output_dir: str | Path, base_model: str, report: dict, config_text: str | None,
                  started: float) -> None:
    """``<output_dir>/model/`` with the report and config inside it (one atomic swap: weights, report and config
    change together), then copies of both beside it; the old copies go first, so a kill in between leaves no
    report that describes another model."""
    out = Path(output_dir)
    names = ["fusion_report.json"] + (["config.yaml"] if config_text is not None else [])
    for name in names:
        (out / name).unlink(missing_ok=True)
    files: dict[str, str] = {}

    def describe() -> dict[str, str]:
        report["timing"]["write_s"] = time.perf_counter() - begin
        report["timing"]["total_s"] = time.perf_counter() - started
        files["fusion_report.json"] = json.dumps(report, indent=2) + "\n"
        if config_text is not None:
            files["config.yaml"] = config_text
        return files

    begin = time.perf_counter()
    save_fused_model(fuser, out / "model", base_model, describe)
    for name, text in files.items():
        with atomic_path(out / name) as tmp:
            tmp.write_text(text)
