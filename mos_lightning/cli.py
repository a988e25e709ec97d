"""The ``mos-lightning`` command: a LightningCLI over every task and data module."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback


class SaveConfig(SaveConfigCallback):
    """Saves the resolved config beside the logs; for ``predict`` (usually without a logger) beside the
    images instead (``<data output_dir>/config.yaml``), so results carry the settings that made them."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        output_dir = getattr(trainer.datamodule, "output_dir", None)
        if stage != "predict" or output_dir is None or self.already_saved:
            return super().setup(trainer, pl_module, stage)
        if trainer.is_global_zero:
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            self.parser.save(self.config, str(Path(output_dir) / self.config_filename), skip_none=False,
                             overwrite=True, multifile=self.multifile)
        self.already_saved = True


def build_cli(args: list[str] | None = None, run: bool = True) -> LightningCLI:
    """Parse (and with ``run`` execute) ``{fit,validate,test,predict} --config …``; ``args`` lets tests call it in-process."""
    import mos_lightning.data  # noqa: F401  (registers subclasses for class_path resolution)
    import mos_lightning.tasks  # noqa: F401

    return LightningCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=SaveConfig,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``mos-lightning`` console script and ``python -m mos_lightning``."""
    build_cli(args)


if __name__ == "__main__":
    main()
