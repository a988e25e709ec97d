"""Center-node fusion of many ED-LoRAs into one model (DESIGN §1.2), without Lightning.

Each layer solves ``W* = argmin_W Σ_i ||X_i W_iᵀ − X_i Wᵀ||²`` with W_i = W0 + α_i ΔW_i; the inputs X_i:

1. all concepts' layer-wise tokens go into one tokenizer/embedding table;
2. text-encoder LoRA layers: X_i = layer inputs while concept i's own text encoder encodes its prompts;
3. UNet cross-attention ``to_k``/``to_v``: X_i = the *fused* text encoder's outputs for concept i's
   prompts at every position the UNet attends to, padding included (or, as the reference, only the
   concept-token and end-token positions; or every position up to the end token);
4. the other UNet LoRA layers ("spatial"): X_i = layer inputs while concept i's own model samples
   its spatial prompts (DPM-Solver, no CFG, every step).

Statistics are Gram sums (:mod:`.grams`), so memory does not grow with the tokens recorded and sums from
several processes simply add. :func:`mos_lightning.fusion.run_fusion` runs the stages in order; the pieces
(:meth:`Fuser.record`, :meth:`Fuser.collect_kv`, :meth:`Fuser.solve`) work one concept or stage at a time.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Literal

import torch
from tqdm.auto import tqdm

from ..attention import cross_attention_layers, install_layerwise_processors, num_cross_attention_layers
from ..defaults import NEGATIVE_PROMPT, PLACEHOLDER
from ..edlora_file import ConceptInfo, EDLoRA
from ..models import check_compatible
from ..pipelines import EDLoRAPipeline, make_scheduler
from ..tokens import encode_prompts, tokenize
from .concepts import FusionConcept
from .fidelity import Reference, record_trajectory, relative_error
from .grams import ConceptGrams, FusionSums, GramRecorder
from .solvers import ConceptTerm, FusionSolver, LayerProblem, default_solver, naive_merge, objective
from .weights import STAGES, FusionWeights, Part

# Prompts without any concept for the base-preservation check: generic subjects, styles and scenes.
BASE_PROMPTS = ("a photo of a man", "a dog on the grass", "a red car in a city street", "a painting of a house by the sea")
# Prompts of the held-out identity check: contexts the default statistics prompts ("photo of a <TOK>") never show.
HELD_OUT_PROMPTS = ("a <TOK> in the garden", "a watercolor painting of a <TOK>")


@dataclass
class FusionSettings:
    """How statistics are gathered and layers solved (defaults: the paper's, with our exact solver)."""

    solver: FusionSolver = field(default_factory=default_solver)
    text_prompts: list[str] = field(default_factory=lambda: ["photo of a <TOK>", "<TOK>"])
    spatial_prompts: list[str] = field(default_factory=lambda: ["photo of a <TOK>"])
    spatial_seeds: list[int] = field(default_factory=lambda: [0])
    num_inference_steps: int = 20
    scheduler: str = "dpm_solver"
    height: int | None = None
    width: int | None = None
    kv_positions: Literal["all", "prompt", "concept"] = "all"
    text_rows: Literal["padded", "unpadded"] = "padded"  # text-encoder statistics: every position, or the reference's
    spatial_model: Literal["own", "hybrid"] = "own"  # spatial statistics from the concept's own model, or the reference's
    base_prompts: list[str] = field(default_factory=lambda: list(BASE_PROMPTS))
    stats_dtype: torch.dtype = torch.float64
    # held-out identity check: prompts and seeds no statistics used, sampled with guidance as a user samples
    held_out_prompts: list[str] = field(default_factory=lambda: list(HELD_OUT_PROMPTS))
    held_out_seeds: list[int] = field(default_factory=lambda: [1000, 1001])
    guidance_scale: float = 7.5
    negative_prompt: str = NEGATIVE_PROMPT


@dataclass
class ConceptRecord:
    """A concept's own-model statistics and reference outputs: all the center node needs from its model."""

    text_encoder: ConceptGrams
    spatial: ConceptGrams
    reference: Reference


class Fuser(FusionWeights):
    """Fuses ``concepts`` into the weights of ``pipe`` (a base-model :class:`EDLoRAPipeline` on its device)."""

    def __init__(self, pipe: EDLoRAPipeline, concepts: list[FusionConcept], settings: FusionSettings | None = None,
                 base_model: str = ""):
        self.pipe = pipe
        self.base_model = base_model  # identifies the base in saved statistics (see statistics_key)
        self.settings = settings or FusionSettings()
        for concept in concepts:
            check_compatible(concept.edlora, pipe.unet, pipe.text_encoder, concept.source)
        # Stage 1: one token table for every concept (embeddings only; the LoRAs are handled below).
        for concept in concepts:
            pipe.load_edlora(EDLoRA(concept.edlora.concepts, concept.edlora.embeddings,
                                    num_layers=concept.edlora.num_layers), scale=0.0)
        install_layerwise_processors(pipe.unet)  # direct UNet calls (fidelity) read layer copies too
        pipe.scheduler = make_scheduler(self.settings.scheduler, pipe.scheduler.config)  # type: ignore[arg-type]  # the trajectories' sampler
        super().__init__(pipe.text_encoder, pipe.unet, concepts)
        self.sums = {stage: self.new_sums() for stage in STAGES}
        self.references: dict[int, Reference] = {}
        self.fused: dict[str, dict[str, torch.Tensor]] = {}
        self.naive: dict[str, dict[str, torch.Tensor]] = {}

    def new_sums(self) -> FusionSums:
        """Empty statistics sums; they keep each concept's terms apart when the solver asks for them."""
        return FusionSums(keep_concepts=bool(getattr(self.settings.solver, "needs_concept_terms", False)))

    def prompts(self, index: int, templates: list[str]) -> list[str]:
        tokens = self.concepts[index].token_string
        return [t.replace(PLACEHOLDER, tokens) for t in templates]

    # -------------------------------------------------------- statistics
    def statistics_key(self, index: int) -> dict:
        """Everything a concept's own-model statistics depend on; saved statistics are reused only if it matches."""
        s, c = self.settings, self.concepts[index]
        height, width = self.image_size()
        return {
            "base_model": self.base_model, "dtype": str(self.pipe.unet.dtype),
            "concept": c.name, "tokens": c.tokens, "unet_alpha": c.unet_alpha, "text_encoder_alpha": c.text_encoder_alpha,
            "text_prompts": list(s.text_prompts), "spatial_prompts": list(s.spatial_prompts),
            "spatial_seeds": list(s.spatial_seeds), "num_inference_steps": s.num_inference_steps,
            "scheduler": s.scheduler, "height": height, "width": width, "text_rows": s.text_rows,
            "layers": {part: self.layers[part] for part in self.parts},
        }

    def image_size(self) -> tuple[int, int]:
        native = self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor
        return self.settings.height or native, self.settings.width or native

    @torch.no_grad()
    def record(self, index: int) -> ConceptRecord:
        """Concept ``index``'s own-model statistics (text encoder, spatial) and reference outputs."""
        s, pipe = self.settings, self.pipe
        height, width = self.image_size()
        self.use_concept(index)
        try:
            prompts = self.prompts(index, s.text_prompts)
            with GramRecorder(pipe.text_encoder, self.stage_layers["text_encoder"]) as text_stats:
                if s.text_rows == "padded":
                    text_states = pipe.encode_layerwise(prompts, self.device)
                else:  # the reference: each prompt's own tokens only, no padding rows
                    for prompt in prompts:
                        ids = pipe.tokenizer(prompt, truncation=True, max_length=pipe.tokenizer.model_max_length,
                                             return_tensors="pt").input_ids
                        encode_prompts(pipe.text_encoder, ids, pipe.concept_tokens, num_cross_attention_layers(pipe.unet), True)
            if s.text_rows == "unpadded":
                text_states = pipe.encode_layerwise(prompts, self.device)  # fidelity compares padded encodings
            prompts = [p for p in self.prompts(index, s.spatial_prompts) for _ in s.spatial_seeds]
            generators = [torch.Generator().manual_seed(seed) for _ in s.spatial_prompts for seed in s.spatial_seeds]
            with GramRecorder(pipe.unet, self.stage_layers["spatial"]) as spatial_stats:
                latents, timesteps, noise = record_trajectory(pipe, prompts, generators, s.num_inference_steps,
                                                              height, width)
        finally:
            self.restore_base()
        reference = Reference(text_states.float().cpu(), latents, timesteps, noise)
        return ConceptRecord(ConceptGrams.from_recorder(text_stats), ConceptGrams.from_recorder(spatial_stats), reference)

    @torch.no_grad()
    def record_spatial_hybrid(self, index: int) -> ConceptGrams:
        """The reference's spatial inputs: the trajectory of a hybrid model — the fused text encoder and k/v (so run
        after those solves) with concept ``index``'s own LoRA on every other UNet layer."""
        s, pipe = self.settings, self.pipe
        height, width = self.image_size()
        kv, own = set(self.stage_layers["kv"]), self.concept_weights(index, "unet")
        self.set_weights("text_encoder", self.fused["text_encoder"])
        self.set_weights("unet", {n: self.fused["unet"][n] if n in kv else w for n, w in own.items()})
        try:
            prompts = [p for p in self.prompts(index, s.spatial_prompts) for _ in s.spatial_seeds]
            generators = [torch.Generator().manual_seed(seed) for _ in s.spatial_prompts for seed in s.spatial_seeds]
            with GramRecorder(pipe.unet, self.stage_layers["spatial"]) as stats:
                record_trajectory(pipe, prompts, generators, s.num_inference_steps, height, width)
        finally:
            self.restore_base()
        return ConceptGrams.from_recorder(stats)

    def add(self, index: int, record: ConceptRecord) -> None:
        """Add a concept's own-model statistics (recorded here or read from its stats file) to the sums."""
        stats_dtype = self.settings.stats_dtype
        self.sums["text_encoder"].add(record.text_encoder.to(self.device), self.concept_deltas(index, "text_encoder"),
                                      stats_dtype, index)
        self.sums["spatial"].add(record.spatial.to(self.device), self.concept_deltas(index, "unet"), stats_dtype, index)
        self.references[index] = record.reference

    def collect(self, index: int) -> None:
        """:meth:`record` + :meth:`add`."""
        self.add(index, self.record(index))

    def kv_positions(self, ids: torch.Tensor, index: int) -> torch.Tensor:
        """``[P, T]`` mask of the positions whose text features feed the k/v statistics."""
        if self.settings.kv_positions == "all":  # the UNet attends to padding too
            return torch.ones_like(ids, dtype=torch.bool)
        eos = self.pipe.tokenizer.eos_token_id
        end = (ids == eos).int().argmax(1)  # first end token (padding repeats it)
        upto = torch.arange(ids.shape[1])[None] <= end[:, None]
        if self.settings.kv_positions == "prompt":
            return upto
        token_ids = torch.tensor(self.pipe.tokenizer.convert_tokens_to_ids(self.concepts[index].tokens))
        concept = (ids[..., None] == token_ids).any(-1)
        return concept | (torch.arange(ids.shape[1])[None] == end[:, None])

    @torch.no_grad()
    def collect_kv(self, index: int) -> float:
        """Cross-attention k/v statistics of concept ``index`` (needs the fused text encoder: run after
        :meth:`solve` of the text encoder); returns the text-encoder fidelity (relative error) of the fused model."""
        pipe, s = self.pipe, self.settings
        prompts = self.prompts(index, s.text_prompts)
        self.set_weights("text_encoder", self.fused["text_encoder"])
        try:
            states = pipe.encode_layerwise(prompts, self.device)
        finally:
            self.restore_base()
        fidelity = relative_error(states.float().cpu(), self.references[index].text_states)
        ids = tokenize(pipe.tokenizer, prompts)
        mask = self.kv_positions(ids, index).to(states.device)
        layers = cross_attention_layers(pipe.unet)
        width = states.shape[1] // len(layers)
        grams, rows, group_of = {}, {}, {}
        for position, processor in enumerate(layers):
            module = processor.rsplit(".processor", 1)[0]
            names = [f"{module}.{p}" for p in ("to_k", "to_v") if f"{module}.{p}" in self.stage_layers["kv"]]
            if not names:
                continue
            x = states[:, position * width : (position + 1) * width][mask].to(torch.float32)
            grams[names[0]], rows[names[0]] = x.T @ x, x.shape[0]
            group_of.update({n: names[0] for n in names})
        self.sums["kv"].add(ConceptGrams(grams, rows, group_of), self.concept_deltas(index, "unet"), s.stats_dtype, index)
        return fidelity

    # -------------------------------------------------------------- solve
    def solve(self, stage: str, progress: bool = False) -> list[dict]:
        """Fuse every layer of ``stage`` from the (already summed) statistics; return per-layer report rows."""
        part: Part = "text_encoder" if stage == "text_encoder" else "unet"
        sums, rows = self.sums[stage], []
        fused = self.fused.setdefault(part, {})
        naive = self.naive.setdefault(part, {})
        for name in tqdm(self.stage_layers[stage], desc=f"solving {stage}", disable=not progress, leave=False):
            gram, cross, energy, count = sums.layer(name)
            w0 = self.base[part][name].to(gram.device)
            start = time.perf_counter()
            naive_w = naive_merge(w0, [self.delta_sum[part][name]]).to(gram.device)
            terms = ([ConceptTerm(g, d, torch.tensor(n, dtype=gram.dtype)) for g, d, n in sums.concept_terms(name)]
                     if sums.keep_concepts else None)
            problem = LayerProblem(name, stage, w0, gram, cross, energy, count, naive_w, len(self.concepts), terms)
            solver = self.settings.solver.solver_for(problem)
            weight = solver(problem).to(gram.device, gram.dtype)
            seconds = time.perf_counter() - start
            f, f_naive = (float(objective(w, w0, gram, cross, energy)) for w in (weight, naive_w))
            fused[name], naive[name] = weight.float(), naive_w.float()
            f_base = float(energy)  # f(W0): everything the concepts' LoRAs change on their activations
            scale = max(f_base, 1e-30)
            rows.append({
                "layer": name, "rows": int(count), "objective": f, "objective_naive": f_naive, "objective_base": f_base,
                "relative_residual": math.sqrt(max(f, 0.0) / scale),
                "relative_residual_naive": math.sqrt(max(f_naive, 0.0) / scale),
                "seconds": seconds, "solver": type(solver).__name__, **problem.report,
            })
        return rows

    # --------------------------------------------------------------- output
    def token_table(self, base_model: str = "") -> EDLoRA:
        """All concepts' tokens and layer-wise embeddings, without LoRA: a fused folder's ``concepts.safetensors``."""
        concepts: dict[str, ConceptInfo] = {}
        embeddings: dict[str, torch.Tensor] = {}
        for c in self.concepts:
            concepts.update(c.edlora.concepts)
            embeddings.update(c.edlora.embeddings)
        first = self.concepts[0].edlora
        return EDLoRA(concepts, embeddings, num_layers=first.num_layers, rank=0, alpha=1.0, base_model=base_model,
                      extra={"fused": True})
