"""(c) of the claims run for a variant — another world base, sketch adapter or ED-LoRA tuning recipe — paired
against a finished claims run on the same layouts and seeds:

    python -m mos_lightning.world.claims_variant outputs/variant --against outputs/claims \\
        --recipe reference-losses --jobs 2          # about 15 minutes on 2 CPU cores

The six concepts tuned with ED-LoRA (the claims run's recipe, ``configs/world/edlora.yaml``, with the ``--recipe``'s
and ``--tuning-args``' overrides), fused by the default solver, and (c)'s layouts composed under each regional
setting of ``--conditions``, each concept alone, and without control, all through the real ``mos-lightning``
command line (a stage already on disk is skipped, so a run resumes). ``<out>/variant.md`` and ``variant.json`` give
per setting the share of boxes showing their concept, of pictures showing all of theirs, and of boxes holding
their concept's class in any colour, with 95 % intervals, and each minus the same setting of ``--against`` (paired:
the same layouts and seeds). Why: a change to the base or to concept tuning is judged by what it does to
composition, not only to each concept alone (CLAIMS.md (c)). The intervals resample pictures, not tunings: the
world recipe tuned again under another seed (``--tuning-args "--seed_everything 1 --model.init_args.init_seed 1"``)
moved these rates by up to 14 points, so compare recipes over several tunings each (``world.claims_tunings``)."""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from ..resources import locate
from .claims import REGIMES, SOLVERS, TUNINGS, Claims, token
from .claims_regional import LAYOUTS, REGIONAL_CONDITIONS, REGIONAL_NAMES, paired_difference, pooled_rates, regional_scores
from .concepts import CONCEPTS
from .markdown import interval_text, signed_text, write_results


def _losses(mask_loss: bool) -> list[str]:
    return ["--model.init_args.losses", json.dumps([
        {"class_path": "mos_lightning.losses.DiffusionLoss", "init_args": {"mask_loss": mask_loss}},
        {"class_path": "mos_lightning.losses.AttentionRegularisation", "init_args": {"weight": 0.01}}])]


RECIPES = {  # name → command-line overrides of configs/world/edlora.yaml
    "world": [],
    # the reference's recipe for objects and real people (8201_EDLoRA_carA, 8101_EDLoRA_potter: use_mask_loss,
    # attn_reg_weight 0.01; configs/edlora/object.yaml) ...
    "reference-losses": _losses(mask_loss=True),
    # ... and for anime characters (1001_1_EDLoRA_hina_nomask: attn_reg_weight 0.01 without the mask loss)
    "reference-attention": _losses(mask_loss=False),
}
CONDITIONS = ["with", "context", "sketch", "context-sketch"]  # the settings (c) compares most often


class VariantClaims(Claims):
    """A claims run cut down to (c): one tuning (ED-LoRA under ``tuning_args``), one fusion, ``conditions``."""

    regimes = {"weak": REGIMES["weak"]}
    solvers = {"default": SOLVERS["default"]}

    def __init__(self, out: Path, base: str, sketch: str, tuning_args: list[str], conditions: list[str], jobs: int):
        super().__init__(out, sorted(CONCEPTS), [1, 2, 3, 4], None, str(Path(locate("demo/world/clip")).resolve()),
                         base, jobs, sketch=sketch)
        self.tunings = {REGIMES["weak"]: [*TUNINGS[REGIMES["weak"]], *tuning_args]}
        self.conditions = {c: REGIONAL_CONDITIONS[c] for c in conditions}

    def scores(self, run: Path | None = None) -> dict:
        """(c)'s rates of this variant's pictures, or of ``run``'s for the same settings."""
        return regional_scores(run or self.out, list(LAYOUTS), self.concepts, {c: token(c) for c in self.concepts},
                               conditions=[*self.conditions, "without"])


