"""Where does fusion lose identity? Controlled experiments on world concepts, in one process.

    python -m mos_lightning.world.fusion_study EDLORA_DIR OUT [--variants …]

``EDLORA_DIR/<concept>/edlora.safetensors`` are the tuned concepts (``python -m mos_lightning.world.claims`` or
``configs/world/edlora.yaml`` make them). Every variant is a set of weights for the LoRA-touched layers — a concept's
own model with some of its LoRA switched off, or a fusion of all concepts with some solver per stage or layer group —
sampled on **held-out** prompts and seeds (none used by the fusion statistics) and judged by
:mod:`mos_lightning.world.identity` (world CLIP and the exact detector, kept above the class-word bound, paired
bootstrap intervals). Results: ``OUT/study.json`` and ``OUT/study.md``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..resources import locate
from .concepts import CONCEPTS
from .layer_analysis import layer_analysis
from .study import HELD_OUT_SEEDS, Study, world_settings


def markdown(rows: list[dict]) -> str:
    def cell(value) -> str:
        if isinstance(value, tuple):
            text = f"{value[0]:.0%} [{value[1]:.0%}, {value[2]:.0%}]"
            return text + (f" {value[3]}" if len(value) > 3 else "")
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    columns = ["variant", "clip", "detector", "text", "kept_clip", "kept_detector", "vs_naive_clip", "vs_naive_detector",
               "held_out_net", "held_out_kept", "held_out_stray", "in_sample"]
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from .. import fusion

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("edloras", help="folder with <concept>/edlora.safetensors")
    parser.add_argument("out")
    parser.add_argument("--base", default="demo/world/base")
    parser.add_argument("--clip", default="demo/world/clip")
    parser.add_argument("--concepts", nargs="+", default=sorted(CONCEPTS))
    parser.add_argument("--variants", nargs="+", default=["main"],
                        help="groups: main, where, stages, stages2, ridge, ridge2, ridge3, ridge4, groups, layers")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(HELD_OUT_SEEDS))
    parser.add_argument("--settings", default="{}", help="JSON overrides of the fusion settings (e.g. statistics prompts)")
    parser.add_argument("--tag", default="", help="appended to the names of fused variants (their statistics differ)")
    parser.add_argument("--cache", help="folder of per-variant scores (default OUT/scores; share it between runs)")
    args = parser.parse_args(argv)
    settings = world_settings(**json.loads(args.settings))
    study = Study(locate(args.base), {c: str(Path(args.edloras) / c / "edlora.safetensors") for c in args.concepts},
                  locate(args.clip),
                  settings, seeds=tuple(args.seeds), cache=Path(args.cache or Path(args.out) / "scores"))
    tag = f" {args.tag}" if args.tag else ""
    if args.variants != ["layers"]:
        study.evaluate("own", lambda i: study.own(i))
        study.evaluate("bound", None, class_word=True)
        study.evaluate("naive", study.fuse(fusion.NaiveSum()))
        study.evaluate("closed-form" + tag, study.fuse(fusion.ClosedForm()))
    if "main" in args.variants:
        study.evaluate("default" + tag, study.fuse(fusion.default_solver()))
        study.evaluate("L-BFGS" + tag, study.fuse(fusion.LBFGS()))
    if "where" in args.variants:  # which of the concept's own LoRA carries its identity
        study.evaluate("own: embeddings only", None)
        study.evaluate("own: text encoder", lambda i: study.own(i, lambda part, n: part == "text_encoder"))
        kv = set(study.fuser.stage_layers["kv"])
        study.evaluate("own: text encoder + k/v", lambda i: study.own(i, lambda part, n: part == "text_encoder" or n in kv))
        study.evaluate("own: text encoder + cross-attention",
                       lambda i: study.own(i, lambda part, n: part == "text_encoder" or ".attn2." in n))
        study.evaluate("own: UNet only", lambda i: study.own(i, lambda part, n: part == "unet"))
    if "stages" in args.variants:  # closed form on some stages, the naive sum (or W0) on the rest
        closed, naive, base = fusion.ClosedForm(), fusion.NaiveSum(), fusion.KeepBase()

        def mix(**stages) -> fusion.PerLayer:
            return fusion.PerLayer([fusion.SolverRule(f"{stage}/*", solver) for stage, solver in stages.items()], naive)

        study.evaluate("closed: text encoder", study.fuse(mix(text_encoder=closed)))
        study.evaluate("closed: k/v", study.fuse(mix(kv=closed)))
        study.evaluate("closed: spatial", study.fuse(mix(spatial=closed)))
        study.evaluate("closed: text encoder + k/v", study.fuse(mix(text_encoder=closed, kv=closed)))
        study.evaluate("closed: text encoder + k/v, W0: spatial", study.fuse(mix(text_encoder=closed, kv=closed, spatial=base)))
        study.evaluate("L-BFGS", study.fuse(fusion.LBFGS()))
    if "stages2" in args.variants:  # the default on some stages, the naive sum on the rest
        default, naive = fusion.default_solver(), fusion.NaiveSum()
        for stages in (["text_encoder"], ["kv"], ["spatial"], ["text_encoder", "kv"]):
            rules = [fusion.SolverRule(f"{stage}/*", default) for stage in stages]
            study.evaluate(f"default: {' + '.join(stages)}; naive: rest", study.fuse(fusion.PerLayer(rules, naive)))
    if "ridge" in args.variants:  # a stronger pull towards W0, or towards the naive merge
        for ridge in (1e-3, 1e-2, 1e-1):
            study.evaluate(f"closed form, ridge {ridge:g}", study.fuse(fusion.ClosedForm(ridge)))
    if "ridge2" in args.variants:
        for ridge in (0.3, 1.0, 3.0):
            study.evaluate(f"closed form, ridge {ridge:g}", study.fuse(fusion.ClosedForm(ridge)))
        for ridge in (0.1, 1.0):
            study.evaluate(f"closed form, ridge {ridge:g} towards naive", study.fuse(fusion.ClosedForm(ridge, "naive")))
    if "ridge4" in args.variants:
        for ridge in (0.1, 0.3):
            study.evaluate(f"closed form, ridge {ridge:g} towards naive", study.fuse(fusion.ClosedForm(ridge, "naive")))
    if "ridge3" in args.variants:
        for ridge in (0.3, 3.0, 10.0):
            study.evaluate(f"closed form, ridge {ridge:g} towards naive", study.fuse(fusion.ClosedForm(ridge, "naive")))
    if "groups" in args.variants:  # closed form on one group of spatial layers, naive elsewhere
        for pattern in ("*attn1*", "*attn2.to_q", "*attn2.to_out*", "down_*", "mid_*", "up_*"):
            rules = [fusion.SolverRule(f"spatial/{pattern}", fusion.ClosedForm())]
            study.evaluate(f"closed: spatial {pattern}", study.fuse(fusion.PerLayer(rules, fusion.NaiveSum())))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if "layers" in args.variants:  # where the least-squares compromise loses each concept's change, per layer group
        layers = layer_analysis(study, {"naive": fusion.NaiveSum(), "closed form": fusion.ClosedForm(),
                                        "default": fusion.default_solver()})
        (out / "layers.json").write_text(json.dumps(layers, indent=1) + "\n")
        print("\n".join(json.dumps(r) for r in layers))
    rows = study.table()
    (out / "study.json").write_text(json.dumps(rows, indent=1) + "\n")
    (out / "study.md").write_text(markdown(rows) + "\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
