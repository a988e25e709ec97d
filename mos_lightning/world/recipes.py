"""How much of a world concept can ED-LoRA carry at all? Each concept tuned under the world recipe
(``configs/world/edlora.yaml``) and under variants of it — more steps, larger learning rates, a larger LoRA rank,
more views with another thing beside the concept, LoRAs on the feed-forward layers too — and every tuned model
judged alone on one-thing prompts and seeds no tuning saw, by the world's exact detector and CLIP; each variant
paired against the world recipe.

    python -m mos_lightning.world.recipes outputs/recipes --jobs 2     # about 50 minutes on 2 CPU cores

Why: a box of a composed picture shows its concept no more often than the concept's own model shows it alone, so
this bounds the composition claims (CLAIMS.md (c)). Every stage runs through the real ``mos-lightning`` command
line and skips what is already on disk; the results land in ``<out>/recipes.md`` and ``recipes.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from ..atomic import atomic_path, write_json
from ..resources import locate
from .boxes import signature
from .claims import STRONG, Claims
from .claims_report import judged_items
from .concepts import CONCEPTS, write_concept
from .identity import bootstrap, difference, mean_score, tie_or_order
from .markdown import interval_text

RATES_10X = ["--model.init_args.unet_lr", "0.01", "--model.init_args.text_encoder_lr", "0.001"]
RECIPES = {  # name → (command-line overrides of configs/world/edlora.yaml, every how many views has another thing)
    "world": ([], 3),
    "steps-x3": (["--trainer.max_steps", "600"], 3),
    "embedding-lr-x10": (["--model.init_args.embedding_lr", "0.05"], 3),
    "lora-lr-x5": (STRONG, 3),
    "lora-lr-x10": (RATES_10X, 3),
    "rank-16-lora-lr-x5": ([*STRONG, "--model.init_args.lora_rank", "16"], 3),
    "beside-every-2": ([], 2),
    "feed-forward-lora": (["--model.init_args.unet_lora_targets", "[to_q,to_k,to_v,to_out.0,ff.net.0.proj,ff.net.2]"], 3),
}
PROMPTS = "configs/world/prompts/alone.yaml"  # one thing per picture: the detector reads every picture
SEEDS = list(range(101, 109))  # no tuning samples these


class Recipes(Claims):
    """The claims run's plumbing (parallel ``mos-lightning`` processes, evaluation configs) for tunings alone."""

    def concept_dir(self, concept: str, beside_every: int) -> Path:
        return self.out / "concepts" / (concept if beside_every == 3 else f"{concept}-beside-{beside_every}")

    def tune_commands(self) -> dict[str, list[str]]:
        commands = {}
        for recipe, (overrides, beside_every) in RECIPES.items():
            for concept in self.concepts:
                if self.edlora(recipe, concept).is_file():
                    continue
                commands[f"tune {recipe} {concept}"] = [
                    "fit", "--config", "configs/world/edlora.yaml", "--config", f"configs/world/concepts/{concept}.yaml",
                    *overrides, "--model.init_args.base_model", self.base, "--trainer.callbacks", "[]",
                    "--model.init_args.output_dir", str(self.edlora(recipe, concept).parent),
                    "--model.init_args.fusion_stats", "false",
                    "--data.init_args.concept_dir", str(self.concept_dir(concept, beside_every)),
                    "--trainer.default_root_dir", str(self.out / "logs" / recipe / concept)]
        return commands

    def tune(self) -> None:
        for concept in self.concepts:
            for beside_every in {b for _, b in RECIPES.values()}:
                write_concept(concept, self.concept_dir(concept, beside_every), beside_every=beside_every)
        self.parallel(self.tune_commands(), self.jobs)

    def evaluate(self) -> None:
        if (self.out / "eval" / "table.csv").is_file():
            return
        methods = [*self.single_methods(RECIPES), {"name": "bound", "base_model": self.base, "class_word": True}]
        path = self.out / "eval.yaml"
        path.write_text(yaml.safe_dump(self.eval_config(methods, PROMPTS, self.seeds, "eval"), sort_keys=False))
        self.cli("eval", "test", "--config", str(path))

    def scores(self) -> dict:
        """Per recipe: the detector's hit rate and CLIP image alignment with intervals, each paired against the
        world recipe (the same prompts and seeds resampled for both)."""
        rows = json.loads((self.out / "eval" / "scores.json").read_text())
        signatures = {c: signature(c) for c in self.concepts}
        judged = {m: judged_items(rows, m, self.concepts, signatures) for m in [*RECIPES, "bound"]}
        result: dict = {"concepts": self.concepts, "seeds": self.seeds, "prompts": PROMPTS, "recipes": {}}
        for recipe in [*RECIPES, "bound"]:
            row: dict = {"per_concept": {c: float(judged[recipe]["detector"][c].mean()) for c in self.concepts}}
            for judge in ("detector", "clip"):
                row[judge] = bootstrap(mean_score, judged[recipe][judge])
                if recipe != "world":
                    value, low, high = difference(mean_score, (judged[recipe][judge],), (judged["world"][judge],))
                    row[f"vs_world_{judge}"] = (value, low, high, tie_or_order(low, high))
            result["recipes"][recipe] = row
        return result

    def run(self) -> dict:
        self.tune()
        self.evaluate()
        result = self.scores()
        write_json(self.out / "recipes.json", result)
        with atomic_path(self.out / "recipes.md") as path:
            path.write_text(report(result) + "\n")
        return result


def report(result: dict) -> str:
    concepts = result["concepts"]
    lines = ["| recipe | detector hits | vs world | " + " | ".join(concepts) + " | CLIP image alignment | vs world |",
             "| --- |" + " ---: |" * (len(concepts) + 4)]
    for recipe, row in result["recipes"].items():
        clip, versus = row["clip"], row.get("vs_world_clip")
        lines.append(f"| {recipe} | {interval_text(row['detector'])} | "
                     + (interval_text(row["vs_world_detector"]) if versus else "") + " | "
                     + " | ".join(f"{row['per_concept'][c]:.0%}" for c in concepts)
                     + f" | {clip[0]:.3f} [{clip[1]:.3f}, {clip[2]:.3f}] | "
                     + (f"{versus[0]:+.3f} [{versus[1]:+.3f}, {versus[2]:+.3f}] {versus[3]}" if versus else "") + " |")
    return "\n\n".join([
        "# How much of each concept the tuning recipes carry (each concept's own model, alone)",
        f"Made by `python -m mos_lightning.world.recipes`; prompts `{result['prompts']}`, seeds {result['seeds']}; "
        "95 % intervals from resampling each concept's (prompt, seed) items, paired against the world recipe.",
        "\n".join(lines)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", default="outputs/recipes", help="output folder (resumes what is there)")
    parser.add_argument("--concepts", nargs="+", default=sorted(CONCEPTS), choices=sorted(CONCEPTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=SEEDS)
    parser.add_argument("--clip", default="demo/world/clip", help="the judging CLIP")
    parser.add_argument("--base", default="demo/world/base", help="the world base model")
    parser.add_argument("--jobs", type=int, default=1, help="tunings at a time, one thread each")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    Recipes(out, args.concepts, args.seeds, None, str(Path(locate(args.clip)).resolve()),
            str(Path(locate(args.base)).resolve()), args.jobs).run()
    print(f"recipes: done; {out / 'recipes.md'}")


if __name__ == "__main__":
    main()
