import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mos_lightning.edlora_file import load_edlora

from conftest import DEMO_CONCEPTS

SCRIPT = Path(__file__).with_name("ddp_fit.py")


def test_ddp_fit_on_two_cpu_processes_trains_identical_replicas(tiny_model_dir, tmp_path):
    # A clean environment: DDP re-launches the script, and must not inherit pytest's or a previous run's state.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MASTER_", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "RANK", "PL_", "PYTEST"))}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(tiny_model_dir), str(DEMO_CONCEPTS / "redball"), str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    rank0, rank1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    # each rank draws its own noise, timesteps and augmentations (same seed_everything on both)
    assert not torch.equal(rank0.pop("rng_state_at_start"), rank1.pop("rng_state_at_start"))
    assert rank0.keys() == rank1.keys() and len(rank0) > 100
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    # one writer: the ED-LoRA, its fusion statistics (the demo config asks for them) and the run's config
    assert sorted(p.name for p in (tmp_path / "edlora").iterdir()) == [
        "config.yaml", "edlora.fusion-stats.safetensors", "edlora.safetensors"]
    edlora = load_edlora(tmp_path / "edlora" / "edlora.safetensors")
    torch.testing.assert_close(edlora.embeddings["<redball1>"], rank0["model.concept_tokens.weight"][0])
    assert edlora.extra["global_step"] == 3


def test_static_graph_with_gradient_accumulation_is_refused_before_training(tiny_model_dir, concept_dir, tmp_path):
    import torch.distributed as dist
    from lightning.pytorch.strategies import DDPStrategy

    from helpers import make_data, make_task, make_trainer

    task = make_task(tiny_model_dir, tmp_path / "out")
    trainer = make_trainer(tmp_path, 2, strategy=DDPStrategy(static_graph=True), accumulate_grad_batches=2)
    # a one-process DDP run sets rendezvous variables, OMP_NUM_THREADS and torch's thread count for this
    # process: put them back, later tests compare CPU kernels across thread counts
    environ, threads = dict(os.environ), torch.get_num_threads()
    try:
        with pytest.raises(ValueError, match="static_graph"):
            trainer.fit(task, make_data(concept_dir))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        os.environ.clear()
        os.environ.update(environ)
        torch.set_num_threads(threads)
    assert not (tmp_path / "out" / "edlora.safetensors").exists()
    assert task.model is None  # refused before the base model was loaded
