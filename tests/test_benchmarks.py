"""The benchmark scripts run end to end on the tiny model (CI-sized; their timings are not asserted)."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

SMOKE = {
    "train_step.py": ["--size", "tiny", "--device", "cpu", "--steps", "1", "--warmup", "0", "--batch-sizes", "1"],
    "sampling.py": ["--size", "tiny", "--device", "cpu", "--calls", "1", "--batch-sizes", "1", "--steps", "3"],
    "fusion.py": ["--size", "tiny", "--device", "cpu", "--concepts", "2", "--steps", "3",
                  "--text-encoder-iterations", "5", "--unet-iterations", "5"],
    "evaluation.py": ["--size", "tiny", "--device", "cpu", "--calls", "1", "--batch-size", "1", "--steps", "3"],
    "ddp.py": ["--size", "tiny", "--accelerator", "cpu", "--steps", "2", "--warmup", "1", "--variants", "lean"],
    "regional.py": ["--size", "tiny", "--device", "cpu", "--calls", "1", "--steps", "3"],
}


@pytest.mark.parametrize("script", sorted(SMOKE))
def test_benchmark_script_runs_on_the_tiny_model(script, tmp_path):
    out = tmp_path / "result.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *SMOKE[script], "--json", str(out)],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(out.read_text())
