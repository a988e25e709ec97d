"""``mos_lightning.callbacks`` from a source checkout: the callbacks live in the repository's top-level
``callbacks/`` folder (the project's agreed layout). An installed wheel packages that folder here
directly (``package-dir`` in pyproject.toml) and never sees this file; from a checkout, this file makes
``mos_lightning.callbacks`` the checkout's own ``callbacks/``, whichever copy is installed."""

from pathlib import Path

_FOLDER = Path(__file__).resolve().parents[2] / "callbacks"
__path__ = [str(_FOLDER)]  # submodules (eval_report, image_writer, …) come from that folder
exec(compile((_FOLDER / "__init__.py").read_text(), str(_FOLDER / "__init__.py"), "exec"))
