"""How long the README's main command (``scripts/demo.sh``, the miniature world) takes, stage by stage, on this
machine; ``--tiny`` times ``scripts/tiny_demo.sh`` (the random tiny model) instead.

Runs the whole demo from an empty output folder (``outputs/world``, or ``outputs/demo`` for ``--tiny``; deleted
first: ``--fresh`` is required when it exists), reads the stage times the script records (``timing.tsv`` there)
and prints them with what they assume:
the CPU count, the CPU model and the load average before and after (other jobs on the machine slow every
stage; the README's claim is for otherwise idle cores).

    python benchmarks/demo_time.py --fresh [--tiny] [--json demo_time.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fresh", action="store_true", help="delete the output folder first (the demo skips finished work)")
    parser.add_argument("--tiny", action="store_true", help="time scripts/tiny_demo.sh (outputs/demo) instead")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    script, out = ("scripts/tiny_demo.sh", ROOT / "outputs" / "demo") if args.tiny else ("scripts/demo.sh", ROOT / "outputs" / "world")
    if out.exists():
        if not args.fresh:
            raise SystemExit(f"{out} exists: a rerun skips finished stages; pass --fresh to delete it and time all")
        shutil.rmtree(out)
    load_before = os.getloadavg()
    start = time.perf_counter()
    subprocess.run(["bash", script], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    total = time.perf_counter() - start
    stages = [line.split("\t") for line in (out / "timing.tsv").read_text().splitlines() if line]
    result = {
        "total_s": round(total, 1), "stages_s": {name: int(seconds) for name, seconds in stages},
        "cpus": os.cpu_count(), "cpu_model": cpu_model(), "load_before": [round(v, 2) for v in load_before],
        "load_after": [round(v, 2) for v in os.getloadavg()], "gpu": bool(shutil.which("nvidia-smi")),
    }
    print(f"{script}: {total:.0f} s on {result['cpus']} CPUs ({result['cpu_model']}); 1-min load before "
          f"{result['load_before'][0]}, after {result['load_after'][0]}")
    print("| stage | s |\n|---|---|")
    for name, seconds in result["stages_s"].items():
        print(f"| {name} | {seconds} |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
