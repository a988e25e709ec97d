"""Launch ``mos-lightning`` as several simulated nodes on this machine (one process per node, gloo, localhost):
``torch.distributed.run --nnodes N --nproc-per-node 1 --node-rank k``, each with ``--trainer.num_nodes N``. Every
node's process has local rank 0, as on real machines, so code that wrote per node instead of per job shows here."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from conftest import REPO

# a clean environment: the launched processes must not inherit pytest's or an earlier run's rendezvous state
INHERITED = ("MASTER_", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "RANK", "PL_", "PYTEST")


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(INHERITED)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_on_nodes(args: list[str], nodes: int = 2, timeout: int = 300) -> None:
    """``mos-lightning *args`` on ``nodes`` simulated nodes; fails the test with the nodes' output if one fails."""
    port = str(free_port())
    launched = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nodes), "--nproc-per-node", "1",
         "--node-rank", str(k), "--master-addr", "127.0.0.1", "--master-port", port, "-m", "mos_lightning", *args,
         "--trainer.strategy", "ddp", "--trainer.devices", "1", "--trainer.num_nodes", str(nodes)],
        env={**clean_env(), "OMP_NUM_THREADS": "1"}, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True) for k in range(nodes)]
    logs = [node.communicate(timeout=timeout)[0] for node in launched]
    assert all(node.returncode == 0 for node in launched), "\n".join(log[-3000:] for log in logs)
