import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import DEMO_CONCEPTS
from nodes import clean_env, free_port
from safetensors.torch import load_file

from mos_lightning.edlora_file import load_edlora

SCRIPT = Path(__file__).with_name("ddp_fit.py")


def test_two_processes_train_identical_replicas_and_two_simulated_nodes_train_the_same(tiny_model_dir, tmp_path):
    """torchrun --nnodes 2 --nproc-per-node 1 on localhost (gloo), --trainer.num_nodes 2: the same global ranks as
    one node with two processes, so the same tensors, bit for bit, and every file written once (global rank 0)."""
    env = clean_env()
    port = str(free_port())
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(k),
         "--master-addr", "127.0.0.1", "--master-port", port, str(SCRIPT), str(tiny_model_dir),
         str(DEMO_CONCEPTS / "redball"), str(tmp_path / "nodes")],
        env={**env, "NUM_NODES": "2", "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for k in range(2)]
    logs = [node.communicate(timeout=300)[0] for node in nodes]
    assert all(node.returncode == 0 for node in nodes), "\n".join(log[-3000:] for log in logs)
    single = subprocess.run([sys.executable, str(SCRIPT), str(tiny_model_dir), str(DEMO_CONCEPTS / "redball"),
                             str(tmp_path / "one")], env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-4000:]
    for rank in (0, 1):
        two, one = (load_file(tmp_path / run / f"rank{rank}.safetensors") for run in ("nodes", "one"))
        assert two.keys() == one.keys()
        for key in two:
            assert torch.equal(two[key], one[key]), (rank, key)
    # the one-node run: replicas identical, though each rank drew its own noise, timesteps and augmentations
    rank0, rank1 = load_file(tmp_path / "one" / "rank0.safetensors"), load_file(tmp_path / "one" / "rank1.safetensors")
    assert not torch.equal(rank0.pop("rng_state_at_start"), rank1.pop("rng_state_at_start"))
    assert rank0.keys() == rank1.keys() and len(rank0) > 100
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    # one writer: the ED-LoRA, its fusion statistics (the demo config asks for them) and the run's config
    for run in ("one", "nodes"):
        assert sorted(p.name for p in (tmp_path / run / "edlora").iterdir()) == [
            "config.yaml", "edlora.fusion-stats.safetensors", "edlora.safetensors"]
    edlora = load_edlora(tmp_path / "one" / "edlora" / "edlora.safetensors")
    torch.testing.assert_close(edlora.embeddings["<redball1>"], rank0["model.concept_tokens.weight"][0])
    assert edlora.extra["global_step"] == 3


def test_static_graph_with_gradient_accumulation_is_refused_before_training(tiny_model_dir, concept_dir, tmp_path):
    import torch.distributed as dist
    from helpers import make_data, make_task, make_trainer
    from lightning.pytorch.strategies import DDPStrategy

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
