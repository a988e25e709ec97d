"""The ``mos-lightning`` command: a LightningCLI over every task and data module."""

from __future__ import annotations

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI


def build_cli(args: list[str] | None = None, run: bool = True) -> LightningCLI:
    """Parse (and with ``run`` execute) ``{fit,validate,test,predict} --config …``; ``args`` lets tests call it in-process."""
    import mos_lightning.data  # noqa: F401  (registers subclasses for class_path resolution)
    import mos_lightning.tasks  # noqa: F401

    return LightningCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``mos-lightning`` console script and ``python -m mos_lightning``."""
    build_cli(args)


if __name__ == "__main__":
    main()
