"""Device values read on the host without waiting for the device.

Reading a GPU tensor on the host (``.item()``, or Lightning converting a ``prog_bar`` metric to a
number after every step) waits for all queued GPU work, so the host cannot prepare the next step
while the GPU runs this one. :class:`LaggedHostScalar` copies the value into pinned host memory
without blocking and hands it out once the copy has landed, usually one step later.
"""

from __future__ import annotations

import torch


class LaggedHostScalar:
    """The newest value of a device scalar whose copy to the host has finished.

    ``push(x)`` starts a non-blocking copy of ``x``; ``ready`` is then the newest earlier (or, off the
    GPU, this) value already on the host, as a CPU tensor, or ``None`` before the first has landed.
    Slots are reused round-robin; a value is read only after its copy's event has completed.
    """

    def __init__(self, slots: int = 2):
        if slots < 1:
            raise ValueError("slots must be >= 1")
        self.slots = slots
        self.buffers: list[torch.Tensor] = []
        self.events: list = []
        self.pushed = 0
        self.ready: torch.Tensor | None = None

    def push(self, value: torch.Tensor) -> None:
        value = value.detach()
        if value.device.type != "cuda":
            self.ready = value.to("cpu", copy=True)  # nothing to wait for
            self.pushed += 1
            return
        if not self.buffers:
            self.buffers = [torch.empty(value.shape, dtype=value.dtype, pin_memory=True) for _ in range(self.slots)]
            self.events = [torch.cuda.Event() for _ in range(self.slots)]
        self._collect()
        slot = self.pushed % self.slots
        self.buffers[slot].copy_(value, non_blocking=True)
        self.events[slot].record()
        self.pushed += 1

    def _collect(self) -> None:
        """Take the newest finished copy (before the oldest slot is overwritten by the next push)."""
        for back in range(1, min(self.slots, self.pushed) + 1):
            slot = (self.pushed - back) % self.slots
            if self.events[slot].query():  # non-blocking
                self.ready = self.buffers[slot].clone()
                return
