"""What ``mos-lightning <subcommand> --help`` shows first: this project's tasks with their options, data modules,
callbacks and shipped configs (LightningCLI's own help lists only the trainer's options; a task's hide behind
``--model.help CLASS``)."""

from __future__ import annotations

import inspect
import re
import textwrap

from jsonargparse import DefaultHelpFormatter

from .resources import shipped

# Which shipped configs (globs under configs/) run under which subcommand.
CONFIG_FAMILIES = {
    "fit": ("edlora/*", "demo/edlora", "world/edlora", "demo/concepts/*", "world/concepts/*"),
    "predict": ("sample/*", "fusion/*", "regional/*", "demo/sample", "demo/fusion", "demo/regional", "world/sample",
                "world/fusion", "world/regional"),
    "test": ("eval/*", "demo/eval", "world/eval"),
    "validate": (),
}


class KeepLines(DefaultHelpFormatter):
    """Keeps the line breaks of descriptions and epilogs (the project's help is laid out already)."""

    def _fill_text(self, text, width, indent):
        return "".join(indent + line for line in text.splitlines(keepends=True))


def _options(cls) -> str:
    names = [n for n in inspect.signature(cls.__init__).parameters if n not in ("self", "args", "kwargs")]
    return ", ".join(names)


def _summary(cls) -> str:
    """The docstring's first sentence, without reST markup."""
    paragraph = " ".join((inspect.getdoc(cls) or "").split("\n\n")[0].split())
    sentence = paragraph.split(". ")[0].rstrip(".")
    return re.sub(r":\w+:`~?(?:[\w.]+\.)?(\w+)`", r"\1", sentence).replace("``", "")


def _block(title: str, classes: list, key: str) -> list[str]:
    lines = [title]
    for cls in classes:
        lines += textwrap.wrap(f"{cls.__module__.rsplit('.', 1)[0]}.{cls.__name__}: {_summary(cls)}", 110,
                               initial_indent="  ", subsequent_indent="    ")
        lines += textwrap.wrap(f"--{key}.init_args.* : {_options(cls)}", 110, initial_indent="      ",
                               subsequent_indent="        ")
    return lines


def project_help(subcommand: str) -> str:
    import mos_lightning.data as data
    import mos_lightning.tasks as tasks
    from mos_lightning import callbacks

    task_classes = [t for t in (tasks.EDLoRATask, tasks.SamplingTask, tasks.RegionalTask, tasks.FusionTask,
                                tasks.EvalTask) if subcommand in getattr(t, "subcommands", ())]
    families: dict[str, list] = {"fit": [data.ConceptDataModule], "predict": [data.PromptDataModule, data.SceneDataModule,
                    data.FusionDataModule], "test": [data.EvalDataModule]}
    data_classes = families.get(subcommand, [])
    lines = ["mos-lightning: Mix-of-Show (ED-LoRA tuning, fusion, regional sampling, evaluation) on LightningCLI.",
             "Start from a config and override any option on the command line, e.g.",
             "  mos-lightning fit --config configs/edlora/object.yaml --data.init_args.concept_dir my/photos",
             "Every option of one class: --model.help CLASS / --data.help CLASS. All options: LightningCLI.md.", ""]
    if task_classes:
        lines += _block(f"Tasks for `{subcommand}` (--model.class_path):", task_classes, "model") + [""]
    if data_classes:
        lines += _block("Data modules (--data.class_path):", data_classes, "data") + [""]
    lines += textwrap.wrap("Callbacks (--trainer.callbacks): " + ", ".join(f"mos_lightning.callbacks.{n}"
                                                                       for n in callbacks.__all__), 110,
                           subsequent_indent="  ")
    configs = shipped("configs")
    listed = sorted(str(p.relative_to(configs).with_suffix("")) for family in CONFIG_FAMILIES.get(subcommand, ())
                    for p in configs.glob(f"{family}.yaml")) if configs.is_dir() else []
    if listed:
        lines += ["", f"Shipped configs (--config NAME, or the file under {configs}):"] + textwrap.wrap(", ".join(listed), 110, initial_indent="  ",
                                                             subsequent_indent="  ")
    if not task_classes:
        lines += ["", f"No task of this project runs under `{subcommand}`: tuning is `fit`, sampling and fusion "
                  "`predict`, evaluation `test`."]
    return "\n".join(lines)
