"""(c) of the claims run for an ED-LoRA recipe tuned under several seeds, with intervals that resample the tunings
as well as the pictures, and paired against another recipe's tunings on the same layouts and seeds:

    python -m mos_lightning.world.claims_tunings outputs/tunings-world --conditions with context-sketch --jobs 2
    python -m mos_lightning.world.claims_tunings outputs/tunings-attention --recipe reference-attention \\
        --against outputs/tunings-world --conditions with context-sketch --jobs 2   # ~12 minutes a seed, 2 cores

Why: one retuning of the same recipe under another seed moves (c)'s rates as much as any change of recipe
measured so far (CLAIMS.md (c)), so an interval over one tuning's pictures cannot tell recipes apart. Each seed
(``--seeds``, default 0 1 2) is one ``world.claims_variant`` run in ``<out>/seed-<k>`` (the six concepts tuned with
``--seed_everything k --model.init_args.init_seed k``, fused by the default solver, composed; a stage on disk is
skipped, so a run resumes). ``<out>/tunings.md`` and ``tunings.json`` give per setting the mean rate over the
tunings (boxes showing their concept, pictures showing all of theirs, boxes holding their concept's class), each
tuning's own rate, the setting minus the reference's region control (``with``) of the same tunings, and the
difference against ``--against``'s tunings. The 95 % intervals are a two-level bootstrap: each recipe's tunings
resampled with replacement (for two settings of the same tunings, the same tunings for both), then each layout's
pictures (the same picture indices for both sides). With three tunings per recipe the first level sees only ten
distinct draws and reads the tunings' spread about a fifth narrower than it is (the bootstrap's (n − 1) / n): read
an interval that only just excludes 0 as a tie."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import numpy as np

from ..resources import locate
from .claims_regional import REGIONAL_CONDITIONS, REGIONAL_NAMES
from .claims_variant import CONDITIONS, RECIPES, VariantClaims
from .markdown import interval_text, signed_text, write_results

RATES = ("boxes", "all", "class")  # boxes showing their concept, pictures showing all, boxes holding its class


def seed_args(seed: int) -> list[str]:
    """The overrides that retune a recipe under ``seed``: the training stream and the LoRAs' initial values."""
    return ["--seed_everything", str(seed), "--model.init_args.init_seed", str(seed)]


def seed_runs(out: Path) -> list[Path]:
    runs = sorted(out.glob("seed-*"), key=lambda p: int(p.name.split("-")[1]))
    if not runs:
        raise SystemExit(f"{out} holds no seed-<k> folders: pass a folder written by world.claims_tunings")
    return runs


def hit_arrays(scores: list[dict], condition: str) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """Per tuning, per layout: (concept hits, class hits), each pictures × boxes."""
    return [[(np.array(row[condition]["hits"], bool), np.array(row[condition]["classes"]["hits"], bool))
             for row in s["layouts"].values()] for s in scores]


def _tuning_rates(layouts: list[tuple[np.ndarray, np.ndarray]], picks: list[np.ndarray]) -> np.ndarray:
    concept = np.concatenate([h[i].ravel() for (h, _), i in zip(layouts, picks, strict=True)])
    whole = np.concatenate([h[i].all(1) for (h, _), i in zip(layouts, picks, strict=True)])
    kind = np.concatenate([c[i].ravel() for (_, c), i in zip(layouts, picks, strict=True)])
    return np.array([concept.mean(), whole.mean(), kind.mean()])


