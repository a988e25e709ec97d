"""Writing a tuned concept when its folder cannot take it (disk full, quota, a vanished mount): hours of training
must not end in a raw ``OSError`` with nothing kept. The ED-LoRA goes to a rescue copy in the temporary folder
(usually another filesystem), and the error says where it is and the one command that puts it in place — the
export is retried by moving a file, not by training again."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_warn

from ..edlora_file import EDLoRA, save_edlora


def rescue_path(path: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(tempfile.gettempdir()) / "mos-lightning-rescue" / f"{path.stem}-{stamp}-{os.getpid()}{path.suffix}"


def save_or_rescue(path: str | Path, edlora: EDLoRA) -> Path:
    """Write ``edlora`` to ``path``; if that fails, to a rescue copy, then raise an ``OSError`` naming both."""
    path = Path(path)
    try:
        return save_edlora(path, edlora)
    except OSError as error:
        reason = error.strerror or str(error)
        rescue = rescue_path(path)
        try:
            save_edlora(rescue, edlora)
        except OSError as second:
            raise OSError(error.errno, f"could not write {path} ({reason}), nor a rescue copy {rescue} "
                          f"({second.strerror or second}): the trained state after the last checkpoint is lost; free "
                          "space and resume from the newest checkpoint with --ckpt_path (only the steps after it "
                          "train again)") from error
        raise OSError(error.errno, f"could not write {path} ({reason}). The tuned concept is safe in {rescue}: free "
                      f"space (or pick another output_dir), then put it in place without training again: "
                      f"mv '{rescue}' '{path}'") from error


def save_during_training(path: str | Path, edlora: EDLoRA) -> Path | None:
    """An intermediate export (``export_every_n_steps``): a failure is a warning, training goes on."""
    try:
        return save_edlora(path, edlora)
    except OSError as error:
        rank_zero_warn(f"could not write {path} ({error.strerror or error}); training goes on, and the final "
                       "ED-LoRA is still written (or rescued, with a note) at the end")
        return None
