"""Fusion benchmark: N concepts fused with the closed form vs L-BFGS (the paper's iterations), same statistics.

SD 1.5-shaped components are built at full size with random weights and N random ED-LoRAs (rank 4
on every attention linear, 2 layer-wise tokens each); nothing is downloaded.

    python benchmarks/fusion.py --size sd15 --concepts 14            # GPU: the paper's 14 concepts
    python benchmarks/fusion.py --size tiny --device cpu --concepts 3 # CPU smoke run

Reported: wall time of each stage (statistics of every concept's own model, text-encoder solve,
k/v statistics + solve, spatial solve), end-to-end time with each solver, peak GPU memory, and the
summed objective of each solver per stage (the closed form must not be worse than L-BFGS).
L-BFGS runs on the Gram form of the objective (same values and gradients as on stacked activations,
without holding them); the paper's activation-based run streams activations from the CPU and is
slower still.
"""

from __future__ import annotations

import argparse
import time

import torch
from common import pipeline, report  # benchmarks/ is on sys.path when these scripts run
from torch import nn
from train_step import build_components  # benchmarks/ is on sys.path when this script runs

from mos_lightning.attention import num_cross_attention_layers
from mos_lightning.edlora_file import ConceptInfo, EDLoRA
from mos_lightning.fusion import LBFGS, ClosedForm, Fuser, FusionSettings
from mos_lightning.fusion.concepts import FusionConcept
from mos_lightning.lora import TEXT_ENCODER_TARGETS, UNET_TARGETS
from mos_lightning.pipelines import EDLoRAPipeline


def lora_state(model: nn.Module, targets, rank: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A rank-``rank`` LoRA state (small random values) for every ``targets`` linear of ``model``."""
    state = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and any(name == t or name.endswith(f".{t}") for t in targets):
            state[f"{name}.lora_A.weight"] = torch.randn(rank, module.in_features, generator=generator) * 0.05
            state[f"{name}.lora_B.weight"] = torch.randn(module.out_features, rank, generator=generator) * 0.05
    return state


def random_concepts(base, count: int, layers: int) -> list[FusionConcept]:
    g = torch.Generator().manual_seed(0)
    width = base.text_encoder.config.hidden_size
    concepts = []
    for i in range(count):
        tokens = [f"<c{i}a>", f"<c{i}b>"]
        edlora = EDLoRA({f"concept{i}": ConceptInfo(tokens, "person")},
                        {t: torch.randn(layers, width, generator=g) * 0.01 for t in tokens},
                        lora_state(base.unet, UNET_TARGETS, 4, g), lora_state(base.text_encoder, TEXT_ENCODER_TARGETS, 4, g),
                        num_layers=layers)
        concepts.append(FusionConcept(f"concept{i}", edlora, source=f"random-{i}"))
    return concepts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("sd15", "tiny"), default="sd15")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--concepts", type=int, default=14)
    parser.add_argument("--steps", type=int, default=20, help="DPM-Solver steps of each concept's trajectory")
    parser.add_argument("--text-encoder-iterations", type=int, default=500)
    parser.add_argument("--unet-iterations", type=int, default=50)
    parser.add_argument("--ridge", type=float, default=ClosedForm().ridge, help="closed-form ridge (relative)")
    parser.add_argument("--solvers", nargs="+", choices=("closed_form", "lbfgs"), default=["closed_form", "lbfgs"])
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    dtype = torch.float16 if cuda else torch.float32

    base = build_components(args.size, args.device)
    pipe = pipeline(EDLoRAPipeline, base, args.device, dtype)
    concepts = random_concepts(base, args.concepts, num_cross_attention_layers(base.unet))
    settings = FusionSettings(num_inference_steps=args.steps)
    solvers = {"closed_form": ClosedForm(args.ridge),
               "lbfgs": LBFGS(args.text_encoder_iterations, args.unet_iterations)}
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    timing: dict[str, float] = {}

    def timed(key, fn):
        sync()
        start = time.perf_counter()
        out = fn()
        sync()
        timing[key] = timing.get(key, 0.0) + time.perf_counter() - start
        return out

    fuser = timed("setup_s", lambda: Fuser(pipe, concepts, settings))
    for index in range(len(concepts)):
        timed("statistics_s", lambda index=index: fuser.collect(index))
    results = {}
    for solver in args.solvers:
        fuser.settings.solver = solvers[solver]
        fuser.sums["kv"] = type(fuser.sums["kv"])()  # k/v statistics depend on this solver's text encoder
        rows = {"text_encoder": timed(f"{solver}_text_encoder_solve_s", lambda: fuser.solve("text_encoder"))}
        for index in range(len(concepts)):
            timed(f"{solver}_kv_statistics_s", lambda index=index: fuser.collect_kv(index))
        rows["kv"] = timed(f"{solver}_kv_solve_s", lambda: fuser.solve("kv"))
        rows["spatial"] = timed(f"{solver}_spatial_solve_s", lambda: fuser.solve("spatial"))
        results[solver] = {stage: sum(r["objective"] for r in rs) for stage, rs in rows.items()}
        results[solver]["naive"] = {stage: sum(r["objective_naive"] for r in rs) for stage, rs in rows.items()}
    fuser.restore_base()
    shared = timing["setup_s"] + timing["statistics_s"]
    for solver in args.solvers:
        timing[f"{solver}_total_s"] = shared + sum(v for k, v in timing.items() if k.startswith(solver) and k.endswith("_s")
                                                    and not k.endswith("total_s"))
    summary = {
        "size": args.size, "device": torch.cuda.get_device_name() if cuda else "cpu", "concepts": args.concepts,
        "steps": args.steps, "iterations": [args.text_encoder_iterations, args.unet_iterations],
        "timing": timing, "objectives": results,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
    }
    if len(args.solvers) == 2:
        summary["solve_speedup"] = (timing["lbfgs_total_s"] - shared) / max(timing["closed_form_total_s"] - shared, 1e-9)
    report(summary, args.json)


if __name__ == "__main__":
    main()
