"""Bounded self-attention (``RegionalPipeline(bounded_steps=N)``, ``RegionalTask.bounded_steps``): while on, a
cell inside a box reads only its own box and the cells outside every box; off (the default, the reference's
behaviour) it changes nothing."""

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from helpers import sampling_pipe

from mos_lightning.attention.bounded import BoundedSelfAttnProcessor, bounded_mask
from mos_lightning.attention.regions import Region, RegionLayout
from mos_lightning.pipelines.regional import RegionalPipeline
from mos_lightning.tasks import RegionalTask


def test_the_mask_keeps_boxes_apart_and_lets_the_background_see_everything():
    # cells 0-1 in box A, 2-3 in box B, 3 also in box C (overlap), 4-5 in no box
    members = torch.tensor([[1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0], [0, 0, 0, 1, 0, 0]], dtype=torch.bool)
    allowed = bounded_mask(members)
    assert allowed[0, 1] and not allowed[0, 2] and not allowed[0, 3] and allowed[0, 4]
    assert allowed[2, 3] and allowed[3, 2] and not allowed[3, 0]
    assert allowed[4].all() and allowed[:, 4].all()  # the background reads and is read by every cell
    assert allowed.diagonal().all()


def test_a_bounded_box_does_not_see_the_other_box():
    """Change the features inside the right box: with bounding on, the left box's output does not move (it cannot
    read the right box); the background's does; with bounding off, the left box's moves too."""
    torch.manual_seed(0)
    attn = Attention(query_dim=16, heads=2, dim_head=8)
    layout = RegionLayout([(0, 0, 1, 0.5), (0, 0.5, 0.75, 1)], 64, 64)  # latent 8×8: 64 cells
    processor = BoundedSelfAttnProcessor(layout)
    hidden = torch.randn(1, 64, 16)
    left, right = layout.members(64)
    changed = hidden.clone()
    changed[0, right] += torch.randn(int(right.sum()), 16)
    background = ~(left | right)
    layout.bounded = True
    before, after = processor(attn, hidden)[0], processor(attn, changed)[0]
    torch.testing.assert_close(before[left], after[left])
    assert not torch.allclose(before[background], after[background])
    layout.bounded = False
    plain = AttnProcessor2_0()(attn, hidden)[0]
    torch.testing.assert_close(processor(attn, hidden)[0], plain)
    assert not torch.allclose(processor(attn, changed)[0][left], plain[left])


@pytest.fixture(scope="module")
def pipe(tiny_model_dir):
    return sampling_pipe(tiny_model_dir, "cat")


def test_bounded_steps_change_a_two_box_picture_and_nothing_without_boxes(pipe):
    def sample(bounded_steps, regions):
        return RegionalPipeline(pipe, bounded_steps=bounded_steps)(
            "a <cat> and a dog", regions, num_inference_steps=4, height=64, width=64,
            generator=torch.Generator().manual_seed(2))

    two = [Region("a <cat>", (0, 0, 64, 32)), Region("a dog", (0, 32, 64, 64))]
    assert not np.array_equal(sample(2, two), sample(0, two))
    # one box over everything: every cell shares it, so the mask allows all and the picture is unchanged
    whole = [Region("a <cat>", (0, 0, 1, 1))]
    assert np.abs(sample(4, whole).astype(int) - sample(0, whole)).max() <= 1


def test_negative_bounded_steps_are_refused():
    with pytest.raises(ValueError, match="bounded_steps must be >= 0"):
        RegionalTask(bounded_steps=-1)
