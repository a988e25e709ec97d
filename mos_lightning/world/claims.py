"""The paper's claims, measured in the miniature world, through the real command line (one ``mos-lightning``
process per stage, exactly as a user would run them):

    python -m mos_lightning.world.claims outputs/claims --jobs 2     # about two hours on 2 CPU cores

(a) single-concept tuning — ED-LoRA vs the "LoRA" baseline (one shared embedding, ``layerwise: false``) vs "P+"
    (layer-wise embeddings, no LoRA, ``lora_rank: 0``), with the class-word bound: Table 1's text and image alignment;
(b) fusion of every concept (6) into one model, for ED-LoRAs of two LoRA strengths (the world recipe, and the same with
    5× the LoRA rates) — our default solver vs the exact closed form vs the naive merge (W0 + Σ ΔW_i) vs the paper's
    L-BFGS — on held-out prompts and seeds: identity kept above the class-word bound, judged by the world CLIP and by
    the exact detector, with bootstrap intervals (:mod:`mos_lightning.world.identity`);
(c) regional composition of 2–3 concepts from the fused model, with and without region control and under each setting
    of :data:`~mos_lightning.world.claims_regional.REGIONAL_CONDITIONS`: how often each box shows its concept, read by
    the world's exact detector (:mod:`mos_lightning.world.boxes`), beside real pictures of the same layout, each concept
    drawn alone by the same model and (world-slot layouts) each in its place in the caption without control.

Scores come from the world's CLIP (``demo/world/clip``). Every stage skips what is already on disk, so an
interrupted run resumes. The results land in ``<out>/claims.md`` / ``claims.json`` and on ``<out>/index.html``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
from pathlib import Path

import yaml

from ..components import describe
from ..fusion.solvers import default_solver
from ..resources import locate, shipped_root
from .boxes import Layout
from .claims_regional import LAYOUTS, REGIONAL_CONDITIONS, REGIONAL_SEEDS, alone_prompts, in_place_prompts, write_scene_file
from .concepts import CONCEPTS, write_concept
from .processes import process_env, python_args

STRONG = ["--model.init_args.unet_lr", "0.005", "--model.init_args.text_encoder_lr", "0.0005"]  # 5× the LoRA rates
TUNINGS = {  # method → command-line overrides of configs/world/edlora.yaml
    "ed-lora": [],
    "lora": ["--model.init_args.layerwise", "false"],
    "p-plus": ["--model.init_args.lora_rank", "0"],
    "ed-lora-strong": STRONG,  # the same recipe with LoRAs that carry more of the concept
}
SINGLE = ("ed-lora", "lora", "p-plus")  # table (a)
REGIMES = {"weak": "ed-lora", "strong": "ed-lora-strong"}  # the tunings fused in (b), by LoRA strength
SOLVERS = {  # (b): solver name → its class_path and init_args
    "default": describe(default_solver()),
    "exact": {"class_path": "mos_lightning.fusion.ClosedForm", "init_args": {"ridge": 1e-5, "towards": "base"}},
    "naive": {"class_path": "mos_lightning.fusion.NaiveSum"},
    "l-bfgs": {"class_path": "mos_lightning.fusion.LBFGS"},
}
HELD_OUT_SEEDS = list(range(101, 109))  # the fusion statistics use seeds 0-3
REPO = shipped_root()  # where configs/ (and demo/) are: the checkout, or the installed package


def token(concept: str) -> str:
    return f"<{concept}>"


class Claims:
    """The run's stages (tune → fuse → evaluate → compose), each a set of ``mos-lightning`` commands that skips what
    is already in ``out``; :meth:`run` does them all and writes the report. A subclass picks other tunings, fusions
    or regional settings through the four class attributes (:mod:`~mos_lightning.world.claims_variant` does)."""

    tunings, regimes, solvers, conditions = TUNINGS, REGIMES, SOLVERS, REGIONAL_CONDITIONS

    def __init__(self, out: Path, concepts: list[str], seeds: list[int], steps: int | None, clip: str, base: str,
                 jobs: int = 1, held_out_seeds: list[int] | None = None, duplicates: bool = False,
                 sketch: str = "demo/world/sketch"):
        self.out, self.concepts, self.seeds, self.steps, self.clip, self.base = out, concepts, seeds, steps, clip, base
        self.sketch = sketch  # the world's sketch adapter (T2I-Adapter), for (c)
        self.held_out_seeds = held_out_seeds or HELD_OUT_SEEDS
        self.duplicates = duplicates  # also tune every concept again under new tokens (<concept>b: 12-concept fusions)
        self.jobs = jobs
        self.timing: dict[str, float] = {}

    # ------------------------------------------------------------------------------------------------ plumbing
    def cli(self, stage: str, *args: str) -> None:
        """One ``mos-lightning`` process, as a user would run it; its seconds go into the timing table."""
        self.parallel({stage: list(args)}, jobs=1)

    def parallel(self, commands: dict[str, list[str]], jobs: int) -> None:
        """Run ``mos-lightning`` processes, ``jobs`` at a time, each with its share of the CPU threads
        (:func:`~mos_lightning.world.processes.process_env`)."""
        env = process_env(jobs)
        waiting, running = list(commands.items()), dict[str, tuple]()
        while waiting or running:
            while waiting and len(running) < jobs:
                stage, args = waiting.pop(0)
                print(f"claims: {stage}", flush=True)
                log = (self.out / "logs" / f"{stage.replace(' ', '-')}.log") if jobs > 1 else None
                if log:
                    log.parent.mkdir(parents=True, exist_ok=True)
                process = subprocess.Popen(python_args(args), cwd=REPO, env=env,
                                           stdout=log.open("w") if log else None, stderr=subprocess.STDOUT if log else None)
                running[stage] = (process, time.time(), log)
            time.sleep(0.5)
            for stage, (process, start, log) in list(running.items()):
                if process.poll() is None:
                    continue
                del running[stage]
                if process.returncode:
                    raise SystemExit(f"claims: {stage} failed (exit {process.returncode})" + (f"; see {log}" if log else ""))
                self.timing[stage] = round(time.time() - start, 1)

    def predict_into(self, folder: str, stage: str, *args: str) -> None:
        """``mos-lightning predict *args`` into ``regional/folder`` unless it is there: written into
        ``folder.partial`` and renamed when finished, so an interrupted run is done again, not taken for finished."""
        done = self.out / "regional" / folder
        if not done.is_dir():
            partial = done.with_name(f"{folder}.partial")
            shutil.rmtree(partial, ignore_errors=True)
            self.cli(stage, "predict", *args, "--data.init_args.output_dir", str(partial))
            partial.rename(done)

    def edlora(self, method: str, concept: str) -> Path:
        return self.out / "tuned" / method / concept / "edlora.safetensors"

    def fused(self, regime: str, solver: str) -> Path:
        return self.out / "fused" / regime / solver / "model"

    # -------------------------------------------------------------------------------------------------- stages
    def tune_commands(self) -> dict[str, list[str]]:
        """Stage name → ``mos-lightning`` arguments of every tuning not yet on disk."""
        commands = {}
        for method, overrides in self.tunings.items():
            for concept in self.concepts:
                if self.edlora(method, concept).is_file():
                    continue
                steps = ["--trainer.max_steps", str(self.steps)] if self.steps else []
                commands[f"tune {method} {concept}"] = [
                    "fit", "--config", "configs/world/edlora.yaml", "--config", f"configs/world/concepts/{concept}.yaml",
                    *overrides, *steps, "--model.init_args.base_model", self.base,
                    "--model.init_args.output_dir", str(self.edlora(method, concept).parent),
                    "--model.init_args.fusion_stats", "false",
                    "--data.init_args.concept_dir", str(self.out / "concepts" / concept),
                    "--trainer.default_root_dir", str(self.out / "logs" / method / concept)]
        for concept in self.concepts if self.duplicates else []:  # the same concept again, under new tokens
            name = f"{concept}b"
            if self.edlora("ed-lora-strong", name).is_file():
                continue
            commands[f"tune ed-lora-strong {name}"] = [
                "fit", "--config", "configs/world/edlora.yaml", "--config", f"configs/world/concepts/{concept}.yaml",
                *STRONG, "--model.init_args.concept_name", name, "--model.init_args.tokens", f'["<{name}1>", "<{name}2>"]',
                "--model.init_args.init_seed", "1", "--seed_everything", "1", "--model.init_args.base_model", self.base,
                "--model.init_args.output_dir", str(self.edlora("ed-lora-strong", name).parent),
                "--model.init_args.fusion_stats", "false", "--data.init_args.concept_dir", str(self.out / "concepts" / concept),
                "--trainer.default_root_dir", str(self.out / "logs" / "ed-lora-strong" / name)]
        return commands

    def fuse_commands(self) -> dict[str, list[str]]:
        commands = {}
        for regime, method in self.regimes.items():
            concepts = json.dumps([{"path": str(self.edlora(method, c))} for c in self.concepts])
            for solver, component in self.solvers.items():
                if (self.fused(regime, solver) / "model_index.json").is_file():
                    continue
                commands[f"fuse {regime} {solver}"] = [
                    "predict", "--config", "configs/world/fusion.yaml", "--model.init_args.base_model", self.base,
                    "--model.init_args.output_dir", str(self.fused(regime, solver).parent),
                    "--model.init_args.solver", json.dumps(component), "--data.init_args.concepts", concepts]
        return commands

    def tune(self) -> None:
        for concept in self.concepts:
            write_concept(concept, self.out / "concepts" / concept)
        self.parallel(self.tune_commands(), self.jobs)

    def fuse(self) -> None:
        self.parallel(self.fuse_commands(), jobs=1)  # one at a time: fusion itself is quick, the check is not

    def eval_config(self, methods: list[dict], prompt_file: str, seeds: list[int], folder: str) -> dict:
        """``configs/world/eval.yaml`` with ``methods`` as rows and every concept as a column."""
        concepts = [{"name": c, "class_word": CONCEPTS[c].cls, "reference_dir": str(self.out / "concepts" / c),
                     "prompt_file": prompt_file} for c in self.concepts]
        config = yaml.safe_load((REPO / "configs/world/eval.yaml").read_text())
        config["model"]["init_args"].update(methods=methods, clip_model=self.clip, output_dir=str(self.out / folder))
        config["data"]["init_args"].update(concepts=concepts, seeds=seeds)
        return config

    def single_methods(self, names) -> list[dict]:
        return [{"name": m, "base_model": self.base, "lora_scale": 1.0,
                 "edloras": {c: str(self.edlora(m, c)) for c in self.concepts}} for m in names]

    def evaluate(self) -> None:
        """(a) the single-concept methods on the world's evaluation prompts; (b) every concept's own models, every
        fusion and the bound on held-out prompts and seeds (none of them in the fusion statistics)."""
        bound = {"name": "bound", "base_model": self.base, "class_word": True}
        runs = {
            "eval": (self.single_methods(SINGLE) + [bound], "configs/world/prompts/eval.yaml", self.seeds),
            "eval-held-out": (self.single_methods(self.regimes.values())
                              + [{"name": f"fused-{r}-{s}", "base_model": str(self.fused(r, s))}
                                 for r in self.regimes for s in self.solvers] + [bound],
                              "configs/world/prompts/held_out.yaml", self.held_out_seeds),
        }
        for folder, (methods, prompts, seeds) in runs.items():
            if (self.out / folder / "table.csv").is_file():
                continue
            path = self.out / f"{folder}.yaml"
            path.write_text(yaml.safe_dump(self.eval_config(methods, prompts, seeds, folder), sort_keys=False))
            self.cli(folder, "test", "--config", str(path))

    def compose(self) -> list[Layout]:
        """Each layout with region control (each setting of REGIONAL_CONDITIONS) and without (its whole prompt)."""
        layouts = [layout for layout in LAYOUTS if set(layout.concepts) <= set(self.concepts)]
        names = {c: token(c) for c in self.concepts}
        model = str(self.fused("weak", "default"))
        for condition, options in self.conditions.items():
            if not (self.out / "regional" / condition).is_dir():
                settings = {**REGIONAL_CONDITIONS["with"], **options}  # the reference's unless named (not the config's)
                scene = {k: settings.pop(k) for k in ("context", "sketch", "regions", "sketch_weight", "seeds")
                         if k in settings}
                scene_file = write_scene_file(self.out, layouts, names, **scene)
                adapters = {"sketch": self.sketch} if options.get("sketch") else {}
                self.predict_into(condition, f"regional {condition}", "--config", "configs/world/regional.yaml",
                                  "--model.init_args.base_model", model, "--data.init_args.scene_file", str(scene_file),
                                  "--model.init_args.adapters", json.dumps(adapters),
                                  *[a for k, v in settings.items() for a in (f"--model.init_args.{k}", "null" if v is None else str(v))])
        # the model on its own: each box's prompt alone (its ceiling); each concept in its place in the caption;
        # the whole prompts without control
        for folder, prompts in (("alone", alone_prompts(layouts, names)), ("in-place", in_place_prompts(layouts, names)),
                                ("without", [layout.prompt(names) for layout in layouts])):
            self.predict_into(folder, f"regional {folder}", "--config", "configs/world/sample.yaml",
                              "--model.init_args.base_model", model, "--model.init_args.edloras", "[]",
                              "--data.init_args.prompts", json.dumps(prompts), "--data.init_args.seeds",
                              json.dumps(REGIONAL_SEEDS))
        return layouts

    def run(self) -> dict:
        self.tune()
        self.fuse()
        self.evaluate()
        layouts = self.compose()
        from .claims_regional import regional_scores
        from .claims_report import fusion_scores, write_report
        results = {"concepts": self.concepts, "seeds": self.seeds, "held_out_seeds": self.held_out_seeds,
                   "steps": self.steps, "clip": self.clip, "base": self.base, "timing_s": self.timing,
                   "fusion": fusion_scores(self.out, self.concepts, self.clip),
                   "regional": regional_scores(self.out, layouts, self.concepts,
                                               {c: token(c) for c in self.concepts})}
        write_report(self.out, results)
        return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", default="outputs/claims", help="output folder (resumes what is there)")
    parser.add_argument("--concepts", nargs="+", default=sorted(CONCEPTS), choices=sorted(CONCEPTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4], help="seeds per prompt and scene")
    parser.add_argument("--held-out-seeds", nargs="+", type=int, default=HELD_OUT_SEEDS,
                        help="seeds of the fusion claims' held-out prompts (none used by the fusion statistics)")
    parser.add_argument("--steps", type=int, help="tuning steps (default: configs/world/edlora.yaml's)")
    parser.add_argument("--clip", default="demo/world/clip", help="the judging CLIP")
    parser.add_argument("--base", default="demo/world/base", help="the world base model")
    parser.add_argument("--sketch", default="demo/world/sketch", help="the world's sketch adapter, for (c)")
    parser.add_argument("--jobs", type=int, default=1, help="tunings at a time, one thread each (2 on a 2-core CPU: about twice as fast)")
    parser.add_argument("--duplicates", action="store_true",
                        help="also tune each concept again as <concept>b (strong LoRAs): the 12-concept fusion study's")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    Claims(out, args.concepts, args.seeds, args.steps, str(Path(locate(args.clip)).resolve()),
           str(Path(locate(args.base)).resolve()), args.jobs, args.held_out_seeds, args.duplicates,
           str(Path(locate(args.sketch)).resolve())).run()
    print(f"claims: done; {out / 'claims.md'}")


if __name__ == "__main__":
    main()
