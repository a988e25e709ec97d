import copy

import lightning.pytorch as pl
import torch
from conftest import DEMO_CONCEPTS
from helpers import make_data, make_task, make_trainer
from lightning.pytorch.callbacks import ModelCheckpoint


class CaptureStart(pl.Callback):
    """Remembers optimizer state and trainable weights when (resumed) training starts."""

    def on_train_start(self, trainer, module):
        self.optimizer = copy.deepcopy(trainer.optimizers[0].state_dict())
        self.weights = {k: v.detach().clone() for k, v in module.state_dict().items() if k in module.trainable_keys()}
        self.step = trainer.global_step


def test_checkpoint_holds_only_trainable_state_and_resumes_exactly(tiny_model_dir, tmp_path):
    pl.seed_everything(0)
    task = make_task(tiny_model_dir, tmp_path / "out")
    ckpt_cb = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=4, save_top_k=-1)
    make_trainer(tmp_path, 4, enable_checkpointing=True, callbacks=[ckpt_cb]).fit(task, make_data(DEMO_CONCEPTS / "redball"))
    path = next((tmp_path / "ckpt").glob("*.ckpt"))
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    assert set(checkpoint["state_dict"]) == task.trainable_keys()
    assert not any("vae." in k for k in checkpoint["state_dict"])

    resumed = make_task(tiny_model_dir, tmp_path / "out2")
    capture = CaptureStart()
    make_trainer(tmp_path, 6, callbacks=[capture]).fit(resumed, make_data(DEMO_CONCEPTS / "redball"), ckpt_path=path)
    assert capture.step == 4
    for key, value in checkpoint["state_dict"].items():
        assert torch.equal(capture.weights[key], value), key
    saved, restored = checkpoint["optimizer_states"][0], capture.optimizer
    assert saved["state"].keys() == restored["state"].keys()
    for idx, state in saved["state"].items():
        for name, value in state.items():
            assert torch.equal(restored["state"][idx][name], value), (idx, name)
    assert [g["lr"] for g in saved["param_groups"]] == [g["lr"] for g in restored["param_groups"]]
    assert resumed.global_step == 6


def test_nonsense_settings_are_refused_before_training(tiny_model_dir, tmp_path):
    import pytest

    with pytest.raises(ValueError, match="learning rates must be >= 0"):
        make_task(tiny_model_dir, tmp_path / "out", unet_lr=-1e-4)
    task = make_task(tiny_model_dir, tmp_path / "out")
    with pytest.raises(ValueError, match="max_steps is 0"):
        make_trainer(tmp_path, 0).fit(task, make_data(DEMO_CONCEPTS / "redball"))
    assert task.model is None  # refused before the base model loaded


def test_resuming_past_max_steps_is_refused(tiny_model_dir, tmp_path):
    import pytest

    ckpt_cb = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3, save_top_k=-1)
    make_trainer(tmp_path, 3, enable_checkpointing=True, callbacks=[ckpt_cb]).fit(
        make_task(tiny_model_dir, tmp_path / "out"), make_data(DEMO_CONCEPTS / "redball"))
    path = next((tmp_path / "ckpt").glob("*.ckpt"))
    with pytest.raises(ValueError, match="already at step 3 and trainer.max_steps is 2"):
        make_trainer(tmp_path, 2).fit(make_task(tiny_model_dir, tmp_path / "out2"), make_data(DEMO_CONCEPTS / "redball"),
                                      ckpt_path=path)
