"""The files mos-lightning ships: its configs (``configs/``) and demo data (``demo/``: the miniature world's base
model and CLIP, the tiny demo concepts).

From a clone they are the checkout's top-level folders; an installed wheel carries the same folders inside the
package (``mos_lightning/configs``, ``mos_lightning/demo``: ``package-dir`` in pyproject.toml). The configs name
files the way a clone sees them (``base_model: demo/world/base``, ``prompt_file: configs/world/prompts/eval.yaml``),
so the command line finds them from anywhere: a path under ``configs/`` or ``demo/`` that does not exist where the
command runs is read from the shipped copy (:func:`locate`), and ``--config world/edlora`` names a shipped config
(:func:`config_by_name`). A file of the user's own with the same relative path always wins.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
SHIPPED_FOLDERS = ("configs", "demo")


def shipped_root() -> Path:
    """The folder that holds ``configs/`` and ``demo/``: the package in an installed wheel, else the checkout."""
    return PACKAGE if (PACKAGE / "configs").is_dir() else PACKAGE.parent


def shipped(relative: str) -> Path:
    """A shipped file or folder by its path in a checkout, e.g. ``shipped("demo/world/clip")``."""
    return shipped_root() / relative


def locate(path: str) -> str:
    """``path`` if it exists where the command runs (or is not under ``configs/`` / ``demo/``), else its shipped copy."""
    candidate = Path(path)
    if candidate.is_absolute() or not candidate.parts or candidate.parts[0] not in SHIPPED_FOLDERS or candidate.exists():
        return path
    copy = shipped_root() / candidate
    return str(copy) if copy.exists() else path


def config_by_name(name: str) -> str | None:
    """A shipped config by name: ``world/edlora``, ``world/edlora.yaml`` or ``configs/world/edlora.yaml``."""
    relative = name if name.startswith("configs/") else f"configs/{name}"
    for candidate in (relative, f"{relative}.yaml"):
        if (shipped_root() / candidate).is_file():
            return str(shipped_root() / candidate)
    return None


def shipped_configs() -> list[str]:
    """Every shipped config, by the name ``--config`` takes (``world/edlora``)."""
    root = shipped_root() / "configs"
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml")) if root.is_dir() else []


def resolve_config_arguments(args: list[str]) -> list[str]:
    """``--config NAME`` / ``--config=NAME`` / ``-c NAME`` → the file: as given if it exists, else a shipped one.
    An unknown name is left alone, for the parser's own error."""
    out, config_next = [], False
    for arg in args:
        if config_next:
            arg, config_next = _config_path(arg), False
        elif arg in ("--config", "-c"):
            config_next = True
        elif arg.startswith("--config="):
            arg = "--config=" + _config_path(arg.split("=", 1)[1])
        out.append(arg)
    return out


def _config_path(value: str) -> str:
    if value.lstrip().startswith(("{", "[")) or "\n" in value:  # inline YAML
        return value
    path = value if Path(value).exists() else config_by_name(value) or locate(value)
    if Path(path).is_file():
        check_yaml(Path(path))
    return path


def check_yaml(path: Path) -> None:
    """A config the YAML parser refuses gets an error naming the file (the parser's own says "<unicode string>")."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"config {path} is not UTF-8 text ({err}); save it as UTF-8") from err
    try:
        yaml.safe_load(text)
    except yaml.YAMLError as err:
        tabbed = [n for n, line in enumerate(text.splitlines(), 1) if "\t" in line[: len(line) - len(line.lstrip())]]
        if tabbed:
            raise ValueError(f"config {path}, line {tabbed[0]}: indented with a tab, which YAML does not allow; "
                             "indent with spaces") from err
        raise ValueError(f"config {path} is not valid YAML: {err}") from err


def relocate(value):
    """``value`` (a config's string, list or dict, nested) with every shipped path :func:`locate`\\ d."""
    if isinstance(value, str):
        return locate(value)
    if isinstance(value, list):
        return [relocate(v) for v in value]
    if isinstance(value, dict):
        return {k: relocate(v) for k, v in value.items()}
    from jsonargparse import Namespace

    if isinstance(value, Namespace):  # e.g. the evaluation's concept entries, parsed into namespaces
        relocate_namespace(value)
    return value


def relocate_namespace(config) -> None:
    """In place: every leaf of a jsonargparse namespace that names a shipped file the working folder lacks."""
    for key, value in list(config.items(branches=False)):
        moved = relocate(value)
        if moved != value:
            config[key] = moved
