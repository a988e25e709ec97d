"""The ``mos-lightning`` command: a LightningCLI over every task and data module."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback


class SaveConfig(SaveConfigCallback):
    """Saves the resolved config beside the logs; in a run without a logger (sampling, fusion) beside the
    results instead — the data module's ``output_dir`` for ``predict``, else the model's — so results carry
    the settings that made them, and nothing lands in the working directory."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        folder = None if trainer.loggers or self.already_saved else results_dir(trainer, pl_module, stage)
        if folder is None:
            return super().setup(trainer, pl_module, stage)
        if trainer.is_global_zero:
            Path(folder).mkdir(parents=True, exist_ok=True)
            self.parser.save(self.config, str(Path(folder) / self.config_filename), skip_none=False,
                             overwrite=True, multifile=self.multifile)
        self.already_saved = True


def results_dir(trainer, pl_module, stage: str) -> str | None:
    data_dir = getattr(trainer.datamodule, "output_dir", None)
    if stage == "predict" and data_dir is not None:
        return str(data_dir)
    return getattr(pl_module.hparams, "output_dir", None)


class MosLightningCLI(LightningCLI):
    """LightningCLI that refuses a subcommand a task does not run under (a task's ``subcommands``), by name."""

    def _check_subcommand(self, subcommand: str) -> None:
        allowed = getattr(self.model, "subcommands", None)
        if allowed and subcommand not in allowed:
            name = type(self.model).__name__
            raise ValueError(f"{name} runs under `{' / '.join(allowed)}`, not `{subcommand}`: "
                             f"mos-lightning {allowed[0]} --config <the same config>")

    def before_fit(self) -> None:
        self._check_subcommand("fit")

    def before_validate(self) -> None:
        self._check_subcommand("validate")

    def before_test(self) -> None:
        self._check_subcommand("test")

    def before_predict(self) -> None:
        self._check_subcommand("predict")


def build_cli(args: list[str] | None = None, run: bool = True) -> LightningCLI:
    """Parse (and with ``run`` execute) ``{fit,validate,test,predict} --config …``; ``args`` lets tests call it in-process."""
    import mos_lightning.data  # noqa: F401  (registers subclasses for class_path resolution)
    import mos_lightning.tasks  # noqa: F401

    return MosLightningCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=SaveConfig,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


BENIGN_WARNINGS = (
    r".*module\(s\) in eval mode.*",  # the frozen base is in eval mode on purpose
    r".*configure_optimizers. returned .None.*",  # evaluation trains nothing
    r".*IterableDataset. has .__len__. defined.*",  # our sharded datasets use no workers
    r".*isinstance\(treespec, LeafSpec\).*",  # Lightning internals vs newer torch
    r".*`torch_dtype` is deprecated.*",  # diffusers 0.42 renamed it; older versions only know torch_dtype
)


def quiet_libraries() -> None:
    """Keep the console for what the user needs: no library notices (transformers' optional-dependency notes,
    Lightning's hardware lines and product tips), no per-file weight-loading bars, no known-benign warnings."""
    import logging
    import os
    import warnings

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # read when transformers is first imported
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    for pattern in BENIGN_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for library in (diffusers_logging, transformers_logging):  # also when imported before the variables were set
        library.set_verbosity_error()
        library.disable_progress_bar()


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``mos-lightning`` console script and ``python -m mos_lightning``."""
    quiet_libraries()
    build_cli(args)


if __name__ == "__main__":
    main()
