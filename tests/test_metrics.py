import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mos_lightning.metrics import (
    CLIPFeatures,
    ImageAlignment,
    TextAlignment,
    image_alignment_scores,
    text_alignment_scores,
)


def test_text_alignment_is_clipscore_with_a_per_sample_clamp():
    images = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    texts = torch.tensor([[1.0, 1.0], [-1.0, 0.0], [0.0, 5.0]])  # cos: 1/√2, -1 (→ 0), 1
    expected = torch.tensor([2.5 / 2**0.5, 0.0, 2.5], dtype=torch.float64)
    torch.testing.assert_close(text_alignment_scores(images, texts), expected)
    metric = TextAlignment()
    metric.update(images[:2], texts[:2])
    metric.update(images[2:], texts[2:])
    assert float(metric.compute()) == pytest.approx(float(expected.mean()))  # not clamp(mean), not ×100


def test_image_alignment_averages_clamped_pairs_and_is_one_against_itself():
    generated = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    references = torch.tensor([[1.0, 0.0], [-1.0, 1.0], [3.0, 3.0]])
    # row 0: cos 1, -1/√2 → 0, 1/√2 ; row 1: cos 0, 1/√2, 1/√2
    expected = torch.tensor([(1 + 0 + 2**-0.5) / 3, (0 + 2 * 2**-0.5) / 3], dtype=torch.float64)
    torch.testing.assert_close(image_alignment_scores(generated, references), expected)
    metric = ImageAlignment()
    metric.update(generated, references)
    assert float(metric.compute()) == pytest.approx(float(expected.mean()))


def test_clip_features_of_an_image_against_itself_align_perfectly(tmp_path):
    from mos_lightning.tiny import save_tiny_clip

    clip = CLIPFeatures(str(save_tiny_clip(tmp_path / "clip")))
    image = (np.random.default_rng(0).random((48, 40, 3)) * 255).astype(np.uint8)
    feats = clip.images([image])
    assert feats.shape == (1, 16)
    assert float(image_alignment_scores(feats, feats)) == pytest.approx(1.0)
    assert clip.texts(["A photo depicts a dog"]).shape == (1, 16)


def test_two_process_synced_metrics_equal_the_single_process_values():
    sys.path.insert(0, str(Path(__file__).parent))
    from ddp_metrics import data

    images, texts, references = data()
    text, image = TextAlignment(), ImageAlignment()
    text.update(images, texts)
    image.update(images, references)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MASTER_", "RANK", "WORLD_SIZE", "LOCAL_RANK"))}
    result = subprocess.run([sys.executable, str(Path(__file__).with_name("ddp_metrics.py")), port], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    synced = [float(v) for v in result.stdout.split()[-2:]]
    assert synced == pytest.approx([float(text.compute()), float(image.compute())], rel=1e-12)
