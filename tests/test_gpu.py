"""GPU-only checks (skipped without CUDA): the tuning loop never waits for the GPU between logging steps.

On a CPU, tests/test_step_efficiency.py checks the step for ops that read values back; here CUDA's
own sync debugging catches everything that waits for the device (blocking copies included), first
in the step, then in a whole Lightning run with the progress bar on.
"""

from __future__ import annotations

import warnings

import lightning.pytorch as pl
import pytest
import torch
from helpers import make_data, make_task

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")


def _batch_on_gpu(concept_dir):
    dm = make_data(concept_dir, batch_size=2, crop_prob=0.0, flip_prob=0.0)
    dm.setup("fit")
    batch = next(iter(torch.utils.data.DataLoader(dm.dataset, batch_size=2)))
    return {k: v.cuda() if torch.is_tensor(v) else v for k, v in batch.items()}


@pytest.mark.parametrize("attn_reg", [0.0, 0.01])
def test_training_step_never_synchronises(tiny_model_dir, concept_dir, tmp_path, attn_reg):
    task = make_task(tiny_model_dir, tmp_path, mask_loss=attn_reg > 0, attn_reg_weight=attn_reg,
                     frozen_dtype="bfloat16")
    task.configure_model()
    task.cuda()
    batch = _batch_on_gpu(concept_dir)
    optimizer = torch.optim.AdamW(task.trainable_groups(), fused=True)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss, _ = task.compute_loss(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # first step: caches and lazy initialisation
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(2):
            step()
    finally:
        torch.cuda.set_sync_debug_mode(0)


def test_random_initial_embedding_under_a_cuda_default_device(tiny_model_dir, tmp_path):
    """Lightning calls configure_model under ``torch.device("cuda")``; the seeded CPU draw must still work
    (it raised 'Expected a cuda device type for generator' before: every GPU fit with ``<rand-σ>`` failed)."""
    from mos_lightning.tokens import initial_embedding

    task = make_task(tiny_model_dir, tmp_path)
    task.configure_model()
    with torch.device("cuda"):
        drawn = initial_embedding("<rand-0.013>", task.model.tokenizer, task.model.text_encoder, torch.Generator().manual_seed(0))
    expected = initial_embedding("<rand-0.013>", task.model.tokenizer, task.model.text_encoder, torch.Generator().manual_seed(0))
    assert torch.equal(drawn.cpu(), expected)  # the same seed gives the same embedding on every device


class SyncDebugFromStep(pl.Callback):
    """Turns CUDA's sync debugging on (as warnings) from ``start`` on and remembers the current step."""

    def __init__(self, start: int):
        self.start, self.step = start, -1

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.step = trainer.global_step
        if self.step == self.start:
            torch.cuda.set_sync_debug_mode("warn")

    def on_train_end(self, trainer, pl_module):
        torch.cuda.set_sync_debug_mode(0)


def test_a_lightning_run_synchronises_only_on_logging_steps(tiny_model_dir, concept_dir, tmp_path):
    task = make_task(tiny_model_dir, tmp_path / "out", frozen_dtype="bfloat16")
    debug = SyncDebugFromStep(start=2)  # after the first steps' lazy initialisation
    trainer = pl.Trainer(accelerator="gpu", devices=1, precision="bf16-mixed", max_steps=13, max_epochs=-1,
                         log_every_n_steps=6, logger=pl.loggers.CSVLogger(tmp_path), enable_checkpointing=False,
                         enable_model_summary=False, callbacks=[debug], default_root_dir=tmp_path)
    events = []
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *args, **kwargs: events.append((debug.step, str(message)))
        try:
            trainer.fit(task, make_data(concept_dir, num_workers=0))
        finally:
            torch.cuda.set_sync_debug_mode(0)
    syncing_steps = sorted({step for step, message in events if "synchroniz" in message})
    print("steps that synchronised:", syncing_steps)
    logging_steps = {s for s in range(13) if (s + 1) % 6 == 0}
    assert set(syncing_steps) <= logging_steps | {12}, syncing_steps  # 12: the last step (end of training)
