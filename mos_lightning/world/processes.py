"""How the world's runners (the README demo, the claims run) start ``mos-lightning`` processes."""

from __future__ import annotations

import os
import sys


def python_args(command: tuple[str, ...] | list[str]) -> list[str]:
    """``mos-lightning …`` as this Python runs it, or ``python -m module …`` when the command starts with ``-m``."""
    return [sys.executable, *command] if command[0] == "-m" else [sys.executable, "-m", "mos_lightning", *command]


def process_env(jobs: int = 1) -> dict[str, str]:
    """The environment of one of ``jobs`` processes run side by side: offline (nothing is downloaded), and with more
    than one, each its share of the CPU threads — small models on a CPU: two one-thread processes do twice the work
    of one two-thread process; more threads than cores stall them all."""
    threads = {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // jobs))} if jobs > 1 else {}
    return {**os.environ, "HF_HUB_OFFLINE": "1", **threads}
