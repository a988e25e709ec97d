from .concept import ConceptDataset, ConceptSource, read_concept_list
from .datamodule import ConceptDataModule
from .evaluation import EvalConceptSpec, EvalDataModule, EvalItem
from .fusion_concepts import FusionDataModule
from .prompts import PromptDataModule, SampleItem, read_prompts, sample_items
from .scenes import Scene, SceneDataModule, read_scenes

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
    "Scene",
    "SceneDataModule",
    "read_concept_list",
    "read_prompts",
    "read_scenes",
    "sample_items",
]
