import torch
from diffusers import StableDiffusionPipeline

from mos_lightning.attention import cross_attention_layers
from mos_lightning.models import load_base_model


def test_tiny_model_has_sd15_cross_attention_layout(tiny_model_dir):
    base = load_base_model(str(tiny_model_dir))
    layers = cross_attention_layers(base.unet)
    assert base.num_layers == len(layers) == 16
    # the method's order: 6 down, 1 mid, 9 up
    assert [n.split(".")[0] for n in layers] == ["down_blocks"] * 6 + ["mid_block"] + ["up_blocks"] * 9
    assert len(base.tokenizer) == 49408
    assert base.tokenizer("a photo of a man", add_special_tokens=False).input_ids == [320, 1125, 539, 320, 786]


def test_tiny_model_reloads_bit_exactly(tiny_model_dir, tmp_path):
    first = StableDiffusionPipeline.from_pretrained(tiny_model_dir, local_files_only=True)
    first.save_pretrained(tmp_path / "again")
    second = StableDiffusionPipeline.from_pretrained(tmp_path / "again", local_files_only=True)
    for name in ("unet", "vae", "text_encoder"):
        a, b = getattr(first, name).state_dict(), getattr(second, name).state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
