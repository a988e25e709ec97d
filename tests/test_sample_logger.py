import lightning.pytorch as pl
import numpy as np
import torch
from helpers import make_data, make_task, make_trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image

from mos_lightning.callbacks import SampleLogger


class LossRecorder(Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(outputs["loss"].item())


def run(tiny_model_dir, concept_dir, root, with_logger: bool):
    pl.seed_everything(0)
    recorder = LossRecorder()
    callbacks = [recorder]
    if with_logger:
        callbacks.insert(0, SampleLogger(prompts=["a photo of <TOK>"], scales=[0.0, 1.0], seeds=[0, 1], every_n_steps=2,
                                         num_inference_steps=3, height=64, width=64))
    trainer = make_trainer(root, max_steps=4, callbacks=callbacks,
                           logger=TensorBoardLogger(root, name="tb") if with_logger else False)
    task = make_task(tiny_model_dir, root / "out", attn_reg_weight=0.01)
    trainer.fit(task, make_data(concept_dir))
    state = {k: v.detach().clone() for k, v in task.state_dict().items() if k in task.trainable_keys()}
    return recorder.losses, state, trainer


def test_sample_logger_logs_grids_and_leaves_training_unchanged(tiny_model_dir, concept_dir, tmp_path):
    plain_losses, plain_state, _ = run(tiny_model_dir, concept_dir, tmp_path / "plain", with_logger=False)
    losses, state, trainer = run(tiny_model_dir, concept_dir, tmp_path / "logged", with_logger=True)
    assert losses == plain_losses and len(losses) == 4
    assert state.keys() == plain_state.keys() and all(torch.equal(state[k], plain_state[k]) for k in state)
    samples = sorted((tmp_path / "logged" / "tb" / "version_0" / "samples").glob("*.png"))
    assert [p.name for p in samples] == ["step000002.png", "step000004.png"]  # every 2 steps; the end is step 4
    grid = np.asarray(Image.open(samples[-1]))
    assert grid.shape == (2 * 64, 2 * 64, 3)  # rows: 1 prompt × 2 seeds, columns: 2 scales
    assert not np.array_equal(grid[:64, :64], grid[:64, 64:])  # scale 0 vs 1 differ
    assert not np.array_equal(grid[:64, :64], grid[64:, :64])  # seeds differ

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "logged" / "tb" / "version_0"), size_guidance={"images": 0})
    events.Reload()
    assert [e.step for e in events.Images("samples")] == [2, 4]
    assert trainer.lightning_module.training
