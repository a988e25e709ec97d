import json
import math

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO
from diffusers import T2IAdapter
from diffusers.models.attention_processor import Attention
from helpers import random_edlora, sampling_pipe
from PIL import Image

from mos_lightning.attention.regions import Region, RegionalCrossAttnProcessor, RegionLayout, feature_mask, feature_sizes
from mos_lightning.cli import build_cli
from mos_lightning.edlora_file import save_edlora
from mos_lightning.pipelines.regional import AdapterCondition, RegionalPipeline, draw_regions
from mos_lightning.tiny import save_tiny_adapter

LAYERS, T, C = 2, 5, 8


def attention_output(attn, hidden, contexts, boxes, layer=1):
    """One regional cross-attention call; ``contexts`` = [global, region…], each [1, LAYERS*T, C]."""
    layout = RegionLayout(boxes, 64, 64)  # latent 8×8 → 64 positions
    processor = RegionalCrossAttnProcessor(layer, LAYERS, layout)
    return processor(attn, hidden, torch.cat(contexts, dim=1))


def test_regional_attention_mixes_by_box_at_the_level_of_one_call():
    torch.manual_seed(0)
    attn = Attention(query_dim=16, cross_attention_dim=C, heads=2, dim_head=8)
    hidden = torch.randn(1, 64, 16)
    glob, a, b, other = (torch.randn(1, LAYERS * T, C) for _ in range(4))
    box_a, box_b = (0.0, 0.0, 1.0, 0.5), (0.25, 0.25, 0.75, 0.75)
    out = attention_output(attn, hidden, [glob, a, b], [box_a, box_b])[0]
    plain = {name: attention_output(attn, hidden, [ctx], [])[0] for name, ctx in (("g", glob), ("a", a), ("b", b))}
    in_a, in_b = feature_mask(box_a, 8, 8).flatten(), feature_mask(box_b, 8, 8).flatten()
    outside, only_a, both = ~(in_a | in_b), in_a & ~in_b, in_a & in_b
    assert outside.any() and only_a.any() and both.any()
    torch.testing.assert_close(out[outside], plain["g"][outside])
    torch.testing.assert_close(out[only_a], plain["a"][only_a])
    torch.testing.assert_close(out[both], (plain["a"][both] + plain["b"][both]) / 2)
    # outside every box nothing depends on the region prompts; inside it does
    changed = attention_output(attn, hidden, [glob, other, b], [box_a, box_b])[0]
    torch.testing.assert_close(changed[outside], out[outside])
    assert not torch.allclose(changed[only_a], out[only_a])
    # layer l reads copy l: a context differing only in layer 0 leaves layer 1 unchanged
    a0 = a.clone()
    a0[:, :T] += 1
    torch.testing.assert_close(attention_output(attn, hidden, [glob, a0, b], [box_a, box_b])[0], out)


@pytest.mark.parametrize("height,width", [(64, 64), (512, 512), (72, 40), (520, 776)])
def test_boxes_cover_their_cells_at_every_feature_resolution(height, width):
    g = torch.Generator().manual_seed(height + width)
    for _ in range(20):
        top, bottom = sorted(torch.rand(2, generator=g).tolist())
        left, right = sorted(torch.rand(2, generator=g).tolist())
        for h, w in feature_sizes(math.ceil(height / 8), math.ceil(width / 8), levels=3):
            box = (top, left, bottom, right)
            # outward: cell (i, j) is in the mask exactly when it overlaps the box (never empty)
            rows = [(i / h < bottom) and ((i + 1) / h > top) for i in range(h)]
            cols = [(j / w < right) and ((j + 1) / w > left) for j in range(w)]
            expected = torch.tensor(rows)[:, None] & torch.tensor(cols)[None]
            mask = feature_mask(box, h, w, "outward")
            assert mask.any() and torch.equal(mask, expected), (h, w, box)
            # inward (the reference): exactly when it lies wholly inside the box
            rows = [(i >= top * h) and (i + 1 <= bottom * h) for i in range(h)]
            cols = [(j >= left * w) and (j + 1 <= right * w) for j in range(w)]
            expected = torch.tensor(rows)[:, None] & torch.tensor(cols)[None]
            assert torch.equal(feature_mask(box, h, w), expected), (h, w, box)