def two_level_draws(groups: list[list[list[tuple[np.ndarray, np.ndarray]]]], same_tunings: bool = False,
                    samples: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Each group's mean rates over its tunings (groups × RATES) and ``samples`` bootstrap draws of them: tunings
    resampled within each group (``same_tunings``: the same indices for every group — two settings of the same
    tunings), pictures within each layout with the same indices for every group (paired)."""
    counts = [len(h) for h, _ in groups[0][0]]
    for group in groups:
        if any([len(h) for h, _ in tuning] != counts for tuning in group):
            raise ValueError("the tunings drew different numbers of pictures per layout; compare runs of the same "
                             "layouts and seeds")
    rng = np.random.default_rng(seed)
    every = [np.arange(n) for n in counts]
    value = np.array([np.mean([_tuning_rates(t, every) for t in g], axis=0) for g in groups])
    draws = np.empty((samples, len(groups), len(RATES)))
    for k in range(samples):
        picks = [rng.integers(0, n, n) for n in counts]
        shared = rng.integers(0, len(groups[0]), len(groups[0]))
        for j, group in enumerate(groups):
            chosen = shared if same_tunings else rng.integers(0, len(group), len(group))
            draws[k, j] = np.mean([_tuning_rates(group[t], picks) for t in chosen], axis=0)
    return value, draws


def difference(value: np.ndarray, draws: np.ndarray) -> dict:
    """The first group minus the second, per rate: ``(value, low, high, verdict)``."""
    low, high = np.percentile(draws[:, 0] - draws[:, 1], [2.5, 97.5], axis=0)
    return {k: (float(value[0, i] - value[1, i]), float(low[i]), float(high[i]),
                "better" if low[i] > 0 else "worse" if high[i] < 0 else "tie") for i, k in enumerate(RATES)}


def compare(mine: list[dict], theirs: list[dict] | None, conditions: list[str]) -> dict:
    """Per setting: the mean over tunings with its interval, each tuning's rates, the setting minus the reference's
    region control of the same tunings (when ``with`` was composed), and (with ``theirs``) mine minus theirs."""
    result = {}
    for condition in ["alone", *conditions, "without"]:
        groups = [hit_arrays(mine, condition)] + ([hit_arrays(theirs, condition)] if theirs else [])
        value, draws = two_level_draws(groups)
        low, high = np.percentile(draws[:, 0], [2.5, 97.5], axis=0)
        row: dict = {"rates": {k: (float(value[0, i]), float(low[i]), float(high[i])) for i, k in enumerate(RATES)},
                     "tunings": [dict(zip(RATES, map(float, _tuning_rates(t, [np.arange(len(h)) for h, _ in t])),
                                          strict=True)) for t in groups[0]]}
        if condition != "with" and "with" in conditions:
            row["minus control"] = difference(*two_level_draws([groups[0], hit_arrays(mine, "with")], same_tunings=True))
        if theirs:
            row["minus against"] = difference(value, draws)
        result[condition] = row
    return result


def report(result: dict, header: str) -> str:
    lines = [header, "", "| setting | boxes | whole pictures | class in its box | each tuning: boxes / pictures | "
             "boxes vs control | pictures vs control | class vs control | boxes vs against | pictures vs against | class vs "
             "against |", "| --- |" + " ---: |" * 10]
    for condition, row in result.items():
        rates = [interval_text(row["rates"][k]) for k in RATES]
        each = ", ".join(f"{t['boxes']:.0%} / {t['all']:.0%}" for t in row["tunings"])
        control = [signed_text(row["minus control"][k]) if "minus control" in row else "" for k in RATES]
        diffs = [signed_text(row["minus against"][k]) if "minus against" in row else "" for k in RATES]
        lines.append(f"| {REGIONAL_NAMES.get(condition, condition)} | " + " | ".join([*rates, each, *control, *diffs])
                     + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="output folder (resumes what is there)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="tuning seeds, one run each")
    parser.add_argument("--recipe", default="world", choices=sorted(RECIPES), help="named tuning overrides")
    parser.add_argument("--tuning-args", default="", help="more mos-lightning fit arguments, one shell-quoted string")
    parser.add_argument("--against", help="a finished claims_tunings folder (another recipe's tunings) to pair with")
    parser.add_argument("--base", default="demo/world/base", help="the world base model")
    parser.add_argument("--sketch", default="demo/world/sketch", help="the world's sketch adapter (trained for its base)")
    parser.add_argument("--conditions", nargs="+", default=CONDITIONS, choices=sorted(REGIONAL_CONDITIONS),
                        help="regional settings to compose (each concept alone and without control always are)")
    parser.add_argument("--jobs", type=int, default=1, help="tunings at a time, one thread each")
    args = parser.parse_args(argv)
    against = seed_runs(Path(args.against).resolve()) if args.against else []
    missing = sorted({f"{run.name}/regional/{c}" for run in against for c in ["alone", *args.conditions, "without"]
                      if not (run / "regional" / c).is_dir()})
    if missing:  # before any tuning: the pairing needs every setting in every tuning of both recipes
        raise SystemExit(f"{args.against} lacks {', '.join(missing)}: pass a finished claims_tunings folder, or "
                         "--conditions that it has")
    out = Path(args.out).resolve()
    base, sketch = str(Path(locate(args.base)).resolve()), str(Path(locate(args.sketch)).resolve())
    runs = []
    for seed in args.seeds:
        tuning_args = [*RECIPES[args.recipe], *shlex.split(args.tuning_args), *seed_args(seed)]
        claims = VariantClaims(out / f"seed-{seed}", base, sketch, tuning_args, args.conditions, args.jobs)
        claims.tune()
        claims.fuse()
        claims.compose()
        runs.append(claims)
    mine = [claims.scores() for claims in runs]
    theirs = [runs[0].scores(run) for run in against] or None
    result = compare(mine, theirs, args.conditions)
    header = (f"# (c) for {len(runs)} tunings of recipe {args.recipe}" + (f", against {args.against}" if against else "")
              + f"\n\nseeds {args.seeds}, base {args.base}, sketch {args.sketch}, more tuning arguments "
              f"{shlex.split(args.tuning_args)}; 95 % intervals from tunings and pictures resampled (module docstring); "
              "a difference whose interval holds 0 is a tie.")
    data = {"seeds": args.seeds, "recipe": args.recipe, "tuning_args": args.tuning_args, "against": [str(p) for p in against],
            "base": args.base, "sketch": args.sketch, "result": result, "timing_s": {r.out.name: r.timing for r in runs}}
    write_results(out, "tunings", data, report(result, header))


if __name__ == "__main__":
    main()
