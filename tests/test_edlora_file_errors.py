"""A broken ED-LoRA file gets an error that names the file and says what to do, never a raw library error."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from mos_lightning.edlora_file import METADATA_KEY, ConceptInfo, EDLoRA, load_edlora, save_edlora


@pytest.fixture
def good(tmp_path):
    edlora = EDLoRA({"cat": ConceptInfo(["<cat1>", "<cat2>"])}, {"<cat1>": torch.randn(16, 8), "<cat2>": torch.randn(16, 8)})
    return save_edlora(tmp_path / "cat.safetensors", edlora)


def rewrite(path, tensors=None, meta=None):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        old_meta, old = json.loads(f.metadata()[METADATA_KEY]), {k: f.get_tensor(k) for k in f.keys()}
    meta_text = meta(old_meta) if callable(meta) else json.dumps(old_meta)
    save_file(tensors(old) if tensors else old, str(path), metadata={"format": "pt", METADATA_KEY: meta_text})


def test_truncated_file(good):
    good.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"cat.safetensors is not a readable safetensors file .*export the ED-LoRA"):
        load_edlora(good)


@pytest.mark.parametrize("meta", [lambda m: "{not json", lambda m: json.dumps({k: v for k, v in m.items() if k != "concepts"})])
def test_broken_or_incomplete_metadata(good, meta):
    rewrite(good, meta=meta)
    with pytest.raises(ValueError, match=r"cat.safetensors: its 'mos_lightning' metadata is broken or incomplete"):
        load_edlora(good)


def test_unknown_tensor_prefix(good):
    rewrite(good, tensors=lambda t: {**t, "extra.x": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"cat.safetensors: tensor 'extra.x' has an unknown prefix"):
        load_edlora(good)


def test_missing_embedding_is_named_with_the_file(good):
    rewrite(good, tensors=lambda t: {k: v for k, v in t.items() if k != "embedding.<cat2>"})
    with pytest.raises(ValueError, match=r"cat.safetensors: ED-LoRA has no embedding for token\(s\) \['<cat2>'\]"):
        load_edlora(good)


def test_reference_pth_without_embeddings(tmp_path):
    torch.save({"params": {"new_concept_embedding": {}, "unet": {}}}, tmp_path / "empty.pth")
    with pytest.raises(ValueError, match=r"empty.pth holds no concept embeddings"):
        load_edlora(tmp_path / "empty.pth")
