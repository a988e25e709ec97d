"""The fusion DataModule: the concept files to fuse, split across processes."""

from __future__ import annotations

import lightning.pytorch as pl
from torch.utils.data import DataLoader

from ..fusion.concepts import ConceptSpec, FusionConcept, load_concepts
from .sharding import ShardedItems


class FusionDataModule(pl.LightningDataModule):
    """ED-LoRA files to fuse, each with its alphas; files are read and cross-checked in ``setup``,
    before the base model loads (duplicate names or tokens, alphas out of range, different base shapes).

    ``predict_dataloader`` yields one item per process: the indices of the concepts whose statistics that
    process gathers (every world-size-th concept; possibly none), so a fusion is one step on every process.
    """

    def __init__(self, concepts: list[ConceptSpec] | None = None):
        """
        Args:
            concepts: One entry per concept: ``path`` (ED-LoRA file), ``unet_alpha`` and ``text_encoder_alpha``
                (LoRA scales of its own model, default 1.0, range [0, 2]), optional ``name``.
        """
        super().__init__()
        self.specs = [c if isinstance(c, ConceptSpec) else ConceptSpec(**c) for c in concepts or []]
        if not self.specs:
            raise ValueError("no concepts to fuse: list at least one ED-LoRA file under data.init_args.concepts")
        self.fusion_concepts: list[FusionConcept] = []

    def setup(self, stage: str) -> None:
        if not self.fusion_concepts:
            self.fusion_concepts = load_concepts(self.specs)

    def predict_dataloader(self) -> DataLoader:
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        share = list(range(len(self.fusion_concepts)))[rank::world]
        return DataLoader(ShardedItems([share]), batch_size=None, num_workers=0, collate_fn=lambda item: item)
