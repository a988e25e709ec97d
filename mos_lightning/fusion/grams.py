"""Activation statistics for fusion: Gram matrices of linear-layer inputs, streamed through hooks.

For a linear layer with inputs X (rows = tokens or pixels), everything the fusion objective needs
is G = XᵀX (d_in × d_in): memory does not grow with the number of tokens recorded. Layers that
receive the very same input tensor (q/k/v of one attention) share one Gram matrix.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn


class GramRecorder:
    """While entered, adds XᵀX of the input of each named linear layer of ``model`` on every forward.

    ``grams[group]`` holds the sum for a group of layers that got the same input tensor (named after
    its first layer); ``group_of[layer]`` maps every recorded layer to its group; ``rows[group]``
    counts the rows of X. Hooks are removed on exit, also after an exception.
    """

    def __init__(self, model: nn.Module, layers: Iterable[str], dtype: torch.dtype = torch.float32):
        self.model = model
        self.layers = list(layers)
        self.dtype = dtype
        self.grams: dict[str, torch.Tensor] = {}
        self.rows: dict[str, int] = {}
        self.group_of: dict[str, str] = {}
        self._handles: list = []
        self._last: tuple[torch.Tensor, str] | None = None

    def _hook(self, name: str):
        def record(_module, args):
            x = args[0]
            if self._last is not None and self._last[0] is x and self._last[1] != name:
                group = self._last[1] if self._last[1] not in self.group_of else self.group_of[self._last[1]]
                if self.group_of.setdefault(name, group) != group:
                    raise RuntimeError(f"{name} shared its input with {group} in one forward and not in another")
                return
            if self.group_of.setdefault(name, name) != name:
                raise RuntimeError(f"{name} shared its input with {self.group_of[name]} in one forward and not in another")
            flat = x.detach().reshape(-1, x.shape[-1]).to(self.dtype)
            gram = flat.T @ flat
            if name in self.grams:
                self.grams[name] += gram
                self.rows[name] += flat.shape[0]
            else:
                self.grams[name], self.rows[name] = gram, flat.shape[0]
            self._last = (x, name)

        return record

    def __enter__(self) -> GramRecorder:
        for name in self.layers:
            module = self.model.get_submodule(name)
            if not isinstance(module, nn.Linear):
                raise TypeError(f"{name} is a {type(module).__name__}; Gram statistics are for nn.Linear layers")
            self._handles.append(module.register_forward_pre_hook(self._hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._last = None


@dataclass
class FusionSums:
    """Per-layer sums over concepts i of what the least-squares fusion needs, with ΔW_i = W_i − W0 the
    concept's change of the layer (α_i B_i A_i):

    ``gram[g] = Σ G_i`` (per input group), ``cross[l] = Σ G_i ΔW_iᵀ``, ``energy[l] = Σ tr(ΔW_i G_i ΔW_iᵀ)``
    (= Σ ||X_i ΔW_iᵀ||², what the concepts' LoRAs change), ``rows[g] = Σ rows``. Sums add across concepts
    and processes. Working relative to W0 keeps the objective free of cancellation between large terms.
    """

    group_of: dict[str, str] = field(default_factory=dict)
    gram: dict[str, torch.Tensor] = field(default_factory=dict)
    cross: dict[str, torch.Tensor] = field(default_factory=dict)
    energy: dict[str, torch.Tensor] = field(default_factory=dict)
    rows: dict[str, torch.Tensor] = field(default_factory=dict)
    # with keep_concepts, each concept's own Gram matrices (per group) and ΔW (per layer), by concept index
    keep_concepts: bool = False
    concept_gram: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    concept_delta: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    concept_rows: dict[int, dict[str, float]] = field(default_factory=dict)

    def add(self, recorder: GramRecorder | "ConceptGrams", deltas: Mapping[str, torch.Tensor], dtype=torch.float64,
            index: int | None = None) -> None:
        """Add one concept's Gram matrices, with ``deltas[layer]`` = that concept's ΔW_i of every recorded layer;
        with ``keep_concepts`` they are also kept apart under the concept's ``index``."""
        if self.keep_concepts:
            if index is None:
                raise ValueError("FusionSums(keep_concepts=True).add needs the concept's index")
            self.concept_gram[index] = {g: v.to(dtype) for g, v in recorder.grams.items()}
            self.concept_delta[index] = {n: deltas[n].to(dtype=dtype, device=recorder.grams[g].device)
                                         for n, g in recorder.group_of.items()}
            self.concept_rows[index] = {g: float(n) for g, n in recorder.rows.items()}
        for layer, group in recorder.group_of.items():
            known = self.group_of.setdefault(layer, group)
            if known != group:
                raise ValueError(f"layer {layer} is grouped with {group} here but with {known} before")
        for group, gram in recorder.grams.items():
            gram = gram.to(dtype)
            self.gram[group] = self.gram[group] + gram if group in self.gram else gram.clone()
            rows = torch.tensor(float(recorder.rows[group]), dtype=dtype, device=gram.device)
            self.rows[group] = self.rows[group] + rows if group in self.rows else rows
        for layer, group in recorder.group_of.items():
            gram = recorder.grams[group].to(dtype)
            delta = deltas[layer].to(dtype=dtype, device=gram.device)
            cross = gram @ delta.T
            energy = (delta.T * cross).sum()  # tr(ΔW G ΔWᵀ) = Σ (ΔWᵀ ∘ G ΔWᵀ)
            self.cross[layer] = self.cross[layer] + cross if layer in self.cross else cross
            self.energy[layer] = self.energy[layer] + energy if layer in self.energy else energy

    def layout(self) -> dict:
        """Keys and shapes of the sums (processes with no concepts take them from the others)."""
        return {
            "group_of": dict(self.group_of),
            "gram": {k: tuple(v.shape) for k, v in self.gram.items()},
            "cross": {k: tuple(v.shape) for k, v in self.cross.items()},
        }

    def fill_missing(self, layout: dict, device, dtype=torch.float64) -> None:
        """Add zero sums for keys in ``layout`` that this process has not seen."""
        for layer, group in layout["group_of"].items():
            self.group_of.setdefault(layer, group)
        for group, shape in layout["gram"].items():
            self.gram.setdefault(group, torch.zeros(shape, dtype=dtype, device=device))
            self.rows.setdefault(group, torch.zeros((), dtype=dtype, device=device))
        for layer, shape in layout["cross"].items():
            self.cross.setdefault(layer, torch.zeros(shape, dtype=dtype, device=device))
            self.energy.setdefault(layer, torch.zeros((), dtype=dtype, device=device))

    def tensors(self) -> list[torch.Tensor]:
        """Every sum, in a fixed order (for all-reduce across processes; per-concept terms are gathered instead)."""
        return [d[k] for d in (self.gram, self.cross, self.energy, self.rows) for k in sorted(d)]

    def layer(self, name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(S, B, c, n)`` of one layer."""
        group = self.group_of[name]
        return self.gram[group], self.cross[name], self.energy[name], self.rows[group]

    def concept_terms(self, name: str) -> list[tuple[torch.Tensor, torch.Tensor, float]]:
        """``[(G_i, ΔW_i, rows_i)]`` of one layer, in concept order (needs ``keep_concepts``); a concept that never
        reached the layer's input has a zero Gram matrix."""
        if not self.keep_concepts:
            raise ValueError("per-concept statistics were not kept (FusionSums.keep_concepts)")
        group = self.group_of[name]
        gram = self.gram[group]
        return [(self.concept_gram[i].get(group, torch.zeros_like(gram)).to(gram.device),
                 self.concept_delta[i][name].to(gram.device), self.concept_rows[i].get(group, 0.0))
                for i in sorted(self.concept_gram)]

    def gather_concepts(self, gather) -> None:
        """Every process's per-concept terms on every process, with ``gather(obj) -> [obj per process]``."""
        if not self.keep_concepts:
            return
        device = next(iter(self.gram.values())).device if self.gram else torch.device("cpu")
        mine = {i: ({k: v.cpu() for k, v in self.concept_gram[i].items()},
                    {k: v.cpu() for k, v in self.concept_delta[i].items()}, self.concept_rows[i])
                for i in self.concept_gram}
        for part in gather(mine):
            for i, (grams, deltas, rows) in part.items():
                self.concept_gram[i] = {k: v.to(device) for k, v in grams.items()}
                self.concept_delta[i] = {k: v.to(device) for k, v in deltas.items()}
                self.concept_rows[i] = rows


@dataclass
class ConceptGrams:
    """One concept's recorded statistics, detached from the recorder (e.g. read from a stats file)."""

    grams: dict[str, torch.Tensor]
    rows: dict[str, int]
    group_of: dict[str, str]

    @classmethod
    def from_recorder(cls, recorder: GramRecorder) -> ConceptGrams:
        return cls(dict(recorder.grams), dict(recorder.rows), dict(recorder.group_of))

    def to(self, device) -> ConceptGrams:
        return ConceptGrams({k: v.to(device) for k, v in self.grams.items()}, dict(self.rows), dict(self.group_of))


def all_reduce_sums(sums: FusionSums, reduce) -> None:
    """Sum ``sums`` across processes in one flat buffer with ``reduce(tensor) -> tensor`` (e.g. a strategy's)."""
    tensors = sums.tensors()
    if not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    flat = reduce(flat)
    offset = 0
    for d in (sums.gram, sums.cross, sums.energy, sums.rows):
        for key in sorted(d):
            n = d[key].numel()
            d[key] = flat[offset : offset + n].view_as(d[key]).clone()
            offset += n
