"""Fusion statistics inputs and solvers, side by side: concept fidelity and base preservation of each choice.

For every variant (statistics inputs × solver) the same concepts are fused and the report's two
kinds of numbers are printed as a Markdown table: relative error of the fused model against each concept's
own model (text encoder; UNet along the concept's trajectory; mean over concepts) and against the *base*
model on prompts without concepts (how far generic text drifts). Lower is better in every column.

    python benchmarks/fusion_inputs.py --base-model outputs/demo/tiny-sd \\
        outputs/demo/edlora/redball/edlora.safetensors outputs/demo/edlora/bluecube/edlora.safetensors
"""

from __future__ import annotations

import argparse
import json

from mos_lightning.fusion import (
    LBFGS,
    ClosedForm,
    ConceptSpec,
    Fuser,
    FusionSettings,
    NaiveAverage,
    load_concepts,
    run_fusion,
)
from mos_lightning.models import resolve_source
from mos_lightning.pipelines import EDLoRAPipeline

SOLVERS = {"closed_form": ClosedForm(), "lbfgs": LBFGS(), "naive_average": NaiveAverage(),
           # the reference's settings: history 25, tolerances 1e-16, k/v 500 iterations, the best iterate kept
           "lbfgs_reference": LBFGS(history_size=25, tolerance_grad=1e-16, tolerance_change=1e-16, kv_iterations=500,
                                    keep_best=True)}
# statistics inputs: ours (k/v rows at every position), or the reference's (all three of its choices)
INPUTS = {
    "all": {"kv_positions": "all"},
    "concept": {"kv_positions": "concept"},
    "reference": {"kv_positions": "concept", "text_rows": "unpadded", "spatial_model": "hybrid"},
}


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("edloras", nargs="+")
    parser.add_argument("--base-model", required=True)
    parser.add_argument("--size", type=int, default=None, help="trajectory size (default: the model's native)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--inputs", nargs="+", default=["all", "concept"], choices=list(INPUTS),
                        help="statistics inputs: k/v rows at every position (all), at concept + end tokens (concept), "
                             "or the reference's three choices (reference: + unpadded text rows, hybrid spatial)")
    parser.add_argument("--solvers", nargs="+", default=list(SOLVERS), choices=list(SOLVERS))
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    source, local = resolve_source(args.base_model)
    rows = []
    for kv in args.inputs:
        for solver in args.solvers:
            pipe = EDLoRAPipeline.from_pretrained(source, local_files_only=local, safety_checker=None,
                                                  requires_safety_checker=False)
            pipe.set_progress_bar_config(disable=True)
            settings = FusionSettings(solver=SOLVERS[solver], height=args.size, width=args.size,
                                      num_inference_steps=args.steps, **INPUTS[kv])
            result = run_fusion(Fuser(pipe, load_concepts([ConceptSpec(p) for p in args.edloras]), settings))
            fidelity, base = result.fidelity.values(), result.base_preservation
            rows.append({
                "inputs": kv, "solver": solver,
                "concept_text": mean(f["text_encoder"]["fused"] for f in fidelity),
                "concept_unet": mean(f["unet"]["fused"] for f in fidelity),
                "base_text": base["fused"]["text_encoder"], "base_unet": base["fused"]["unet"],
                "naive_concept_unet": mean(f["unet"]["naive"] for f in fidelity),
                "naive_base_unet": base["naive"]["unet"],
            })
    print("| inputs | solver | concept: text encoder | concept: UNet | base: text encoder | base: UNet |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['inputs']} | {r['solver']} | {r['concept_text']:.4f} | {r['concept_unet']:.4f} | "
              f"{r['base_text']:.4f} | {r['base_unet']:.4f} |")
    print(f"naive sum (W0 + Σ ΔW): concept UNet {rows[0]['naive_concept_unet']:.4f}, base UNet "
          f"{rows[0]['naive_base_unet']:.4f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
