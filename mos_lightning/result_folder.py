"""A folder of sampled images remembers what made them, by content, and has one writer at a time.

A rerun into a folder reuses the images already there (an interrupted run resumes). That is only right when the
same models would make them again: comparing paths was not enough (an ED-LoRA re-tuned into the same path, a model
folder fused again). So the folder keeps ``inputs.json``: for every model file the run read (the ED-LoRA files, the
base model folder's weights), its size, modification time and SHA-256. A rerun compares contents; a file whose size
and time are unchanged is not hashed again (like ``make``), so a rerun of an unchanged SD 1.5 costs nothing.

Two runs writing into one folder at once would mix their images under one ``config.yaml``: :class:`FolderLock`
holds ``.writer.lock`` (the holder's host, process id and start time) for the run's length; a second run is refused,
naming the holder; a lock whose process is gone (same host) is taken over with a note.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from pathlib import Path

from .atomic import _running, write_json

INPUTS_FILE = "inputs.json"
LOCK_FILE = ".writer.lock"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".ckpt")


def model_files(config: dict) -> list[Path]:
    """The files whose contents decide the images: the ED-LoRA files and a local base model folder's weights."""
    args = (config.get("model") or {}).get("init_args") or {}
    return weight_files(args.get("base_model"), args.get("edloras") or [])


def weight_files(base_model: str | None, edloras) -> list[Path]:
    """The ``edloras`` files that exist and, when ``base_model`` is a local folder, its weight files."""
    files = [Path(p) for p in edloras if Path(p).is_file()]
    base = Path(str(base_model or ""))
    if base.is_dir():
        files += sorted(p for p in base.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    return files


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprints(files: list[Path], known: dict | None = None) -> dict[str, dict]:
    """``{resolved path: {size, mtime_ns, sha256}}``; a hash in ``known`` is reused when size and time match."""
    known = known or {}
    out = {}
    for path in files:
        stat, key = path.stat(), str(path.resolve())
        old = known.get(key) or {}
        same = old.get("size") == stat.st_size and old.get("mtime_ns") == stat.st_mtime_ns
        out[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                    "sha256": old["sha256"] if same and "sha256" in old else _sha256(path)}
    return out


def changed_inputs(folder: Path, config: dict) -> tuple[list[str], dict]:
    """(what differs from the models that made ``folder``'s images, the current fingerprints to record)."""
    previous = folder / INPUTS_FILE
    recorded = json.loads(previous.read_text()) if previous.is_file() else None
    current = fingerprints(model_files(config), recorded)
    if recorded is None:
        return [], current
    return content_changes(recorded, current), current


def content_changes(recorded: dict, current: dict) -> list[str]:
    """What differs between two :func:`fingerprints` records, one line per file, naming it."""
    old = {k: v["sha256"] for k, v in recorded.items()}
    new = {k: v["sha256"] for k, v in current.items()}
    differ = [f"{Path(k).name} changed since the images were made ({k})" for k in sorted(old.keys() & new.keys())
              if old[k] != new[k]]
    differ += [f"{Path(k).name} was not read then ({k})" for k in sorted(new.keys() - old.keys())]
    differ += [f"{Path(k).name} is no longer read ({k})" for k in sorted(old.keys() - new.keys())]
    return differ


def record_inputs(folder: Path, current: dict) -> None:
    write_json(folder / INPUTS_FILE, current)


class FolderLock:
    """One writer per result folder. ``acquire`` raises naming a live holder; a dead one's lock is taken over."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK_FILE
        self.held = False

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                pid = int(holder.get("pid", -1))
                if holder.get("host") == me["host"] and pid == me["pid"]:  # an earlier run of this process
                    self.path.unlink(missing_ok=True)
                    continue
                if holder.get("host") == me["host"] and not _running(pid):
                    print(f"note: taking over {self.path} from process {pid}, which is no longer running",
                          flush=True)
                    self.path.unlink(missing_ok=True)
                    continue
                raise RuntimeError(
                    f"{self.path.parent} is being written by another run (process {holder.get('pid')} on "
                    f"{holder.get('host')}, since {holder.get('started')}): two runs into one folder would mix their "
                    f"images; wait for it, choose another output_dir, or delete {self.path} if that run is gone"
                ) from None
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return

    def _holder(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False
