"""The ``mos-lightning`` command: a LightningCLI over every task and data module."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import yaml
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities import rank_zero_warn

from .result_folder import FolderLock, changed_inputs, record_inputs


class SaveConfig(SaveConfigCallback):
    """Saves the resolved config beside the logs; in a run without a logger (sampling, fusion) beside the
    results instead — the data module's ``output_dir`` for ``predict``, else the model's — so results carry
    the settings that made them, and nothing lands in the working directory."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        if getattr(pl_module, "keeps_config", False):  # the task writes it with its results, atomically
            pl_module.config_text = self.parser.dump(self.config, skip_none=False)
            self.already_saved = True
            return
        folder = None if trainer.loggers or self.already_saved else results_dir(trainer, pl_module, stage)
        if folder is None:
            return super().setup(trainer, pl_module, stage)
        inputs = None
        if stage == "predict":
            if trainer.is_global_zero:  # one run writes into a folder at a time (see result_folder)
                self.lock = FolderLock(Path(folder))
                self.lock.acquire()
            inputs = check_same_settings(Path(folder), yaml.safe_load(self.parser.dump(self.config, skip_none=False)),
                                         trainer)
        if trainer.is_global_zero:
            Path(folder).mkdir(parents=True, exist_ok=True)
            if inputs is not None:
                record_inputs(Path(folder), inputs)
            self.parser.save(self.config, str(Path(folder) / self.config_filename), skip_none=False,
                             overwrite=True, multifile=self.multifile)
        self.already_saved = True

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if getattr(self, "lock", None) is not None:
            self.lock.release()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.teardown(trainer, pl_module, "")


def check_same_settings(folder: Path, config: dict, trainer) -> dict:
    """A rerun into a folder that already holds images reuses them (they are skipped as made); refuse when the
    folder's ``config.yaml`` says they were made with other model settings, or its ``inputs.json`` with model files
    of other contents, naming what differs. Returns the model files' fingerprints, to record."""
    data = trainer.datamodule
    previous = folder / "config.yaml"
    changed, inputs = changed_inputs(folder, config)
    if not previous.is_file() or not getattr(data, "skip_existing", False):
        return inputs
    made = sum((folder / item.name).is_file() for item in getattr(data, "all_items", []))
    old = (yaml.safe_load(previous.read_text()) or {}).get("model") or {}
    differ = _differences(old, config.get("model") or {}, "model") + changed
    if made and differ:
        raise ValueError(f"{folder} already holds {made} of these images, made with other settings ({'; '.join(differ)})"
                         "; a rerun reuses images only when the settings match: choose another "
                         "--data.init_args.output_dir, delete the folder, or pass --data.init_args.skip_existing false "
                         "to make every image again")
    return inputs


def _differences(old, new, where: str) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for key in sorted(set(old) | set(new)) for d in _differences(old.get(key), new.get(key), f"{where}.{key}")]
    return [] if old == new else [f"{where}: {old!r} → {new!r}"]


GPU_PRECISIONS = ("16-mixed", "bf16-mixed", "16-true", "bf16-true", "16", "bf16", 16)


def run_on_cpu_only_settings(config) -> None:
    """The recipes are written for GPUs (bf16 mixed precision, bf16 frozen weights); on a machine without one they
    would run several times slower (or not at all), so there these settings fall back to float32, with a note."""
    trainer = config.get("trainer")
    if trainer is None or torch.cuda.is_available() or trainer.get("accelerator") not in ("auto", "cpu", None):
        return
    changed = []
    if trainer.get("precision") in GPU_PRECISIONS:
        changed.append(f"trainer.precision {trainer.precision} → 32-true")
        trainer.precision = "32-true"
    init_args = (config.get("model") or {}).get("init_args") if config.get("model") is not None else None
    if init_args is not None and init_args.get("frozen_dtype") in ("bfloat16", "float16"):
        changed.append(f"model.init_args.frozen_dtype {init_args.frozen_dtype} → float32")
        init_args.frozen_dtype = "float32"
    if changed:
        print(f"no GPU: running on the CPU with {'; '.join(changed)} (GPU-only settings of the config)", flush=True)


def _plain(value) -> str:
    """Comparable text of a setting (tuples and lists alike; components by their class)."""
    if isinstance(value, dict) and "class_path" in value:
        return value["class_path"]
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_plain(v) for v in value) + "]"
    return str(value)


def results_dir(trainer, pl_module, stage: str) -> str | None:
    data_dir = getattr(trainer.datamodule, "output_dir", None)
    if stage == "predict" and data_dir is not None:
        return str(data_dir)
    return getattr(pl_module.hparams, "output_dir", None)


