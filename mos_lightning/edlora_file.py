"""The ED-LoRA file: layer-wise embeddings + both LoRAs + JSON metadata in one ``.safetensors``.

Keys: ``embedding.<token>`` ([L, C], or [1, C] for the non-layer-wise baseline),
``unet.<module>.lora_{A,B}.weight``, ``text_encoder.<module>.lora_{A,B}.weight``.
Metadata key ``mos_lightning`` holds JSON (see :class:`EDLoRA`). The reference
implementation's ``.pth`` files import into the same in-memory form.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .atomic import atomic_path

FORMAT_VERSION = 1
METADATA_KEY = "mos_lightning"
CONCEPTS_FILE = "concepts.safetensors"  # a fused model folder's token table: an ED-LoRA file without LoRA


@dataclass
class ConceptInfo:
    """One concept in a file: its token names (in prompt order) and optional class word."""

    tokens: list[str]
    class_word: str | None = None


@dataclass
class EDLoRA:
    """In-memory ED-LoRA: what a tuned concept (or several) adds to a base model."""

    concepts: dict[str, ConceptInfo]
    embeddings: dict[str, torch.Tensor]
    unet_lora: dict[str, torch.Tensor] = field(default_factory=dict)
    text_encoder_lora: dict[str, torch.Tensor] = field(default_factory=dict)
    num_layers: int | None = None  # the base's cross-attention layer count; None: read from layer-wise embeddings
    rank: int = 4
    alpha: float = 1.0
    base_model: str = ""
    extra: dict = field(default_factory=dict)
    base_fingerprint: str = ""  # content hash of the base's weights (mos_lightning.base_checks.base_fingerprint)

    def __post_init__(self) -> None:
        if self.num_layers is None:
            counts = {e.shape[0] for e in self.embeddings.values()}
            if len(counts) != 1 or counts == {1}:
                raise ValueError("give num_layers (the base model's cross-attention layer count): the embeddings "
                                 f"do not tell it (layers per token: {sorted(counts)})")
            self.num_layers = counts.pop()

    @property
    def token_names(self) -> list[str]:
        return [t for c in self.concepts.values() for t in c.tokens]

    @property
    def hidden_size(self) -> int:
        return next(iter(self.embeddings.values())).shape[-1]

    def embedding_matrix(self) -> torch.Tensor:
        """``[N, L', C]`` embeddings in :attr:`token_names` order."""
        return torch.stack([self.embeddings[t] for t in self.token_names])

    def metadata(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "concepts": {name: asdict(info) for name, info in self.concepts.items()},
            "num_layers": self.num_layers,
            "hidden_size": self.hidden_size,
            "rank": self.rank,
            "alpha": self.alpha,
            "base_model": self.base_model,
            "base_fingerprint": self.base_fingerprint,
            "extra": self.extra,
        }

    def validate(self) -> None:
        missing = [t for t in self.token_names if t not in self.embeddings]
        if missing:
            raise ValueError(f"ED-LoRA has no embedding for token(s) {missing}")
        for token, emb in self.embeddings.items():
            if emb.ndim != 2 or emb.shape[0] not in (1, self.num_layers):
                raise ValueError(f"embedding of {token} has shape {tuple(emb.shape)}, expected [{self.num_layers}, C]")


def save_edlora(path: str | Path, edlora: EDLoRA) -> Path:
    """Write ``edlora`` as safetensors, atomically."""
    edlora.validate()
    tensors = {f"embedding.{t}": e.detach().float().cpu().contiguous() for t, e in edlora.embeddings.items()}
    tensors |= {f"unet.{k}": v.detach().cpu().contiguous() for k, v in edlora.unet_lora.items()}
    tensors |= {f"text_encoder.{k}": v.detach().cpu().contiguous() for k, v in edlora.text_encoder_lora.items()}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", METADATA_KEY: json.dumps(edlora.metadata())})
    return path


def load_edlora(path: str | Path) -> EDLoRA:
    """Read an ED-LoRA ``.safetensors`` (ours) or a reference-implementation ``.pth``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ED-LoRA file {path} does not exist")
    if path.suffix in (".pth", ".pt", ".ckpt"):
        return import_reference_pth(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta_text = (f.metadata() or {}).get(METADATA_KEY)
            if meta_text is None:
                raise ValueError(f"{path} is a safetensors file but not an ED-LoRA (no '{METADATA_KEY}' metadata)")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except SafetensorError as error:
        raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupt? {error}); "
                         "export the ED-LoRA again") from error
    try:
        meta = json.loads(meta_text)
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(f"{path} has format version {meta['format_version']}; upgrade mos-lightning to read it")
        concepts = {n: ConceptInfo(**c) for n, c in meta["concepts"].items()}
        fields = {k: meta[k] for k in ("num_layers", "rank", "alpha")}
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"{path}: its '{METADATA_KEY}' metadata is broken or incomplete ({error!r}); "
                         "export the ED-LoRA again") from error
    groups: dict[str, dict[str, torch.Tensor]] = {"embedding": {}, "unet": {}, "text_encoder": {}}
    for key, value in tensors.items():
        prefix, _, rest = key.partition(".")
        if prefix not in groups:
            raise ValueError(f"{path}: tensor {key!r} has an unknown prefix (expected {sorted(groups)})")
        groups[prefix][rest] = value
    edlora = EDLoRA(concepts, groups["embedding"], groups["unet"], groups["text_encoder"], **fields,
                    base_model=meta.get("base_model", ""), extra=meta.get("extra", {}),
                    base_fingerprint=meta.get("base_fingerprint", ""))
    try:
        edlora.validate()
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error
    return edlora


# The reference's LoRA key endings → ours: main branch "<module>.lora_down.weight", research branch
# "<module>_lora.down.weight" (its LoRA modules are named after the layer plus "_lora").
_REFERENCE_ENDINGS = {
    ".lora_down.weight": ".lora_A.weight", ".lora_up.weight": ".lora_B.weight",
    "_lora.down.weight": ".lora_A.weight", "_lora.up.weight": ".lora_B.weight",
}


def _reference_key(key: str, path: Path) -> str:
    key = key.removeprefix("text_model.")  # transformers 5's CLIPTextModel has no "text_model." level
    for ending, ours in _REFERENCE_ENDINGS.items():
        if key.endswith(ending):
            return key[: -len(ending)] + ours
    raise ValueError(f"{path}: LoRA key {key!r} is in no format this importer knows (keys end in "
                     f"{sorted(_REFERENCE_ENDINGS)})")


def _reference_weight(value: torch.Tensor) -> torch.Tensor:
    value = value.detach().float()  # reference files may hold tensors saved with requires_grad
    return value.flatten(1) if value.ndim == 4 else value  # 1×1 convolutions: [out, in, 1, 1]


def import_reference_pth(path: str | Path, concept_name: str | None = None) -> EDLoRA:
    """Import a reference-implementation ED-LoRA ``.pth``, main or research branch (read with ``weights_only=True``)."""
    path = Path(path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    params = checkpoint.get("params", checkpoint)
    if "new_concept_embedding" not in params:
        raise ValueError(f"{path} is not a reference ED-LoRA file (no params['new_concept_embedding'])")
    embeddings = {t: e.detach().float() for t, e in params["new_concept_embedding"].items()}
    if not embeddings:
        raise ValueError(f"{path} holds no concept embeddings (params['new_concept_embedding'] is empty)")
    unet = {_reference_key(k, path): _reference_weight(v) for k, v in params.get("unet", {}).items()}
    text = {_reference_key(k, path): _reference_weight(v) for k, v in params.get("text_encoder", {}).items()}
    ranks = {v.shape[0] for k, v in (unet | text).items() if k.endswith("lora_A.weight")}
    if len(ranks) > 1:
        raise ValueError(f"{path} mixes LoRA ranks {sorted(ranks)}")
    num_layers = next(iter(embeddings.values())).shape[0]
    return EDLoRA(
        concepts={concept_name or path.stem: ConceptInfo(tokens=list(embeddings))},
        embeddings=embeddings,
        unet_lora=unet,
        text_encoder_lora=text,
        num_layers=num_layers,
        rank=ranks.pop() if ranks else 0,
        alpha=1.0,
        base_model="",
        extra={"imported_from": str(path)},
    )


REFERENCE_CONCEPTS_FILE = "new_concept_cfg.json"  # a reference fused folder's token map


def reference_concept_name(token: str) -> str:
    """The concept a reference token belongs to: its stem (``<cat1>``, ``<cat2>`` → ``cat``)."""
    return token.strip("<>").rstrip("0123456789") or token.strip("<>")


def import_reference_concepts(config: dict, embedding_table: torch.Tensor, source: str = "") -> EDLoRA:
    """The token table of a reference fused model folder: its ``new_concept_cfg.json`` (token → the ids of its
    per-layer tokens ``<new0>`` …) read against the folder's text-encoder embedding table. Tokens that share a
    stem form one concept (``<cat1>``, ``<cat2>`` → ``cat``)."""
    concepts: dict[str, ConceptInfo] = {}
    embeddings: dict[str, torch.Tensor] = {}
    for token, entry in config.items():
        ids = entry.get("concept_token_ids") if isinstance(entry, dict) else None
        if not ids or max(ids) >= embedding_table.shape[0]:
            raise ValueError(f"{source}: {REFERENCE_CONCEPTS_FILE} entry {token!r} has no usable concept_token_ids")
        embeddings[token] = embedding_table[ids].detach().float().cpu().clone()
        concepts.setdefault(reference_concept_name(token), ConceptInfo(tokens=[])).tokens.append(token)
    return EDLoRA(concepts, embeddings, rank=0, alpha=1.0, extra={"imported_from": source})
