"""The fusion DataModule: the concept files to fuse, split across processes."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
from torch.utils.data import DataLoader

from ..fusion.concepts import ConceptSpec, FusionConcept, load_concepts
from .concept import refuse_unknown_keys
from .sharding import ShardedItems


class FusionDataModule(pl.LightningDataModule):
    """ED-LoRA files to fuse, each with its alphas; files are read and cross-checked in ``setup``,
    before the base model loads (duplicate names or tokens, alphas out of range, different base shapes).

    ``predict_dataloader`` yields one item per process: the indices of the concepts whose statistics that
    process gathers (every world-size-th concept; possibly none), so a fusion is one step on every process.
    """

    def __init__(self, concepts: list[ConceptSpec] | None = None, concept_list: str | None = None):
        """
        Args:
            concepts: One entry per concept: ``path`` (ED-LoRA file), ``unet_alpha`` and ``text_encoder_alpha``
                (LoRA scales of its own model, default 1.0, range [0, 2]), optional ``name``.
            concept_list: Instead, the reference implementation's fusion config: a JSON list of ``{lora_path,
                unet_alpha, text_encoder_alpha, concept_name}`` (relative paths from the JSON's folder).
        """
        super().__init__()
        if concepts and concept_list:
            raise ValueError("give the concepts either as data.init_args.concepts or as concept_list, not both")
        self.specs = [c if isinstance(c, ConceptSpec) else ConceptSpec(**c) for c in concepts or []]
        self.concept_list = concept_list
        if not self.specs and not concept_list:
            raise ValueError("no concepts to fuse: list at least one ED-LoRA file under data.init_args.concepts")
        self.fusion_concepts: list[FusionConcept] = []

    def setup(self, stage: str) -> None:
        if not self.fusion_concepts:
            expected: dict = {}
            if self.concept_list:
                self.specs, expected = read_reference_concept_list(self.concept_list)
            self.fusion_concepts = load_concepts(self.specs)
            for concept, spec in zip(self.fusion_concepts, self.specs, strict=True):
                tokens = expected.get(spec.path)
                if tokens is not None and tokens != concept.tokens:
                    raise ValueError(f"{self.concept_list}: concept_name {' '.join(tokens)!r} does not match the "
                                     f"tokens of {spec.path} ({' '.join(concept.tokens)})")

    def predict_dataloader(self) -> DataLoader:
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        share = list(range(len(self.fusion_concepts)))[rank::world]
        return DataLoader(ShardedItems([share]), batch_size=None, num_workers=0, collate_fn=lambda item: item)


def read_reference_concept_list(path: str) -> tuple[list[ConceptSpec], dict[str, list[str]]]:
    """Specs from a reference fusion config, and each file's tokens as the config names them."""
    folder = Path(path).parent
    try:
        entries = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"concept_list {path} is not a readable JSON file: {error}") from error
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "lora_path" in e for e in entries):
        raise ValueError(f"concept_list {path} must be a JSON list of objects with a lora_path each")
    specs, tokens = [], {}
    for i, entry in enumerate(entries):
        refuse_unknown_keys(entry, ("lora_path", "unet_alpha", "text_encoder_alpha", "concept_name"),
                            f"entry {i} of {path}")
        file = Path(entry["lora_path"])
        file = file if file.is_absolute() or not (folder / file).exists() else folder / file
        specs.append(ConceptSpec(str(file), float(entry.get("unet_alpha", 1.0)),
                                 float(entry.get("text_encoder_alpha", 1.0))))
        if entry.get("concept_name"):
            tokens[str(file)] = entry["concept_name"].split()
    return specs, tokens
