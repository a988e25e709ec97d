"""The training step stays GPU-friendly: no host reads of device values, and a UNet that compiles whole.

Both properties are about GPUs, but both can be checked on the CPU: a host read is an op that must
return a value to Python (``.item()``, ``nonzero``, ...), which on a GPU waits for all queued work;
a graph break splits the compiled UNet and, with it, any CUDA graph.
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
from helpers import make_data, make_task
from torch.utils._python_dispatch import TorchDispatchMode

# Ops whose result is a host value or has a data-dependent shape: on a GPU each one is a sync.
HOST_READS = {"_local_scalar_dense", "nonzero", "masked_select", "is_nonzero", "equal", "unique", "_unique2",
              "masked_scatter", "repeat_interleave"}


class HostReadAudit(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.__name__.split(".")[0] in HOST_READS:
            self.seen.append(func.__name__)
        return func(*args, **(kwargs or {}))


def _batch(concept_dir, batch_size=2):
    dm = make_data(concept_dir, batch_size=batch_size, crop_prob=0.0, flip_prob=0.0)
    dm.setup("fit")
    return next(iter(torch.utils.data.DataLoader(dm.dataset, batch_size=batch_size)))


@pytest.mark.parametrize("attn_reg", [0.0, 0.01])
def test_training_step_reads_nothing_back_to_the_host(tiny_model_dir, concept_dir, tmp_path, attn_reg):
    torch.manual_seed(0)
    task = make_task(tiny_model_dir, tmp_path, mask_loss=attn_reg > 0, attn_reg_weight=attn_reg)
    task.configure_model()
    batch = _batch(concept_dir)
    optimizer = torch.optim.AdamW(task.trainable_groups(), fused=True)  # fused: as on GPUs (no step.item())
    weight = task.model.concept_tokens.weight
    with HostReadAudit() as audit:
        loss, parts = task.compute_loss(batch)
        loss.backward()
        before = weight.detach().clone()
        optimizer.step()
        reached = before.norm(dim=-1).mean() >= task.hparams.max_embedding_norm  # the norm guard, as in optimizer_step
        weight.data.copy_(torch.where(reached, before, weight.detach()))
        optimizer.zero_grad()
    assert audit.seen == [], f"host reads in the training step: {audit.seen}"
    assert ("attn_reg" in parts) == (attn_reg > 0)


@pytest.mark.parametrize("record_maps", [False, True])
def test_unet_with_lora_and_layerwise_attention_compiles_as_one_graph(tiny_model_dir, tmp_path, record_maps):
    task = make_task(tiny_model_dir, tmp_path)
    task.configure_model()
    text, _ = task.model.encode(["a photo of <TOK>", "<TOK> on the beach"])
    latents = torch.randn(2, 4, 8, 8)
    timesteps = torch.tensor([3, 500])
    task.model.recorder.active = record_maps
    torch._dynamo.reset()
    explained = torch._dynamo.explain(task.model.unet)(latents, timesteps, text)
    assert explained.graph_break_count == 0, [r.reason for r in explained.break_reasons]
    assert explained.graph_count == 1


def test_compiled_text_encoder_swaps_in_the_current_concept_embeddings_without_recompiling(tiny_model_dir, tmp_path):
    from torch._dynamo.utils import counters

    task = make_task(tiny_model_dir, tmp_path)
    task.configure_model()
    prompts = ["a photo of <TOK>", "<TOK> on the beach"]
    weight = task.model.concept_tokens.weight
    with torch.no_grad():
        weight.normal_()
        eager, _ = task.model.encode(prompts)
        weight.mul_(2)  # as a training step would: new embeddings for the per-call hook to swap in
        eager_after_step, _ = task.model.encode(prompts)
        weight.div_(2)  # exactly back
    torch._dynamo.reset()
    counters.clear()
    task.model.text_encoder.compile(backend="eager")  # dynamo's capture (guards, graph breaks) without inductor's minutes
    with torch.no_grad():
        compiled, _ = task.model.encode(prompts)
        weight.mul_(2)
        compiled_after_step, _ = task.model.encode(prompts)
    torch.testing.assert_close(compiled, eager, rtol=0, atol=0)
    torch.testing.assert_close(compiled_after_step, eager_after_step, rtol=0, atol=0)
    assert not torch.equal(compiled, compiled_after_step)
    assert counters["stats"]["unique_graphs"] == 1 and counters["frames"]["ok"] == counters["frames"]["total"]


def test_vae_encoder_compiles_as_one_graph(tiny_model_dir, tmp_path):
    task = make_task(tiny_model_dir, tmp_path)
    task.configure_model()
    torch._dynamo.reset()
    explained = torch._dynamo.explain(task.model.vae.encoder)(torch.randn(2, 3, 64, 64))
    assert explained.graph_break_count == 0 and explained.graph_count == 1
