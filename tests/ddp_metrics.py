"""Run by test_metrics.py: two gloo processes each update the metrics with half of the data; print the synced values."""

import os
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mos_lightning.metrics import ImageAlignment, TextAlignment


def data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(7, 8, generator=g), torch.randn(7, 8, generator=g), torch.randn(3, 8, generator=g)


def work(rank: int, world: int, port: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    images, texts, references = data()
    text, image = TextAlignment(), ImageAlignment()
    mine = slice(0, 4) if rank == 0 else slice(4, 7)  # uneven shards
    text.update(images[mine], texts[mine])
    image.update(images[mine], references)
    values = float(text.compute()), float(image.compute())
    if rank == 0:
        print(f"{values[0]!r} {values[1]!r}")
    dist.destroy_process_group()


if __name__ == "__main__":
    mp.spawn(work, args=(2, sys.argv[1]), nprocs=2)