def check_checkpoint_file(path: Path) -> None:
    """``--ckpt_path`` takes a Lightning checkpoint; an ED-LoRA (safetensors) given there failed with an unpickling
    error that advised ``weights_only=False``: say what the file is and what to give instead."""
    with path.open("rb") as f:
        head = f.read(9)  # safetensors: an 8-byte header length, then the JSON header
    if path.suffix == ".safetensors" or (len(head) == 9 and head[8:] == b"{" and int.from_bytes(head[:8], "little") < 10**8):
        raise ValueError(f"--ckpt_path {path} is a safetensors file (an ED-LoRA or statistics file), not a training "
                         "checkpoint: resume from a .ckpt under <trainer.default_root_dir>/…/checkpoints/, or sample "
                         "the ED-LoRA with `mos-lightning predict --config configs/sample/edlora.yaml`")


class MosLightningCLI(LightningCLI):
    """LightningCLI that refuses a subcommand a task does not run under (a task's ``subcommands``), by name, and
    resumes with the command line's settings (see :meth:`_parse_ckpt_path`)."""

    def _parse_ckpt_path(self) -> None:
        """Lightning applies a checkpoint's hyper-parameters over the command line, silently: a resume with
        another ``output_dir`` wrote into the old one, replacing a finished ED-LoRA. Here the command line wins
        (a config without a model still takes the checkpoint's); what differs is printed, and a setting that
        changes the trained tensors (e.g. ``lora_rank``) fails by name when the checkpoint loads."""
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        model = self.config[subcommand].get("model") if ckpt_path else None
        if ckpt_path and Path(ckpt_path).is_file():
            check_checkpoint_file(Path(ckpt_path))
        if not ckpt_path or not Path(ckpt_path).is_file() or model is None:
            return super()._parse_ckpt_path()
        saved = dict(torch.load(ckpt_path, weights_only=True, map_location="cpu").get("hyper_parameters", {}))
        class_path = saved.pop("_class_path", None)
        if class_path and class_path != model.class_path:
            raise ValueError(f"{ckpt_path} was written by {class_path}, not {model.class_path}: resume it with the "
                             "config that made it")
        given = model.init_args.as_dict() if model.get("init_args") is not None else {}
        changed = [f"{key}: {_plain(saved[key])} → {_plain(given[key])}" for key in sorted(saved)
                   if key in given and not key.startswith("_") and _plain(saved[key]) != _plain(given[key])]
        if changed:
            rank_zero_warn(f"resuming {ckpt_path} with the command line's settings, which differ from the "
                           f"checkpoint's: {'; '.join(changed)}")

    def _check_subcommand(self, subcommand: str) -> None:
        allowed = getattr(self.model, "subcommands", None)
        if allowed and subcommand not in allowed:
            name = type(self.model).__name__
            raise ValueError(f"{name} runs under `{' / '.join(allowed)}`, not `{subcommand}`: "
                             f"mos-lightning {allowed[0]} --config <the same config>")

    def before_instantiate_classes(self) -> None:
        from .resources import relocate_namespace

        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else self.config
        relocate_namespace(config)  # `demo/world/base` etc. found in the installed package from any folder
        run_on_cpu_only_settings(config)

    def _instantiate_trainer(self, config: dict, callbacks: list):
        """Lightning's default progress bar is replaced by one that counts steps (see ``StepProgressBar``)."""
        from lightning.pytorch.callbacks import ProgressBar

        from mos_lightning.callbacks import StepProgressBar

        given = config.get("callbacks") or []
        present = [*(given if isinstance(given, list) else [given]), *callbacks]
        if config.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in present):
            callbacks = [*callbacks, StepProgressBar()]
        return super()._instantiate_trainer(config, callbacks)

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

    from .cli_help import KeepLines, project_help
    from .resources import resolve_config_arguments

    if args is None:  # `--config world/edlora`: a shipped config by name
        sys.argv[1:] = resolve_config_arguments(sys.argv[1:])
    elif isinstance(args, list):
        args = resolve_config_arguments(args)
    subcommands = ("fit", "validate", "test", "predict")
    return MosLightningCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=SaveConfig,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"formatter_class": KeepLines,  # subcommand parsers take the main parser's formatter
                       **{s: {"description": f"mos-lightning {s}: this project's tasks, data modules, callbacks and "
                              "configs are listed at the end of this help.", "epilog": project_help(s)}
                          for s in subcommands}},
        args=args,
        run=run,
    )


BENIGN_WARNINGS = (
    r".*module\(s\) in eval mode.*",  # the frozen base is in eval mode on purpose
    r".*configure_optimizers. returned .None.*",  # evaluation trains nothing
    r".*IterableDataset. has .__len__. defined.*",  # our sharded datasets use no workers
    r".*isinstance\(treespec, LeafSpec\).*",  # Lightning internals vs newer torch
    r".*`torch_dtype` is deprecated.*",  # diffusers 0.42 renamed it; older versions only know torch_dtype
    r".*smaller than the logging interval.*",  # about per-epoch logging; our runs log per step
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
    for name in ("lightning.pytorch", "lightning.fabric"):  # hardware lines, tips, "Seed set to 0"
        logging.getLogger(name).setLevel(logging.WARNING)
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
