"""Run by test_ddp.py in a clean subprocess: 2-process CPU DDP fit, then every rank dumps its trained tensors."""

import sys
from pathlib import Path

import torch.distributed as dist
from safetensors.torch import save_file

from mos_lightning.cli import build_cli

model_dir, concept_dir, out = sys.argv[1:4]
cli = build_cli([
    "fit", "--config", str(Path(__file__).parents[1] / "configs/demo/edlora.yaml"),
    "--model.init_args.base_model", model_dir,
    "--model.init_args.output_dir", f"{out}/edlora",
    "--data.init_args.concept_dir", concept_dir,
    "--trainer.accelerator", "cpu", "--trainer.strategy", "ddp", "--trainer.devices", "2",
    "--trainer.max_steps", "3", "--trainer.default_root_dir", f"{out}/logs",
    "--trainer.enable_progress_bar", "false", "--trainer.logger", "false", "--trainer.enable_checkpointing", "false",
])
rank = cli.trainer.global_rank
state = {k: v.detach().contiguous() for k, v in cli.model.state_dict().items() if k in cli.model.trainable_keys()}
save_file(state, f"{out}/rank{rank}.safetensors")
if dist.is_initialized():
    dist.barrier()
    dist.destroy_process_group()
