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


def test_fusion_inputs_benchmark_runs_on_the_tiny_model(tiny_model_dir, tmp_path):
    from helpers import random_edlora

    from mos_lightning.edlora_file import save_edlora

    files = [str(save_edlora(tmp_path / f"{n}.safetensors", random_edlora(tiny_model_dir, n, seed=i, lora_std=0.1)))
             for i, n in enumerate(("cat", "dog"))]
    out = tmp_path / "rows.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "fusion_inputs.py"), "--base-model", str(tiny_model_dir), *files,
         "--size", "64", "--steps", "2", "--solvers", "closed_form", "naive_average", "--inputs", "all",
         "--json", str(out)], capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert [r["solver"] for r in rows] == ["closed_form", "naive_average"]
    assert rows[0]["concept_unet"] < rows[1]["concept_unet"]  # the solve reproduces the concepts better
