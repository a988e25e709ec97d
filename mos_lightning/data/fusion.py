"""The fusion DataModule: the concept files to fuse, split across processes."""

from __future__ import annotations

import lightning.pytorch as pl
from torch.utils.data import DataLoader

from ..fusion.concepts import ConceptSpec, FusionConcept, load_concepts
from .sharding import ShardedItems

IDLE = -1  # a step with no concept (see ShardedItems)


class FusionDataModule(pl.LightningDataModule):
    """ED-LoRA files to fuse, each with its alphas; files are read and cross-checked in ``setup``,
    before the base model loads (duplicate names or tokens, alphas out of range, different base shapes)."""

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

    def train_dataloader(self) -> DataLoader:
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        shard = ShardedItems(list(range(len(self.fusion_concepts))), rank, world, filler=IDLE)
        return DataLoader(shard, batch_size=None, num_workers=0)
