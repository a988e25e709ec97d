"""The concepts a fusion takes in, and the checks that run before any model loads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..edlora_file import EDLoRA, load_edlora

MAX_ALPHA = 2.0  # beyond 2× the tuned LoRA a concept's own model is far outside what it was tuned as


@dataclass
class ConceptSpec:
    """One concept to fuse, as written in a config."""

    path: str
    """ED-LoRA file (``.safetensors``, or the reference implementation's ``.pth``)."""
    unet_alpha: float = 1.0
    """Scale of the concept's UNet LoRA in its own model (W_i = W0 + alpha·ΔW_i)."""
    text_encoder_alpha: float = 1.0
    """Scale of the concept's text-encoder LoRA in its own model."""
    name: str | None = None
    """Concept name (default: the name stored in the file; a reference ``.pth`` is named after the file)."""


@dataclass
class FusionConcept:
    """A loaded concept: its ED-LoRA and alphas."""

    name: str
    edlora: EDLoRA
    unet_alpha: float = 1.0
    text_encoder_alpha: float = 1.0
    source: str = ""

    @property
    def tokens(self) -> list[str]:
        return self.edlora.token_names

    @property
    def token_string(self) -> str:
        return " ".join(self.tokens)


def load_concepts(specs: list[ConceptSpec]) -> list[FusionConcept]:
    """Read and cross-check the concept files; every problem is reported before the base model loads."""
    if not specs:
        raise ValueError("no concepts to fuse: list at least one ED-LoRA file under data.init_args.concepts")
    concepts: list[FusionConcept] = []
    for spec in specs:
        for alpha_name in ("unet_alpha", "text_encoder_alpha"):
            alpha = getattr(spec, alpha_name)
            if not 0.0 <= alpha <= MAX_ALPHA:
                raise ValueError(f"{spec.path}: {alpha_name}={alpha} is out of range [0, {MAX_ALPHA}]")
        if not Path(spec.path).is_file():
            raise FileNotFoundError(f"ED-LoRA file {spec.path} does not exist")
        edlora = load_edlora(spec.path)
        if len(edlora.concepts) != 1:
            raise ValueError(f"{spec.path} holds {len(edlora.concepts)} concepts ({sorted(edlora.concepts)}); "
                             "fusion takes single-concept ED-LoRA files")
        stored = next(iter(edlora.concepts))
        name = spec.name or stored
        if name != stored:
            edlora.concepts = {name: edlora.concepts[stored]}
        concepts.append(FusionConcept(name, edlora, spec.unet_alpha, spec.text_encoder_alpha, str(spec.path)))
    files = [str(Path(c.source).resolve()) for c in concepts]
    repeated = sorted({c.source for c, f in zip(concepts, files, strict=True) if files.count(f) > 1})
    if repeated:  # renaming would not help: the same file's tokens would clash next
        raise ValueError(f"ED-LoRA file(s) {repeated} are listed more than once; list each concept once")
    names = [c.name for c in concepts]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"concept name(s) {duplicates} appear more than once: two different files tuned under the "
                         "same name; give one its own `name` (and, if their tokens clash too, re-tune one with other "
                         "token names)")
    owner: dict[str, str] = {}
    for concept in concepts:
        for token in concept.tokens:
            if token in owner:
                raise ValueError(f"token {token} belongs to both {owner[token]} and {concept.source}; "
                                 "concepts fused together need distinct token names (re-tune one with other names)")
            owner[token] = concept.source
    first = concepts[0].edlora
    for concept in concepts[1:]:
        e = concept.edlora
        if (e.num_layers, e.hidden_size) != (first.num_layers, first.hidden_size):
            raise ValueError(
                f"{concept.source} has {e.num_layers} layers × {e.hidden_size}-wide embeddings but "
                f"{concepts[0].source} has {first.num_layers} × {first.hidden_size}: they were tuned on different base models"
            )
    return concepts
