"""Center-node fusion of ED-LoRAs (pure torch/diffusers; the Lightning task is mos_lightning.tasks.FusionTask).

In a notebook::

    fuser = Fuser(pipe, load_concepts([ConceptSpec("a.safetensors"), ConceptSpec("b.safetensors")]))
    result = run_fusion(fuser)                # statistics → text encoder → k/v → spatial → fidelity
    save_fused_model(fuser, "fused/model")    # mos_lightning.fusion.output
"""

from .concepts import ConceptSpec, FusionConcept, load_concepts
from .fuser import ConceptRecord, Fuser, FusionSettings
from .grams import ConceptGrams, FusionSums, GramRecorder, all_reduce_sums
from .run import FusionResult, run_fusion
from .solvers import (
                      LBFGS,
                      ClosedForm,
                      ConceptTerm,
                      FusionSolver,
                      KeepBase,
                      LayerProblem,
                      NaiveAverage,
                      NaiveSum,
                      PerLayer,
                      SolverRule,
                      closed_form,
                      default_solver,
                      lbfgs,
                      naive_merge,
                      objective,
)
from .weights import STAGES, FusionWeights

__all__ = [
    "LBFGS", "STAGES", "ClosedForm", "ConceptGrams", "ConceptRecord", "ConceptSpec", "ConceptTerm", "Fuser",
    "FusionConcept", "FusionResult", "FusionSettings", "FusionSolver", "FusionSums", "FusionWeights", "GramRecorder",
    "KeepBase", "LayerProblem", "NaiveAverage", "NaiveSum", "PerLayer", "SolverRule", "all_reduce_sums", "closed_form",
    "default_solver", "lbfgs", "load_concepts", "naive_merge", "objective", "run_fusion",
]
