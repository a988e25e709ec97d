"""Shared fixtures: a tiny SD-1.x-shaped model saved as a diffusers folder (no downloads) and demo data."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never touch the network in tests
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

REPO = Path(__file__).resolve().parents[1]
DEMO_CONCEPTS = REPO / "demo" / "concepts"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from mos_lightning.tiny import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny-sd")


@pytest.fixture
def concept_dir(tmp_path) -> Path:
    """A writable copy of the redball demo concept (images, captions/, masks/)."""
    return Path(shutil.copytree(DEMO_CONCEPTS / "redball", tmp_path / "redball"))
