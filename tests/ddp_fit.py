"""Run by test_ddp.py in a clean subprocess: 2-process CPU DDP fit, then every rank dumps its trained tensors.
``NUM_NODES=2`` (under torchrun, one process per node): the same run as two simulated nodes on this machine."""

import os
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from safetensors.torch import save_file

from mos_lightning.cli import build_cli


class RecordRandomStream(pl.Callback):
    """Keeps the random generator's state at the start of training (ranks must draw different noise)."""

    def on_train_start(self, trainer, pl_module):
        pl_module.rng_state_at_start = torch.get_rng_state()


model_dir, concept_dir, out = sys.argv[1:4]
cli = build_cli(args=[
    "fit", "--config", str(Path(__file__).parents[1] / "configs/demo/edlora.yaml"),
    "--model.init_args.base_model", model_dir,
    "--model.init_args.output_dir", f"{out}/edlora",
    "--data.init_args.concept_dir", concept_dir,
    "--trainer.accelerator", "cpu",
    *(["--trainer.devices", "2"] if os.environ.get("NUM_NODES", "1") == "1" else
      ["--trainer.devices", "1", "--trainer.num_nodes", os.environ["NUM_NODES"]]),
    # the DDP settings of the shipped GPU configs
    "--trainer.strategy", '{"class_path": "lightning.pytorch.strategies.DDPStrategy", "init_args": {"broadcast_buffers": false}}',
    "--trainer.max_steps", "3", "--trainer.default_root_dir", f"{out}/logs",
    "--trainer.enable_progress_bar", "false", "--trainer.logger", "false", "--trainer.enable_checkpointing", "false",
    "--trainer.callbacks+=__main__.RecordRandomStream",
])
rank = cli.trainer.global_rank
state = {k: v.detach().contiguous() for k, v in cli.model.state_dict().items() if k in cli.model.trainable_keys()}
state["rng_state_at_start"] = cli.model.rng_state_at_start
save_file(state, f"{out}/rank{rank}.safetensors")
if dist.is_initialized():
    dist.barrier()
    dist.destroy_process_group()