def compare(variant: dict, against: dict) -> dict:
    """Per setting: the variant's pooled rates, and the variant minus ``against`` (paired), for boxes, whole pictures
    and the class in its box."""
    rows_v, rows_a = list(variant["layouts"].values()), list(against["layouts"].values())
    result = {}
    for condition in ["real", "alone", *(c for c in rows_v[0] if c not in ("real", "alone"))]:
        mine = [r[condition] for r in rows_v]
        result[condition] = {"rates": {**pooled_rates(mine), "class": pooled_rates([r["classes"] for r in mine])["boxes"]}}
        if condition != "real":
            theirs = [r[condition] for r in rows_a]
            if [len(r["hits"]) for r in mine] != [len(r["hits"]) for r in theirs]:
                raise ValueError(f"{condition}: the runs drew different numbers of pictures per layout; pair runs of "
                                 "the same layouts and seeds")
            boxes_all = paired_difference(mine, theirs)
            kinds = paired_difference([r["classes"] for r in mine], [r["classes"] for r in theirs])
            result[condition]["minus against"] = {**boxes_all, "class": kinds["boxes"]}
    return result


def report(result: dict, header: str) -> str:
    lines = [header, "", "| setting | boxes | whole pictures | class in its box | boxes vs against | pictures vs against "
             "| class vs against |", "| --- |" + " ---: |" * 6]
    for condition, row in result.items():
        rates = [interval_text(row["rates"][k]) for k in ("boxes", "all", "class")]
        diffs = [signed_text(row["minus against"][k]) if "minus against" in row else "" for k in ("boxes", "all", "class")]
        lines.append(f"| {REGIONAL_NAMES.get(condition, condition)} | " + " | ".join(rates + diffs) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="output folder (resumes what is there)")
    parser.add_argument("--against", required=True, help="a finished claims run (or variant) to pair with")
    parser.add_argument("--base", default="demo/world/base", help="the world base model")
    parser.add_argument("--sketch", default="demo/world/sketch", help="the world's sketch adapter (trained for its base)")
    parser.add_argument("--recipe", default="world", choices=sorted(RECIPES), help="named tuning overrides")
    parser.add_argument("--tuning-args", default="", help="more mos-lightning fit arguments, one shell-quoted string")
    parser.add_argument("--conditions", nargs="+", default=CONDITIONS, choices=sorted(REGIONAL_CONDITIONS),
                        help="regional settings to compose (each concept alone and without control always are)")
    parser.add_argument("--jobs", type=int, default=1, help="tunings at a time, one thread each")
    args = parser.parse_args(argv)
    against = Path(args.against).resolve()
    missing = [c for c in ["alone", *args.conditions, "without"] if not (against / "regional" / c).is_dir()]
    if missing:  # before any tuning: the pairing needs every setting in both runs
        raise SystemExit(f"{against} has no regional/{', regional/'.join(missing)}: pass a finished claims run, or "
                         "--conditions that it has")
    out = Path(args.out).resolve()
    tuning_args = [*RECIPES[args.recipe], *shlex.split(args.tuning_args)]
    claims = VariantClaims(out, str(Path(locate(args.base)).resolve()), str(Path(locate(args.sketch)).resolve()),
                           tuning_args, args.conditions, args.jobs)
    claims.tune()
    claims.fuse()
    claims.compose()
    result = compare(claims.scores(), claims.scores(against))
    header = (f"# (c) for a variant, paired against {against}\n\nbase {args.base}, sketch {args.sketch}, recipe "
              f"{args.recipe}, tuning arguments {tuning_args}; 95 % intervals (pictures resampled within each layout); "
              "a difference whose interval holds 0 is a tie. The intervals resample pictures, not tunings: one retuning of "
              "the same recipe under another seed moved these rates by up to 14 points (CLAIMS.md (c)).")
    data = {"base": args.base, "sketch": args.sketch, "recipe": args.recipe, "tuning_args": tuning_args,
            "against": str(against), "result": result, "timing_s": claims.timing}
    write_results(out, "variant", data, report(result, header))


if __name__ == "__main__":
    main()
