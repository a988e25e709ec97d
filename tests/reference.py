"""Where the reference implementation's golden numbers live (../shared/reference, see its README).

They are produced by running TencentARC/Mix-of-Show itself on a tiny SD-1.5-layout model. Set
``MOS_REFERENCE_DIR`` to use another copy; tests that need them skip, saying so, where they are absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
REFERENCE = Path(os.environ.get("MOS_REFERENCE_DIR", REPO.parent / "shared" / "reference"))


def reference_file(relative: str) -> Path:
    path = REFERENCE / relative
    if not path.exists():
        pytest.skip(f"reference golden {path} is absent (set MOS_REFERENCE_DIR to the shared/reference folder)")
    return path


def load_golden(relative: str) -> dict:
    return torch.load(reference_file(relative), map_location="cpu", weights_only=True)
