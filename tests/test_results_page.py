"""The one page to look at: built from a run's files, checked in a real headless browser where one is installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from mos_lightning.images import save_png
from mos_lightning.results_page import write_results_page

BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


def fake_results(root):
    """The files a demo run leaves (tuning grid, predict grids, a regional image, fusion report, eval table)."""
    rng = np.random.default_rng(0)
    image = lambda h, w: rng.integers(0, 255, (h, w, 3), dtype=np.uint8)  # noqa: E731
    save_png(root / "logs/redball/lightning_logs/version_0/samples/step000060.png", image(128, 192),
             {"caption": "rows: prompts; columns: LoRA scales [0.0, 0.7, 1.0]"})
    save_png(root / "samples/redball/grids/0000-a-photo-of-tok.png", image(128, 128), {})
    save_png(root / "regional/0000-two/seed000000.png", image(64, 64),
             {"context_prompt": "a ball and a box", "regions": "a <redball> @ [0, 0, 0.5, 1]"})
    save_png(root / "regional/0000-two/seed000000.boxes.png", image(64, 64), {})
    held_out = {"fused": {"kept": 0.9, "stray": 0.2, "error": 0.22, "net": 0.8125},
                "naive": {"kept": 0.7, "stray": 1.5, "error": 1.53, "net": -0.05}}
    fidelity = {"redball": {"held_out": held_out, "text_encoder": {"fused": 0.001, "naive": 0.01},
                            "unet": {"fused": 0.002, "naive": 0.1}}}
    report = {"solver": {"class_path": "mos_lightning.fusion.solvers.ClosedForm"}, "concepts": [{"name": "redball"}],
              "fidelity": fidelity, "base_preservation": {"fused": {"text_encoder": 0.02, "unet": 0.1},
                                                          "naive": {"text_encoder": 0.04, "unet": 0.3}}}
    (root / "fusion").mkdir(parents=True)
    (root / "fusion/fusion_report.json").write_text(json.dumps(report))
    (root / "eval").mkdir()
    (root / "eval/table.csv").write_text("metric,method,redball,mean\nimage_alignment,fused,0.86,0.86\n")


def test_the_page_shows_every_kind_of_result(tmp_path):
    fake_results(tmp_path)
    page = write_results_page(tmp_path).read_text()
    for expected in ("While tuning", "step000060", "a photo of tok", "a ball and a box", "Fusion", "redball · unet",
                     "base (no concept) · unet", "0.1000", "<td>image_alignment</td>", "ClosedForm"):
        assert expected in page, expected
    # the held-out identity leads the fusion section: its numbers come before the in-sample diagnostics
    assert "0.8125" in page and "-0.0500" in page and page.index("0.8125") < page.index("Diagnostics")
    links = re.findall(r'src="([^"]+)"', page)
    assert len(links) == 4 and all((tmp_path / link).is_file() for link in links)


def test_an_empty_folder_gets_a_page_that_says_so(tmp_path):
    assert "No results found" in write_results_page(tmp_path).read_text()


@pytest.mark.skipif(BROWSER is None, reason="no Chromium or Chrome installed (apt install chromium)")
def test_the_page_renders_in_a_headless_browser_with_every_image_loaded(tmp_path):
    fake_results(tmp_path)
    page = write_results_page(tmp_path)
    flags = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000"]
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert 'data-images="4/4"' in dom  # the page's own check: every <img> loaded with a size
    shot = tmp_path / "shot.png"
    subprocess.run([*flags, "--window-size=1200,2400", f"--screenshot={shot}", page.as_uri()], capture_output=True,
                   timeout=120)
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (2400, 1200) and pixels.std() > 10  # rendered content, not a blank page
