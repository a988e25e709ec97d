"""DDP benchmark: ED-LoRA tuning through the real Lightning Trainer on 1 and N processes, same global batch.

Each configuration runs in its own subprocess (DDP relaunches the script for the other ranks) and
trains on the bundled demo concept for ``--steps`` steps; the time from the end of warm-up to the
end of training gives steps/s and samples/s. On GPUs the ideal N-process speed-up is N; on a CPU
the processes share the same cores, so the N-process / 1-process ratio measures DDP's overhead
(ideal 1.0).

    python benchmarks/ddp.py --size tiny --accelerator cpu             # CPU: overhead, tiny model
    python benchmarks/ddp.py --size sd15 --accelerator gpu --devices 1 2 4

Variants (``--variants``): ``ddp`` is Lightning's default DDP; ``lean`` also skips DDP's per-step
buffer broadcast (``broadcast_buffers: false`` — the task's buffers are constants; what the shipped
configs use); ``static`` adds ``static_graph: true``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"ddp": {}, "lean": {"broadcast_buffers": False}, "static": {"broadcast_buffers": False, "static_graph": True}}


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def run_worker(args) -> None:
    """One configuration, inside the Trainer (every rank runs this; rank 0 writes the result)."""
    import lightning.pytorch as pl
    from lightning.pytorch.strategies import DDPStrategy
    from train_step import RandomBaseEDLoRA

    from mos_lightning.data import ConceptDataModule

    class StepTimer(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == args.warmup:
                _sync()
                self.start = time.perf_counter()

        def on_train_end(self, trainer, pl_module):
            _sync()
            self.seconds = (time.perf_counter() - self.start) / (trainer.global_step - args.warmup)

    gpu = args.accelerator == "gpu"
    pl.seed_everything(0, verbose=False)
    task = RandomBaseEDLoRA(args.size, "cuda" if gpu else "cpu", base_model="random", output_dir=args.out,
                            frozen_dtype="bfloat16" if gpu else "float32", lr_schedule="constant")
    data = ConceptDataModule(concept_dir=str(ROOT / "demo/concepts/redball"), resolution=args.resolution,
                             batch_size=args.global_batch // args.devices, num_workers=args.num_workers)
    strategy = "auto" if args.devices == 1 else DDPStrategy(**VARIANTS[args.variant])
    timer = StepTimer()
    trainer = pl.Trainer(
        accelerator=args.accelerator, devices=args.devices, strategy=strategy,
        precision="bf16-mixed" if gpu else "32-true", max_steps=args.warmup + args.steps, max_epochs=-1,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[timer], default_root_dir=args.out,
    )
    trainer.fit(task, data)
    if trainer.is_global_zero:
        result = {"devices": args.devices, "variant": args.variant if args.devices > 1 else "single",
                  "global_batch": args.global_batch, "s_per_step": timer.seconds,
                  "samples_per_s": args.global_batch / timer.seconds}
        Path(args.json).write_text(json.dumps(result))


def run_config(args, devices: int, variant: str, workdir: Path) -> dict:
    out = workdir / f"{devices}-{variant}"
    out.mkdir()
    json_path = out / "result.json"
    command = [sys.executable, __file__, "--worker", "--devices", str(devices), "--variant", variant,
               "--size", args.size, "--accelerator", args.accelerator, "--global-batch", str(args.global_batch),
               "--steps", str(args.steps), "--warmup", str(args.warmup), "--resolution", str(args.resolution),
               "--num-workers", str(args.num_workers), "--out", str(out), "--json", str(json_path)]
    # a clean environment: DDP launches the ranks itself and must not inherit another run's rendezvous
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MASTER_", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "RANK", "PL_"))}
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{devices} device(s), {variant}: exit {done.returncode}\n{done.stderr[-3000:]}")
    return json.loads(json_path.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["sd15", "tiny"], default="tiny")
    parser.add_argument("--accelerator", choices=["cpu", "gpu"], default="gpu" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2], help="process counts to compare")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--global-batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--resolution", type=int, default=None, help="default: 512 (sd15) / 64 (tiny)")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--json", default=None, help="write all results here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", default="ddp", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.resolution = args.resolution or (512 if args.size == "sd15" else 64)
    if args.worker:
        args.devices = args.devices[0]
        return run_worker(args)

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for devices in args.devices:
            if args.global_batch % devices:
                raise SystemExit(f"--global-batch {args.global_batch} does not split over {devices} processes")
            for variant in (["ddp"] if devices == 1 else args.variants):
                results.append(run_config(args, devices, variant, Path(tmp)))
                print(json.dumps(results[-1]), flush=True)
    single = next((r for r in results if r["devices"] == 1), None)
    print(f"\nglobal batch {args.global_batch}, {args.accelerator}, {args.size}")
    print("devices variant  s/step  samples/s  vs 1 process")
    for r in results:
        r["speedup_vs_1"] = r["samples_per_s"] / single["samples_per_s"] if single else None
        ratio = f"{r['speedup_vs_1']:.3f}" if single else "-"
        print(f"{r['devices']:7d} {r['variant']:7s} {r['s_per_step']:7.3f} {r['samples_per_s']:9.2f}  {ratio}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
