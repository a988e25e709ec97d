"""The wheel is the product: built from this checkout, installed into a fresh virtualenv and run from a folder
outside the checkout, it must hold the world package, the shipped configs (by name) and the world's models.

Offline: the wheel is built without build isolation (setuptools comes with the test extras) and installed with
``--no-index --no-deps``; the fresh venv reaches torch and the other dependencies through a path file pointing at
this environment's site-packages (a plain path line, so this environment's editable install of mos-lightning is
not picked up: mos_lightning must come from the wheel)."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile

import pytest
from conftest import REPO


def _run(args, cwd, timeout=600):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": "", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python, console script, a working folder outside the checkout) of a fresh venv holding the built wheel."""
    root = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", root / "dist", REPO],
         cwd=root)
    (wheel,) = (root / "dist").glob("mos_lightning-*.whl")
    _run([sys.executable, "-m", "venv", root / "venv"], cwd=root)
    python = root / "venv" / "bin" / "python"
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=root).strip()
    (root / "venv" / site.split(str(root / "venv") + "/", 1)[1] / "dependencies.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n")
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", wheel], cwd=root)
    work = root / "work"
    work.mkdir()
    return python, root / "venv" / "bin" / "mos-lightning", work, wheel


def test_the_wheel_holds_the_world_the_configs_and_the_models(installed):
    *_, wheel = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in ("mos_lightning/world/claims.py", "mos_lightning/callbacks/image_writer.py",
                     "mos_lightning/configs/world/edlora.yaml", "mos_lightning/configs/edlora/object.yaml",
                     "mos_lightning/demo/world/base/model_index.json", "mos_lightning/demo/world/clip/config.json"):
        assert expected in names, expected
    assert any(n.startswith("mos_lightning/demo/world/base/unet/") and n.endswith(".safetensors") for n in names)


def test_the_installed_wheel_runs_outside_the_checkout(installed):
    python, script, work, _ = installed
    where = _run([python, "-c", "import mos_lightning; print(mos_lightning.__file__)"], cwd=work)
    assert str(REPO) not in where and "site-packages" in where  # the wheel's copy, not this checkout
    shown = _run([script, "fit", "--help"], cwd=work)
    assert "world/edlora" in shown and "edlora/object" in shown and str(REPO / "mos_lightning") not in shown
    _run([python, "-m", "mos_lightning.world", "concepts", "outputs/world/concepts"], cwd=work)
    _run([script, "fit", "--config", "world/edlora", "--config", "world/concepts/buoyring", "--trainer.max_steps", "2",
          "--trainer.callbacks", "[]", "--trainer.logger", "false", "--model.init_args.fusion_stats", "false"], cwd=work)
    assert (work / "outputs/world/edlora/buoyring/edlora.safetensors").is_file()  # the shipped world base, found