def test_a_box_off_the_feature_grid_reads_its_prompt_where_the_reference_does():
    """The reference (``RegionT2I_AttnProcessor.region_rewrite``) gives a region the cells ``ceil(start · size)`` to
    ``floor(end · size)``: for [0.3, 0.1, 0.9, 0.6], rows 3–6 × columns 1–3 of 8×8, row 2 × column 1 of 4×4, and
    nothing of 2×2, where the whole map reads the global prompt."""
    box = (0.3, 0.1, 0.9, 0.6)
    cells = {size: torch.nonzero(feature_mask(box, size, size)).tolist() for size in (8, 4, 2)}
    assert cells[8] == [[r, c] for r in range(3, 7) for c in range(1, 4)]
    assert cells[4] == [[2, 1]] and cells[2] == []
    torch.manual_seed(0)
    attn = Attention(query_dim=16, cross_attention_dim=C, heads=2, dim_head=8)
    glob, region = torch.randn(1, LAYERS * T, C), torch.randn(1, LAYERS * T, C)
    for size in (4, 2):  # a 32×32 image: latent 4×4 (level 0), 2×2 (level 1)
        hidden = torch.randn(1, size * size, 16)
        layout = RegionLayout([box], 32, 32)
        out = RegionalCrossAttnProcessor(1, LAYERS, layout)(attn, hidden, torch.cat([glob, region], dim=1))[0]
        plain = RegionalCrossAttnProcessor(1, LAYERS, RegionLayout([], 32, 32))(attn, hidden, glob)[0]
        inside = feature_mask(box, size, size).flatten()
        torch.testing.assert_close(out[~inside], plain[~inside])
        assert inside.sum() == (1 if size == 4 else 0)
        if inside.any():
            assert not torch.allclose(out[inside], plain[inside])


@pytest.fixture(scope="module")
def pipe(tiny_model_dir):
    return sampling_pipe(tiny_model_dir, "cat", "dog")


def test_one_full_region_with_the_context_prompt_equals_plain_sampling(pipe):
    prompt = "a <cat> on a table"
    plain = pipe(prompt, num_inference_steps=4, height=64, width=64, output_type="np",
                 generator=torch.Generator().manual_seed(3)).images[0]
    regional = RegionalPipeline(pipe)(prompt, [Region(prompt, (0, 0, 1, 1))], num_inference_steps=4, height=64,
                                      width=64, generator=torch.Generator().manual_seed(3))
    plain = (plain * 255).round().astype(np.uint8)
    assert np.abs(regional.astype(int) - plain).max() <= 1
    two = RegionalPipeline(pipe)("a <cat> and a <dog>", [Region("a <cat>", (0, 0, 64, 32)),
                                                        Region("a <dog>", (0, 32, 64, 64), negative_prompt="")],
                                 num_inference_steps=4, height=64, width=64, generator=torch.Generator().manual_seed(3))
    assert two.shape == (64, 64, 3) and not np.array_equal(two, regional)
    assert draw_regions(two, [Region("a <cat>", (0, 0, 64, 32))]).shape == (64, 64, 3)


def test_adapter_weight_zero_is_no_adapter_and_two_adapters_work(pipe):
    channels = list(pipe.unet.config.block_out_channels)
    torch.manual_seed(0)
    pose = T2IAdapter(in_channels=3, channels=channels, num_res_blocks=1, downscale_factor=8)
    sketch = T2IAdapter(in_channels=1, channels=channels, num_res_blocks=1, downscale_factor=8)
    condition = Image.fromarray((np.random.default_rng(0).random((40, 30, 3)) * 255).astype(np.uint8))
    regional = RegionalPipeline(pipe)
    regions = [Region("a <cat>", (0.1, 0.1, 0.9, 0.5))]

    def run(conditions):
        return regional("a <cat> in a garden", regions, num_inference_steps=3, height=64, width=64,
                        generator=torch.Generator().manual_seed(0), conditions=conditions)

    none = run([])
    assert np.array_equal(run([AdapterCondition(pose, condition, 0.0)]), none)
    posed = run([AdapterCondition(pose, condition, 1.0)])
    assert not np.array_equal(posed, none)
    both = run([AdapterCondition(pose, condition, 1.0), AdapterCondition(sketch, condition, 0.8)])
    assert not np.array_equal(both, posed)
    with pytest.raises(ValueError, match="multiples of 64"):
        regional("x", regions, height=96, width=64, conditions=[AdapterCondition(pose, condition)])


def scene_args(model_dir, files, scene_file, out, adapter):
    return ["predict", "--config", str(REPO / "configs/demo/regional.yaml"),
            "--model.init_args.base_model", str(model_dir),
            "--model.init_args.edloras", json.dumps([str(f) for f in files]),
            "--model.init_args.adapters", json.dumps({"sketch": str(adapter)}),
            "--model.init_args.num_inference_steps", "3",
            "--data.init_args.scene_file", str(scene_file), "--data.init_args.output_dir", str(out),
            "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"]


