"""Decentralised fusion statistics: a concept's own-model Gram matrices and reference outputs in a file
beside its ED-LoRA (``<name>.fusion-stats.safetensors``), so the center node fuses without running
that concept's model again. Adding a concept to a fusion then costs only its own statistics plus a re-solve.

The file records everything the statistics depend on (:meth:`Fuser.statistics_key`: base model and dtype,
settings, alphas, tokens, layers); a file made otherwise is ignored and the statistics are recorded afresh.

    python -m mos_lightning.fusion.stats_file --base-model outputs/demo/tiny-sd \\
        outputs/demo/edlora/redball/edlora.safetensors
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..atomic import atomic_path
from .fidelity import Reference
from .fuser import ConceptRecord, Fuser, FusionSettings
from .grams import ConceptGrams

METADATA_KEY = "mos_lightning_fusion_stats"
FORMAT_VERSION = 1


def stats_path(edlora_path: str | Path) -> Path:
    """Where a concept's statistics live: beside its ED-LoRA file."""
    path = Path(edlora_path)
    return path.with_name(f"{path.stem}.fusion-stats.safetensors")


def save_record(path: str | Path, record: ConceptRecord, key: dict) -> Path:
    """Write a concept's statistics (grams fp32, reference outputs fp32) and their key, atomically."""
    tensors: dict[str, torch.Tensor] = {}
    for part in ("text_encoder", "spatial"):
        grams: ConceptGrams = getattr(record, part)
        tensors |= {f"{part}.gram.{k}": v.float().cpu().contiguous() for k, v in grams.grams.items()}
    ref = record.reference
    tensors |= {f"reference.{k}": getattr(ref, k).float().cpu().contiguous()
                for k in ("text_states", "latents", "timesteps", "noise")}
    meta = {
        "format_version": FORMAT_VERSION,
        "key": key,
        "rows": {part: getattr(record, part).rows for part in ("text_encoder", "spatial")},
        "group_of": {part: getattr(record, part).group_of for part in ("text_encoder", "spatial")},
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", METADATA_KEY: json.dumps(meta)})
    return path


def load_record(path: str | Path, key: dict) -> tuple[ConceptRecord | None, str]:
    """``(record, "")`` if ``path`` holds statistics made with ``key``; else ``(None, why not)`` — also for a file
    that cannot be read (truncated, not safetensors, damaged metadata): statistics are a cache, never a reason to fail."""
    path = Path(path)
    if not path.is_file():
        return None, "no statistics file"
    try:
        return _read_record(path, key)
    except Exception as error:  # noqa: BLE001 — any damage means "record afresh", named in the warning
        return None, f"{path} is unreadable ({type(error).__name__}: {error})"


def _read_record(path: Path, key: dict) -> tuple[ConceptRecord | None, str]:
    with safe_open(str(path), framework="pt") as f:
        meta_text = (f.metadata() or {}).get(METADATA_KEY)
        if meta_text is None:
            return None, f"{path} is not a fusion statistics file"
        meta = json.loads(meta_text)
        if meta.get("format_version") != FORMAT_VERSION:
            return None, f"{path} has format version {meta.get('format_version')}"
        if meta["key"] != json.loads(json.dumps(key)):
            differ = sorted(k for k in key if meta["key"].get(k) != json.loads(json.dumps(key[k])))
            return None, f"{path} was made with other settings ({', '.join(differ)})"
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    parts = {}
    for part in ("text_encoder", "spatial"):
        prefix = f"{part}.gram."
        grams = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        parts[part] = ConceptGrams(grams, meta["rows"][part], meta["group_of"][part])
    reference = Reference(*(tensors[f"reference.{k}"] for k in ("text_states", "latents", "timesteps", "noise")))
    return ConceptRecord(parts["text_encoder"], parts["spatial"], reference), ""


def saved_or_recorded(fuser: Fuser, use_saved: bool = True, save: bool = False):
    """A record source for :func:`~mos_lightning.fusion.run_fusion`: a concept's statistics file when it was made
    with the same settings (``use_saved``), else recorded from its own model (and written beside it with ``save``)."""

    def source(index: int) -> tuple[ConceptRecord, str]:
        path, key = stats_path(fuser.concepts[index].source), fuser.statistics_key(index)
        record, why = load_record(path, key) if use_saved else (None, "use_saved_stats is off")
        if record is not None:
            return record, f"read from {path}"
        if "unreadable" in why:
            warnings.warn(f"ignoring fusion statistics {why}; recording them afresh from the concept's model"
                          + (" (and rewriting the file)" if save else ""), stacklevel=2)
        record = fuser.record(index)
        if save:
            save_record(path, record, key)
        return record, "recorded" + (f" ({why})" if path.exists() else "")

    return source


def write_concept_stats(fuser: Fuser, index: int, path: str | Path | None = None) -> Path:
    """Record concept ``index`` of ``fuser`` and save its statistics (default: beside its ED-LoRA file)."""
    record = fuser.record(index)
    return save_record(path or stats_path(fuser.concepts[index].source), record, fuser.statistics_key(index))


def compute_concept_stats(base_model: str, edloras: list[str], device: str | torch.device,
                          settings: FusionSettings | None = None) -> list[Path]:
    """Load the base, record each ED-LoRA's own-model statistics and write them beside the file."""
    from ..models import model_identity, resolve_dtype, resolve_source
    from ..pipelines import EDLoRAPipeline
    from .concepts import ConceptSpec, load_concepts

    concepts = load_concepts([ConceptSpec(str(p)) for p in edloras])
    source, local = resolve_source(base_model)
    dtype = resolve_dtype("auto", device)
    pipe = EDLoRAPipeline.from_pretrained(source, local_files_only=local, torch_dtype=dtype, safety_checker=None,
                                          requires_safety_checker=False).to(device)
    pipe.set_progress_bar_config(disable=True)
    fuser = Fuser(pipe, concepts, settings, base_model=model_identity(base_model))
    try:
        return [write_concept_stats(fuser, index) for index in range(len(concepts))]
    finally:
        fuser.restore_base()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write fusion statistics beside ED-LoRA files (default fusion settings).")
    parser.add_argument("edloras", nargs="+", help="ED-LoRA files")
    parser.add_argument("--base-model", required=True, help="the base model the concepts were tuned on")
    parser.add_argument("--height", type=int, default=None, help="trajectory height (default: native)")
    parser.add_argument("--width", type=int, default=None, help="trajectory width (default: native)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    settings = FusionSettings(height=args.height, width=args.width)
    for path in compute_concept_stats(args.base_model, args.edloras, args.device, settings):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
