"""Center-node fusion of ED-LoRAs (pure torch/diffusers; the Lightning task is mos_lightning.tasks.FusionTask)."""

from .concepts import ConceptSpec, FusionConcept, load_concepts
from .fuser import STAGES, Fuser, FusionSettings
from .solvers import (LBFGS, ClosedForm, FusionSolver, LayerProblem, NaiveAverage, NaiveSum, closed_form, lbfgs,
                      naive_merge, objective)
from .stats import ConceptGrams, FusionSums, GramRecorder, all_reduce_sums

__all__ = [
    "LBFGS", "STAGES", "ClosedForm", "ConceptGrams", "ConceptSpec", "Fuser", "FusionConcept", "FusionSettings",
    "FusionSolver", "FusionSums", "GramRecorder", "LayerProblem", "NaiveAverage", "NaiveSum", "all_reduce_sums", "closed_form", "lbfgs", "load_concepts", "naive_merge", "objective",
]
