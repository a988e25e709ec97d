"""Sampling schedulers by short name, built from a model's scheduler config."""

from __future__ import annotations

from typing import Literal

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
)

SchedulerName = Literal["dpm_solver", "ddim", "euler", "euler_ancestral", "pndm", "model"]

_SCHEDULERS = {
    "dpm_solver": DPMSolverMultistepScheduler,  # the paper's sampler (20 steps)
    "ddim": DDIMScheduler,
    "euler": EulerDiscreteScheduler,
    "euler_ancestral": EulerAncestralDiscreteScheduler,
    "pndm": PNDMScheduler,
}


def make_scheduler(name: SchedulerName, config):
    """A fresh scheduler ``name`` from ``config``; ``model`` keeps the model folder's own scheduler class."""
    if name == "model":
        import diffusers

        return getattr(diffusers, config["_class_name"]).from_config(config)
    if name not in _SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {sorted(_SCHEDULERS) + ['model']}")
    return _SCHEDULERS[name].from_config(config)