@pytest.fixture(scope="module")
def regional_inputs(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("regional")
    files = [save_edlora(root / f"{n}.safetensors", random_edlora(tiny_model_dir, n, seed=i, lora_std=0.1))
             for i, n in enumerate(("redball", "bluecube"))]
    return files, save_tiny_adapter(root / "adapter")


def test_regional_predict_writes_images_and_box_debug_images(tiny_model_dir, regional_inputs, tmp_path):
    files, adapter = regional_inputs
    scene_file = tmp_path / "scenes.yaml"
    text = (REPO / "configs/demo/scenes/demo.yaml").read_text().replace(
        "../../../demo/concepts", str(REPO / "demo/concepts"))
    scene_file.write_text(text)
    build_cli(scene_args(tiny_model_dir, files, scene_file, tmp_path / "out", adapter))
    made = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("seed*.png"))
    assert made == ["0000-ball-and-box/seed000001.boxes.png", "0000-ball-and-box/seed000001.png",
                    "0000-ball-and-box/seed000002.boxes.png", "0000-ball-and-box/seed000002.png",
                    "0001-ball-following-a-sketch/seed000001.boxes.png", "0001-ball-following-a-sketch/seed000001.png"]
    png = Image.open(tmp_path / "out" / "0000-ball-and-box" / "seed000001.png")
    assert png.text["context_prompt"] == "a ball and a box on a wooden table" and "<bluecube>" in png.text["regions"]


@pytest.mark.parametrize("change,message", [
    ({"box": [0.5, 0.0, 1.2, 0.5]}, "scene 0 .'ball-and-box'., region 0: box .* mixes fractions"),
    ({"box": [0.5, 0.6, 0.9, 0.5]}, "region 0: box .* is empty"),
    ({"box": [16, 32, 80, 64]}, "region 0: box .* outside the 64x64 image"),
    ({"prompt": " "}, "region 0: empty prompt"),
    ({"prompt": "a <greencone>"}, r"region 0: \['<greencone>'\] are not concepts"),
])
def test_invalid_scenes_fail_before_the_model_loads(tiny_model_dir, regional_inputs, tmp_path, change, message):
    files, adapter = regional_inputs
    scene = {"name": "ball-and-box", "prompt": "a ball", "regions": [{"prompt": "a <redball>", "box": [0, 0, 1, 0.5]}]}
    scene["regions"][0].update(change)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({"scenes": [scene]}))
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        build_cli(scene_args(tiny_model_dir, files, tmp_path / "s.yaml", tmp_path / "out", adapter))
    assert not list((tmp_path / "out").rglob("seed*.png")) if (tmp_path / "out").exists() else True


def test_unknown_adapter_and_missing_condition_image_are_named(tiny_model_dir, regional_inputs, tmp_path):
    files, adapter = regional_inputs
    scene = {"name": "s", "prompt": "a ball", "conditions": [{"adapter": "pose", "image": "missing.png"}]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({"scenes": [scene]}))
    with pytest.raises(FileNotFoundError, match="condition 0: image .*missing.png does not exist"):
        build_cli(scene_args(tiny_model_dir, files, tmp_path / "s.yaml", tmp_path / "out", adapter))
    Image.new("RGB", (8, 8)).save(tmp_path / "c.png")
    scene["conditions"][0]["image"] = "c.png"
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({"scenes": [scene]}))
    with pytest.raises(ValueError, match="adapter 'pose' is not configured"):
        build_cli(scene_args(tiny_model_dir, files, tmp_path / "s.yaml", tmp_path / "out", adapter))


def test_adapters_no_scene_uses_are_never_loaded(tiny_model_dir, regional_inputs, tmp_path):
    """An adapter configured but unused (here a hub id that cannot be downloaded offline) is not loaded."""
    files, adapter = regional_inputs
    scene_file = tmp_path / "scenes.yaml"
    scene_file.write_text(yaml.safe_dump({"scenes": [{"name": "plain", "prompt": "a ball and a box", "seeds": [1],
                                                      "regions": [{"prompt": "a <redball>", "box": [0, 0, 1, 0.5]}]}]}))
    args = scene_args(tiny_model_dir, files, scene_file, tmp_path / "out", adapter)
    args[args.index("--model.init_args.adapters") + 1] = json.dumps(
        {"sketch": str(adapter), "keypose": "TencentARC/t2iadapter_openpose_sd14v1"})
    cli = build_cli(args)
    assert dict(cli.model.adapter_models) == {}
    assert (tmp_path / "out" / "0000-plain" / "seed000001.png").is_file()


