"""Splitting items across processes exactly once each, with the same number of steps on every process."""

from __future__ import annotations

from typing import Any

from torch.utils.data import IterableDataset


class ShardedItems(IterableDataset):
    """Items ``rank, rank + world, …`` of ``items``, padded with ``filler`` to the longest shard's length.

    An iterable dataset, so Lightning adds no DistributedSampler: that one pads shards by repeating items,
    which would count them twice in summed statistics or metrics. Lightning runs a collective every step,
    so every process must take the same number of steps: hence the filler items, which the step skips.
    """

    def __init__(self, items: list[Any], rank: int = 0, world: int = 1, filler: Any = None):
        steps = -(-len(items) // world)
        self.items = list(items[rank::world])
        self.items += [filler] * (steps - len(self.items))

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)
