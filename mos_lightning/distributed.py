"""Helpers for several processes (``torch.distributed``), usable with or without Lightning."""

from __future__ import annotations

import random

import torch
import torch.distributed as dist


def all_gather_objects(obj) -> list:
    """``obj`` from every process (``[obj]`` when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        out = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out
    return [obj]


def offset_seeds_by_rank(rank: int) -> None:
    """Give each DDP rank its own random stream: ``seed_everything`` seeds every rank alike, so ranks
    would draw the same noise, timesteps and augmentations for their different images. Rank 0 keeps
    its stream, so a one-process run is unchanged."""
    if rank == 0:
        return
    seed = (torch.initial_seed() + rank) % 2**63
    torch.manual_seed(seed)  # CPU and every GPU
    random.seed(seed)  # the datasets' augmentations draw from Python's generator


def check_ddp_settings(trainer) -> None:
    """DDP(static_graph=True) with gradient accumulation (no_sync) fails inside the reducer in current
    PyTorch, and in some versions silently stops averaging gradients; refuse it before any work."""
    ddp_kwargs = getattr(trainer.strategy, "_ddp_kwargs", None) or {}
    if ddp_kwargs.get("static_graph") and trainer.accumulate_grad_batches > 1:
        raise ValueError(
            "DDP static_graph=True cannot be combined with accumulate_grad_batches > 1 (PyTorch's reducer "
            "breaks under no_sync); drop static_graph from the strategy's init_args, or accumulation"
        )
