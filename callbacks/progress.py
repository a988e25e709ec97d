"""A progress bar that counts what a step-based run is made of: optimizer steps of ``max_steps``.

Tuning runs are step-based (``max_steps`` with ``max_epochs: -1``) over a handful of images, so Lightning's own
bar read "Epoch 19/-2" and restarted at every pass over the images. The CLI installs this bar in place of the
default; runs with ``max_epochs`` behave as before."""

from __future__ import annotations

from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import _update_n


class StepProgressBar(TQDMProgressBar):
    """``tuning: 40%|████      | 400/1000 [02:10<03:15, loss=0.12]`` for step-based runs; Lightning's bar otherwise."""

    @staticmethod
    def by_steps(trainer) -> bool:
        return trainer.max_steps > 0 and trainer.max_epochs in (None, -1)

    @property
    def train_description(self) -> str:  # the bar's first frame already says what it counts
        return "tuning (steps)" if self._trainer is not None and self.by_steps(self._trainer) else "Training"

    def on_train_start(self, trainer, *args) -> None:
        super().on_train_start(trainer, *args)
        if self.by_steps(trainer):  # from the first frame, not "Training: 0/?"
            self.train_progress_bar.set_description("tuning (steps)")
            self.train_progress_bar.reset(total=trainer.max_steps)
            _update_n(self.train_progress_bar, trainer.global_step)

    def on_train_epoch_start(self, trainer, *args) -> None:
        if not self.by_steps(trainer):
            return super().on_train_epoch_start(trainer, *args)
        bar = self.train_progress_bar
        if bar.total != trainer.max_steps:  # once per run (a resumed run starts at its step)
            bar.reset(total=trainer.max_steps)
            bar.initial = 0
            _update_n(bar, trainer.global_step)
        bar.set_description("tuning (steps)")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self.by_steps(trainer):
            return super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        bar, n = self.train_progress_bar, trainer.global_step
        if bar is not None and self._should_update(n, bar.total):
            _update_n(bar, n)
            bar.set_postfix(self.get_metrics(trainer, pl_module))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not self.by_steps(trainer):
            return super().on_train_epoch_end(trainer, pl_module)
        # one bar for the whole run: nothing to close between passes over the images

    def get_metrics(self, trainer, pl_module) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)  # the logger's version number: noise on a progress bar
        return metrics
