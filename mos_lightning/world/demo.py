"""The README's main command, from any folder and from an installed wheel: ``python -m mos_lightning.world demo``
(``scripts/demo.sh`` in a checkout runs the same). The whole chain in the miniature world, on the world base model
and CLIP shipped with the package (nothing downloaded, nothing large trained), into ``outputs/world/`` here:

1. the world concepts' folders (8 views, captions with ``<TOK>``, masks) → ``outputs/world/concepts/``
2. an ED-LoRA for each of two concepts → ``outputs/world/edlora/<concept>/edlora.safetensors`` (a sample grid at
   LoRA scales 0 / 0.7 / 1.0 under ``outputs/world/logs/<concept>/``) with its fusion statistics; both tuned at once,
   one CPU thread each, on a machine with two or more (their output in ``outputs/world/logs/tune-<concept>.log``)
3. samples of each concept → ``outputs/world/samples/<concept>/``
4. both fused into one model → ``outputs/world/fusion/{model/,fusion_report.json}``
5. the fused model sampled with both concepts → ``outputs/world/samples/fused/``
6. both composed regionally → ``outputs/world/regional/``
7. the Table-1 evaluation scored by the world CLIP → ``outputs/world/eval/``
8. one page with all of it → ``outputs/world/index.html``

Finished stages are skipped (a tuned concept is not tuned again; delete its folder to redo). Each stage's seconds go
to ``outputs/world/timing.tsv`` (read by ``benchmarks/demo_time.py``). Other concepts: ``--concepts zigcone
moonball`` (any two of the world's six; the fusion, regional and evaluation configs name the default two).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from .processes import process_env, python_args

DEFAULT_CONCEPTS = ("buoyring", "moonball")
FUSED_PROMPTS = ["<buoyring> on the grass", "<moonball> in the snow", "<buoyring> and <moonball> on the sand"]


class Demo:
    def __init__(self, concepts: list[str], outputs: Path = Path("outputs/world")):
        self.concepts, self.outputs = concepts, outputs
        self.timing = outputs / "timing.tsv"

    def stage(self, name: str, *command: str) -> None:
        """Run one command (``mos-lightning …`` unless it starts with ``-m``) and record its seconds."""
        began = time.time()
        args = python_args(command)
        if subprocess.run(args, env=process_env()).returncode:
            raise SystemExit(f"demo: stage {name} failed; its output is above")
        with self.timing.open("a") as table:
            table.write(f"{name}\t{round(time.time() - began)}\n")

    def side_by_side(self, commands: dict[str, list[str]]) -> None:
        """Commands (as :meth:`stage`'s) at once, each its share of the CPU threads (:func:`process_env`: two
        one-thread tunings take the time of one; BENCHMARKS.md, "Demo time"), their output in ``logs/<name>.log``,
        their seconds in ``timing.tsv`` as one stage."""
        began, logs = time.time(), self.outputs / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        env = process_env(len(commands))
        running = {}
        for name, command in commands.items():
            print(f"demo: {name}, beside the others (its output: {logs / name}.log)", flush=True)
            with (logs / f"{name}.log").open("w") as log:
                running[name] = subprocess.Popen(python_args(command), env=env, stdout=log, stderr=subprocess.STDOUT)
        for name, process in running.items():
            if process.wait():
                for other in running.values():
                    other.terminate()
                raise SystemExit(f"demo: stage {name} failed; its output is in {logs / name}.log")
            print(f"demo: {name} done ({round(time.time() - began)} s)", flush=True)
        with self.timing.open("a") as table:
            table.write(f"{'+'.join(commands)}\t{round(time.time() - began)}\n")

    def run(self) -> None:
        self.outputs.mkdir(parents=True, exist_ok=True)
        self.timing.write_text("")
        self.stage("concepts", "-m", "mos_lightning.world", "concepts", str(self.outputs / "concepts"))
        tunings = {}
        for concept in self.concepts:
            if (self.outputs / "edlora" / concept / "edlora.safetensors").is_file():
                print(f"demo: {concept} already tuned (delete {self.outputs / 'edlora' / concept} to redo)")
                continue
            tunings[f"tune-{concept}"] = ["fit", "--config", "world/edlora", "--config", f"world/concepts/{concept}"]
        if len(tunings) > 1 and (os.cpu_count() or 1) > 1:
            self.side_by_side(tunings)
        else:
            for name, command in tunings.items():
                self.stage(name, *command)
        for concept in self.concepts:
            self.stage(f"sample-{concept}", "predict", "--config", "world/sample", "--model.init_args.edloras",
                       f"[{self.outputs / 'edlora' / concept / 'edlora.safetensors'}]",
                       "--data.init_args.output_dir", str(self.outputs / "samples" / concept))
        self.stage("fuse", "predict", "--config", "world/fusion")
        self.stage("sample-fused", "predict", "--config", "world/sample", "--model.init_args.base_model",
                   str(self.outputs / "fusion" / "model"), "--model.init_args.edloras", "[]",
                   "--data.init_args.prompts", json.dumps(FUSED_PROMPTS),
                   "--data.init_args.output_dir", str(self.outputs / "samples" / "fused"))
        self.stage("regional", "predict", "--config", "world/regional")
        self.stage("evaluate", "test", "--config", "world/eval")
        self.stage("page", "-m", "mos_lightning.results_page", str(self.outputs), "--title",
                   "mos-lightning in the miniature world")
        print(f"demo: done; ED-LoRA files under {self.outputs}/edlora/, the fused model under {self.outputs}/fusion/,\n"
              f"      images under {self.outputs}/samples/ and {self.outputs}/regional/, the world's Table 1 in\n"
              f"      {self.outputs}/eval/table.md; everything on one page: {self.outputs}/index.html")
