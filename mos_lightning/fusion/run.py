"""The method's stage order in one function: every concept's own-model statistics, then the text encoder,
then cross-attention k/v (from the *fused* text encoder), then the spatial layers, then fidelity.

Runs the same in a notebook and under Lightning: with ``torch.distributed`` initialised (e.g. by
Lightning's DDP), each process handles its ``indices`` and the statistics are summed across processes;
every process solves the same layers and ends with the full result.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from ..distributed import all_gather_objects
from .fidelity import base_preservation, held_out_scores, record_base, record_held_out, text_fidelity, unet_fidelity
from .fuser import ConceptRecord, Fuser
from .grams import FusionSums, all_reduce_sums

#: ``(index) -> (record, where it came from)``: how a concept's own-model statistics are obtained.
RecordSource = Callable[[int], tuple[ConceptRecord, str]]


@dataclass
class FusionResult:
    """What a fusion measured (the fused weights stay in the :class:`Fuser`: ``fuser.fused``)."""

    layers: dict[str, list[dict]]  # stage → per-layer rows (objectives, residuals, seconds)
    fidelity: dict[str, dict]  # concept → {"text_encoder": {"fused", "naive"}, "unet": {"fused", "naive"}}
    statistics: dict[str, str]  # concept → where its own-model statistics came from
    timing: dict[str, float]
    # fused / naive model vs the base on prompts without concepts: {"fused": {"text_encoder", "unet"}, "naive": …}
    base_preservation: dict[str, dict[str, float]] | None = None


def sum_across_processes(sums: FusionSums, dtype: torch.dtype, device: torch.device) -> None:
    """Sum ``sums`` over every process (a no-op in a single process); processes that saw no concept of a
    layer take its shape from the others."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    sums.gather_concepts(all_gather_objects)
    for layout in all_gather_objects(sums.layout()):
        sums.fill_missing(layout, device, dtype)

    def reduce(tensor: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(tensor)
        return tensor

    all_reduce_sums(sums, reduce)


def bar(items, description: str, show: bool):
    """A progress bar over ``items`` that disappears when done (phases that take minutes on SD 1.5)."""
    return tqdm(items, desc=description, disable=not show, leave=False)


def solve_stages(fuser: Fuser, indices: Sequence[int], progress: bool = False) -> tuple[dict[str, list[dict]], dict]:
    """The stages after the concepts' statistics are added: text encoder, then k/v (from the fused text encoder),
    then the spatial layers; ``(per-stage layer rows, {index: (fused, naive) text-encoder fidelity})``."""
    dtype, device = fuser.settings.stats_dtype, fuser.device
    sum_across_processes(fuser.sums["text_encoder"], dtype, device)
    layers = {"text_encoder": fuser.solve("text_encoder", progress)}
    fuser.sums["kv"] = fuser.new_sums()  # k/v statistics depend on the fused text encoder: recollected every solve
    text = {index: (fuser.collect_kv(index), text_fidelity(fuser, index, "naive")) for index in indices}
    sum_across_processes(fuser.sums["kv"], dtype, device)
    layers["kv"] = fuser.solve("kv", progress)
    if fuser.settings.spatial_model == "hybrid":  # the reference's spatial inputs need the fused text encoder and k/v
        fuser.sums["spatial"] = fuser.new_sums()
        for index in indices:
            fuser.sums["spatial"].add(fuser.record_spatial_hybrid(index).to(device), fuser.concept_deltas(index, "unet"),
                                      dtype, index)
    sum_across_processes(fuser.sums["spatial"], dtype, device)
    layers["spatial"] = fuser.solve("spatial", progress)
    return layers, text


def held_out_identity(fuser: Fuser, index: int) -> dict[str, dict]:
    """How much of concept ``index``'s LoRA effect on its pictures the fused model and the naive merge keep, and what
    they add besides, on held-out prompts and seeds sampled with guidance
    (:func:`~mos_lightning.fusion.fidelity.held_out_scores`): the report's lead numbers."""
    reference = record_held_out(fuser, index)
    return {which: held_out_scores(fuser, reference, {part: getattr(fuser, which)[part] for part in fuser.parts})
            for which in ("fused", "naive")}


def run_fusion(fuser: Fuser, indices: Sequence[int] | None = None, source: RecordSource | None = None,
               progress: bool = False) -> FusionResult:
    """Fuse ``fuser.concepts``; this process gathers the statistics of ``indices`` (default: all of them),
    obtained with ``source`` (default: recorded from each concept's own model)."""
    indices = list(range(len(fuser.concepts)) if indices is None else indices)
    source = source or (lambda index: (fuser.record(index), "recorded"))
    timing, statistics, start = {}, {}, time.perf_counter()
    for index in bar(indices, "fusion: concept statistics (concepts)", progress):
        record, origin = source(index)
        fuser.add(index, record)
        statistics[fuser.concepts[index].name] = origin
    timing["statistics_s"] = time.perf_counter() - start

    start = time.perf_counter()
    layers, text = solve_stages(fuser, indices, progress)
    timing["solve_s"] = time.perf_counter() - start

    start = time.perf_counter()
    fidelity = {
        fuser.concepts[index].name: {
            **({"held_out": held_out_identity(fuser, index)} if fuser.settings.held_out_prompts else {}),
            "text_encoder": {"fused": text[index][0], "naive": text[index][1]},
            "unet": {"fused": unet_fidelity(fuser, index, "fused"), "naive": unet_fidelity(fuser, index, "naive")},
        }
        for index in bar(indices, "fusion: fidelity check (concepts)", progress)
    }
    preservation = None
    if fuser.settings.base_prompts:  # measured once (on the first process) and shared
        first = not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
        if first:
            base = record_base(fuser)
            preservation = {which: base_preservation(fuser, base, which) for which in ("fused", "naive")}
        preservation = all_gather_objects(preservation)[0]
    timing["fidelity_s"] = time.perf_counter() - start
    gathered_fidelity, gathered_statistics = {}, {}
    for part in all_gather_objects(fidelity):
        gathered_fidelity.update(part)
    for part in all_gather_objects(statistics):
        gathered_statistics.update(part)
    order = [c.name for c in fuser.concepts]
    return FusionResult(
        layers,
        {name: gathered_fidelity[name] for name in order if name in gathered_fidelity},
        {name: gathered_statistics.get(name) for name in order},
        timing,
        preservation,
    )