def test_adapter_weights_per_region(pipe):
    """The reference's region_*_adaptor_weight: inside a box the adapter's features take that box's weight."""
    channels = list(pipe.unet.config.block_out_channels)
    torch.manual_seed(0)
    pose = T2IAdapter(in_channels=3, channels=channels, num_res_blocks=1, downscale_factor=8)
    condition = Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8))
    regional = RegionalPipeline(pipe)
    plain = regional.adapter_states([AdapterCondition(pose, condition, 0.5)], 64, 64)
    same = regional.adapter_states([AdapterCondition(pose, condition, 0.5, [((0, 0, 32, 32), 0.5)])], 64, 64)
    boxed = regional.adapter_states([AdapterCondition(pose, condition, 0.5, [((0, 0, 32, 32), 0.0)])], 64, 64)
    touched = RegionalPipeline(pipe, "outward").adapter_states(
        [AdapterCondition(pose, condition, 0.5, [((0, 0, 32, 32), 0.0)])], 64, 64)
    for p, s, b, t in zip(plain, same, boxed, touched, strict=True):
        h, w = p.shape[-2:]
        assert torch.equal(p, s)
        half_h, half_w = h // 2, w // 2  # inward (the reference): the cells wholly inside the box (1×1: none)
        assert torch.all(b[..., :half_h, :half_w] == 0)  # the box's cells are switched off
        assert torch.equal(b[..., half_h:, :], p[..., half_h:, :]) and torch.equal(b[..., :, half_w:], p[..., :, half_w:])
        half_h, half_w = max(h // 2, 1), max(w // 2, 1)  # outward: every cell the box touches (1×1: all)
        assert torch.all(t[..., :half_h, :half_w] == 0)
        assert torch.equal(t[..., half_h:, :], p[..., half_h:, :]) and torch.equal(t[..., :, half_w:], p[..., :, half_w:])


def test_condition_regions_are_parsed_and_checked(tmp_path):
    from mos_lightning.data.scenes import check_scenes, parse_scene

    (tmp_path / "c.png").write_bytes(b"")
    raw = {"name": "s", "prompt": "p", "conditions": [
        {"adapter": "pose", "image": "c.png", "weight": 0.5, "regions": [{"box": [0, 0, 0.5, 0.5], "weight": 0.8}]}]}
    scene = parse_scene(raw, tmp_path, 0)
    assert scene.conditions[0].regions == [((0, 0, 0.5, 0.5), 0.8)]
    raw["conditions"][0]["regions"] = [{"box": [0, 0, 0.5, 0.5]}]
    with pytest.raises(ValueError, match="condition 0, region 0: needs a box and a weight"):
        parse_scene(raw, tmp_path, 0)
    raw["conditions"][0]["regions"] = [{"box": [0, 0, 2.0, 0.5], "weight": 1}]
    with pytest.raises(ValueError, match="condition 0, region 0: box"):
        check_scenes([parse_scene(raw, tmp_path, 0)], (64, 64), set(), {"pose"}, 8)


def test_each_region_reads_its_own_negative_prompt_in_the_negative_branch(pipe, monkeypatch):
    """With CFG the negative branch has the same layout: the global negative, then each region's own negative prompt
    (a region without one takes the scene's)."""
    seen = []
    regional = RegionalPipeline(pipe)
    encode = regional.encode_contexts
    monkeypatch.setattr(regional, "encode_contexts", lambda prompts: seen.append(list(prompts)) or encode(prompts))
    regions = [Region("a <cat>", (0, 0, 64, 32), negative_prompt="blurry cat"), Region("a <dog>", (0, 32, 64, 64))]
    regional("a cat and a dog", regions, negative_prompt="low quality", height=64, width=64, num_inference_steps=1,
             generator=torch.Generator().manual_seed(0))
    assert seen == [["a cat and a dog", "a <cat>", "a <dog>"], ["low quality", "blurry cat", "low quality"]]


def test_solo_steps_give_a_box_its_own_prompt_alone(pipe):
    """With a box over the whole image and every step solo, the picture is the region prompt's alone (the solo
    prediction replaces the regional one wholly, nothing else mixed in); with a box over half the image, solo steps
    change the picture."""
    def sample(solo_steps, prompt, regions):
        return RegionalPipeline(pipe, solo_steps=solo_steps)(prompt, regions, num_inference_steps=4, height=64,
                                                             width=64, generator=torch.Generator().manual_seed(5))

    alone = sample(0, "a <cat> on a table", [])
    solo = sample(4, "a <dog> in the snow", [Region("a <cat> on a table", (0, 0, 1, 1))])
    assert np.abs(solo.astype(int) - alone).max() <= 1
    partial = sample(2, "a <dog> in the snow", [Region("a <cat> on a table", (0, 0, 64, 32))])
    regional = sample(0, "a <dog> in the snow", [Region("a <cat> on a table", (0, 0, 64, 32))])
    assert not np.array_equal(partial, regional)
