"""Helpers shared by the benchmark scripts (run from benchmarks/, which is then on sys.path)."""

from __future__ import annotations

import json

from diffusers import DPMSolverMultistepScheduler


def pipeline(cls, base, device: str, dtype):
    """A ``cls`` (diffusers StableDiffusionPipeline or a subclass) over ``base``'s modules, DPM-Solver, no safety checker.
    Several pipelines built from one ``base`` share their modules: only the sampling code differs."""
    pipe = cls(vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer, unet=base.unet,
               scheduler=DPMSolverMultistepScheduler.from_config(base.scheduler_config), safety_checker=None,
               feature_extractor=None, requires_safety_checker=False).to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def report(summary: dict, json_path: str | None) -> None:
    """Print the results and, if asked, write them as JSON."""
    print(json.dumps(summary, indent=2))
    if json_path:
        with open(json_path, "w") as f:
            json.dump(summary, f, indent=2)
