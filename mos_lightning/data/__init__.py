from .concept import ConceptDataset, ConceptSource, read_concept_list
from .datamodule import ConceptDataModule
from .evaluation import EvalConceptSpec, EvalDataModule, EvalItem
from .fusion import FusionDataModule
from .prompts import PromptDataModule, SampleItem, read_prompts, sample_items

__all__ = [
    "ConceptDataModule",
    "ConceptDataset",
    "ConceptSource",
    "EvalConceptSpec",
    "EvalDataModule",
    "EvalItem",
    "FusionDataModule",
    "PromptDataModule",
    "SampleItem",
    "read_concept_list",
    "read_prompts",
    "sample_items",
]
