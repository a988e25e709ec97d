"""The package's shape: one-way imports, no Lightning below the tasks, small files, callbacks from any checkout."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys

from conftest import REPO

PACKAGE = REPO / "mos_lightning"
# Lightning may be imported only by the layer that adapts components to it (and the CLI on top).
LIGHTNING_LAYERS = ("tasks", "data", "cli.py", "cli_help.py", "__main__.py")
# primitives ← models ← pipelines / fusion ← tasks ← cli: what each lower layer must never import
FORBIDDEN = {
    "fusion": ("mos_lightning.tasks", "mos_lightning.cli", "mos_lightning.data", "mos_lightning.callbacks"),
    "pipelines": ("mos_lightning.tasks", "mos_lightning.cli", "mos_lightning.fusion", "mos_lightning.callbacks"),
    "": ("mos_lightning.tasks", "mos_lightning.cli", "mos_lightning.callbacks"),  # top-level modules
}


def imports_of(path) -> set[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved)."""
    parts = path.relative_to(REPO).with_suffix("").parts
    package = parts[:-1] if path.name != "__init__.py" else parts[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            names.add(".".join(base + ([node.module] if node.module else [])))
    return names


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.parent.name != "callbacks":  # the checkout shim of the top-level callbacks/
            yield path, path.relative_to(PACKAGE)


def test_no_lightning_below_the_tasks_and_data_modules():
    offenders = [str(rel) for path, rel in modules()
                 if not str(rel).startswith(LIGHTNING_LAYERS)
                 and any(name.split(".")[0] == "lightning" for name in imports_of(path))]
    assert offenders == []


def test_imports_point_one_way():
    offenders = []
    for path, rel in modules():
        layer = rel.parts[0] if len(rel.parts) > 1 else ""
        if str(rel) in ("cli.py", "cli_help.py", "__main__.py"):  # the top of the graph
            continue
        for name in imports_of(path):
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN.get(layer, ())):
                offenders.append(f"{rel} imports {name}")
    assert offenders == []


def test_files_stay_small():
    big = [f"{rel}: {len(path.read_text().splitlines())}" for path, rel in modules()
           if len(path.read_text().splitlines()) > 275]
    assert big == []


def test_callbacks_import_from_the_checkout_they_sit_in(tmp_path):
    """From another checkout, mos_lightning.callbacks is that checkout's callbacks/, not the installed one's."""
    checkout = tmp_path / "checkout"
    shutil.copytree(PACKAGE, checkout / "mos_lightning", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "callbacks", checkout / "callbacks", ignore=shutil.ignore_patterns("__pycache__"))
    code = ("import mos_lightning, mos_lightning.callbacks as c, mos_lightning.callbacks.image_writer as w; "
            "print(mos_lightning.__file__); print(w.__file__); print(c.EvalReport.__module__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=checkout, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    package, writer, module = out.stdout.split()
    assert package.startswith(str(checkout)) and writer.startswith(str(checkout / "callbacks"))
    assert module == "mos_lightning.callbacks.eval_report"
