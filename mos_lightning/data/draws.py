"""The training stream as a pure function of the step, so an interrupted run resumes bit-identically.

A DataLoader that shuffles, with worker processes that draw augmentations from their own generators, cannot be
resumed where it stopped: the order, the workers' generators and the main process's noise all restart. Here every
random choice is keyed by where it happens instead:

- global batch ``b`` holds draws ``[b·B·W, (b+1)·B·W)`` (``W`` processes of ``B`` samples), process ``r`` the
  ``r``-th ``B`` of them;
- draw ``d`` shows image ``order(d // N)[d % N]`` of the ``N`` images (a permutation per pass over them, from
  ``(seed, pass)``), augmented with a generator seeded from ``(seed, d)``;
- each batch carries ``noise_seed`` from ``(seed, b, r)``: the task seeds torch with it before the step, so noise,
  timesteps and dropout follow the batch, not the process's history;
- worker ``w`` of ``K`` makes batches ``start + w, start + w + K, …``, which the DataLoader hands out in order.

A resumed run starts at ``start = global_step × accumulate_grad_batches`` with the checkpoint's seed. The number of
workers no longer changes what is trained.
"""

from __future__ import annotations

import hashlib
import random
import warnings
from typing import Any

from torch.utils.data import DataLoader, IterableDataset, default_collate, get_worker_info

# Lightning warns that an IterableDataset's length may be wrong with several workers; this one's is exact (each
# worker makes only its own batches)
warnings.filterwarnings("ignore", message="Your `IterableDataset` has `__len__` defined")


def stream_seed(*parts: Any) -> int:
    """A 63-bit seed from ``parts`` (stable across processes and Python runs, unlike ``hash``)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") >> 1


class TrainingDraws(IterableDataset):
    """Batches of this process from ``dataset`` (which has ``sample(index, rng)`` and ``len``), starting at global
    batch ``start`` and ending after ``stop`` (``None``: endless)."""

    def __init__(self, dataset, batch_size: int, seed: int, rank: int = 0, world_size: int = 1, start: int = 0,
                 stop: int | None = None):
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start = start
        self.stop = stop
        self._order: tuple[int, list[int]] = (-1, [])

    def __len__(self) -> int:
        # the whole run's batches, not what is left: a resumed Lightning epoch goes on counting from where it stopped
        if self.stop is None:
            raise TypeError("an endless stream of training batches has no length")
        return self.stop

    def image_of(self, draw: int) -> int:
        passes, position = divmod(draw, len(self.dataset))
        if self._order[0] != passes:
            order = list(range(len(self.dataset)))
            random.Random(stream_seed(self.seed, "order", passes)).shuffle(order)
            self._order = (passes, order)
        return self._order[1][position]

    def batch(self, number: int) -> dict:
        first = (number * self.world_size + self.rank) * self.batch_size
        samples = [self.dataset.sample(self.image_of(draw), random.Random(stream_seed(self.seed, "draw", draw)))
                   for draw in range(first, first + self.batch_size)]
        batch = default_collate(samples)
        batch["batch_number"] = number
        batch["noise_seed"] = stream_seed(self.seed, "noise", number, self.rank)
        return batch

    def __iter__(self):
        worker = get_worker_info()
        step = worker.num_workers if worker is not None else 1
        number = self.start + (worker.id if worker is not None else 0)
        while self.stop is None or number < self.stop:
            yield self.batch(number)
            number += step


class DrawLoader(DataLoader):
    """A DataLoader over :class:`TrainingDraws` whose seed goes into Lightning's checkpoints (it is *stateful*), so a
    resumed run continues the interrupted run's stream even when ``seed_everything`` drew a new seed."""

    dataset: TrainingDraws

    def __init__(self, draws: TrainingDraws, **kwargs):
        super().__init__(draws, batch_size=None, **kwargs)  # the stream makes whole batches itself

    def state_dict(self) -> dict:
        return {"seed": self.dataset.seed}

    def load_state_dict(self, state: dict) -> None:
        self.dataset.seed = int(state["seed"])
