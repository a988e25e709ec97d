from .concept import ConceptDataset, ConceptSource, read_concept_list
from .datamodule import ConceptDataModule

__all__ = ["ConceptDataModule", "ConceptDataset", "ConceptSource", "read_concept_list"]
