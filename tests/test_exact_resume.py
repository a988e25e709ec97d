"""A run interrupted at any step and resumed from its last checkpoint ends bit-identical to the uninterrupted run
(CPU): data order and position, augmentations, noise, optimizer and scheduler all continue where they were."""

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from conftest import DEMO_CONCEPTS
from helpers import make_data, make_task, make_trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from safetensors.torch import load_file

from mos_lightning.data.draws import TrainingDraws

CONCEPT = DEMO_CONCEPTS / "redball"
# random crops, tag shuffling and two workers: the augmentations must resume too; the letterboxed (uncropped) views
# go through the latent cache, which a resumed run starts empty
AUGMENTED = dict(geometry="centred", crop_prob=0.5, prompt_templates="object", num_workers=2)


class Interrupted(Exception):
    pass


class InterruptAt(pl.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise Interrupted(f"stopped at step {self.step}")


def test_a_run_resumed_after_an_interruption_ends_bit_identical(tiny_model_dir, tmp_path):
    pl.seed_everything(7)
    whole = tmp_path / "whole"
    make_trainer(tmp_path, 8).fit(make_task(tiny_model_dir, whole), make_data(CONCEPT, **AUGMENTED))

    pl.seed_everything(7)
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3, save_top_k=-1)
    with pytest.raises(Interrupted):  # between checkpoints: step 4 is lost and redone
        make_trainer(tmp_path, 8, enable_checkpointing=True, callbacks=[checkpoints, InterruptAt(5)]).fit(
            make_task(tiny_model_dir, tmp_path / "first"), make_data(CONCEPT, **AUGMENTED))
    last = max((tmp_path / "ckpt").glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    assert "step=3" in last.name

    pl.seed_everything(1234)  # a CLI rerun with seed_everything: true draws a new seed; the checkpoint keeps the old
    resumed = tmp_path / "resumed"
    make_trainer(tmp_path, 8).fit(make_task(tiny_model_dir, resumed), make_data(CONCEPT, **AUGMENTED),
                                  ckpt_path=str(last))
    expected, got = load_file(whole / "edlora.safetensors"), load_file(resumed / "edlora.safetensors")
    assert expected.keys() == got.keys()
    changed = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert not changed, f"{len(changed)} of {len(expected)} tensors differ, e.g. {changed[:3]}"


class Sized:
    """A stand-in dataset whose samples say which image and which draw made them."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self):
        return self.n

    def sample(self, index, rng):
        return {"image": torch.tensor(index), "draw": torch.tensor(rng.random())}


def test_the_stream_does_not_depend_on_workers_processes_or_where_it_starts():
    from torch.utils.data import DataLoader

    def batches(loader_workers=0, rank=0, world=1, batch=4, start=0, stop=6):
        draws = TrainingDraws(Sized(5), batch, seed=3, rank=rank, world_size=world, start=start, stop=stop)
        return list(DataLoader(draws, batch_size=None, num_workers=loader_workers))

    plain = batches()
    assert len(plain) == 6 and [b["batch_number"] for b in plain] == list(range(6))
    for expected, other in ((plain, batches(loader_workers=2)), (plain[2:], batches(start=2))):
        for a, b in zip(expected, other, strict=True):
            assert a["batch_number"] == b["batch_number"] and a["noise_seed"] == b["noise_seed"]
            assert torch.equal(a["image"], b["image"]) and torch.equal(a["draw"], b["draw"])
    # two processes of 2 split each global batch of 4 between them, in order
    halves = [batches(rank=r, world=2, batch=2) for r in (0, 1)]
    for number, whole in enumerate(plain):
        assert torch.equal(torch.cat([halves[0][number]["image"], halves[1][number]["image"]]), whole["image"])
    # every pass over the 5 images shows each once
    images = torch.cat([b["image"] for b in plain])[:20]
    for p in range(4):
        assert sorted(images[p * 5:(p + 1) * 5].tolist()) == list(range(5))
    assert len({b["noise_seed"] for b in plain}) == 6


def test_a_full_disk_at_the_end_keeps_the_tuned_concept_and_says_how_to_place_it(tiny_model_dir, tmp_path, monkeypatch):
    """Disk full when the ED-LoRA is written: a raw error after training, and nothing kept."""
    import errno
    import re
    import shutil
    import tempfile

    import mos_lightning.edlora_file as edlora_file
    from mos_lightning.edlora_file import load_edlora

    out = tmp_path / "out"
    real_save = edlora_file.save_file

    def full_disk(tensors, filename, metadata=None):  # the output folder's disk is full; others are not
        if out in Path(filename).parents:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(tensors, filename, metadata=metadata)

    monkeypatch.setattr(edlora_file, "save_file", full_disk)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    task = make_task(tiny_model_dir, out, export_every_n_steps=1)
    with pytest.warns(UserWarning, match="could not write .*edlora-step000001.safetensors .*training goes on"):
        with pytest.raises(OSError, match="No space left on device") as caught:
            make_trainer(tmp_path, 2).fit(task, make_data(CONCEPT))
    rescued = re.search(r"mv '([^']+)' '([^']+)'", str(caught.value))
    assert rescued and rescued.group(2) == str(out / "edlora.safetensors"), str(caught.value)
    monkeypatch.setattr(edlora_file, "save_file", real_save)  # space freed: the one command puts it in place
    shutil.move(rescued.group(1), rescued.group(2))
    saved = load_edlora(out / "edlora.safetensors")
    assert saved.extra["global_step"] == 2
    live = task.export()
    assert all(torch.equal(saved.unet_lora[k], v.cpu()) for k, v in live.unet_lora.items())


def test_training_without_max_steps_is_refused_before_loading(tiny_model_dir, tmp_path):
    task = make_task(tiny_model_dir, tmp_path / "out")
    with pytest.raises(ValueError, match="set trainer.max_steps: it is the training length"):
        make_trainer(tmp_path, -1, max_epochs=2).fit(task, make_data(CONCEPT))
    assert task.model is None
