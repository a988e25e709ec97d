"""Evaluation reuses the images already on disk (an interrupted protocol of thousands of images resumes), which is
right only when the same method would make them again. Each method's image folder keeps ``made_by.json``: the
method's settings, the sampling settings, and the content (SHA-256) of every model file it reads — the same
principle as a ``predict`` folder's ``inputs.json`` (:mod:`mos_lightning.result_folder`). A rerun whose method
differs is refused by name before anything loads, instead of scoring the old images as the new method's."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from ..atomic import write_json
from ..result_folder import content_changes, fingerprints, weight_files

RECORD = "made_by.json"
SAMPLING = ("scheduler", "num_inference_steps", "guidance_scale", "negative_prompt", "height", "width")


def method_record(method, hparams, known: dict | None = None) -> dict:
    """What makes ``method``'s images: its fields, the sampling settings and its model files' contents."""
    files = weight_files(method.base_model, list((method.edloras or {}).values()))
    return {"settings": {**asdict(method), **{k: hparams[k] for k in SAMPLING}},
            "files": fingerprints(files, (known or {}).get("files"))}


def check_method_images(folder: Path, method, hparams) -> dict:
    """Refuse when ``folder`` holds images made by another method or other model contents; return the record."""
    previous = folder / RECORD
    known = json.loads(previous.read_text()) if previous.is_file() else None
    current = method_record(method, hparams, known)
    if known is None or not any(folder.rglob("*.png")):
        return current
    differ = [f"{key}: {known['settings'].get(key)!r} → {value!r}" for key, value in current["settings"].items()
              if known["settings"].get(key) != value]
    differ += content_changes(known["files"], current["files"])
    if differ:
        raise ValueError(f"{folder} holds images of method {method.name} made otherwise ({'; '.join(differ)}); they "
                         "would be scored as this method's: delete that folder, give the method another name, or pass "
                         "--model.init_args.reuse_images false to make every image again")
    return current


def record_method_images(folder: Path, record: dict) -> None:
    write_json(folder / RECORD, record)
