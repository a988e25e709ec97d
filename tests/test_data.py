import json
import random

import pytest
import torch
from PIL import Image

from mos_lightning.data import ConceptDataModule, ConceptDataset, ConceptSource, read_concept_list
from mos_lightning.data.transforms import resize_crop_letterbox, shuffle_caption


def _dataset(concept_dir, **kw):
    source = ConceptSource(str(concept_dir), str(concept_dir / "captions"), str(concept_dir / "masks"))
    return ConceptDataset([source], resolution=64, **kw)


def test_samples_have_expected_shapes_and_masks_at_latent_resolution(concept_dir):
    ds = _dataset(concept_dir)
    assert len(ds) == 6 and ds.has_masks
    item = ds[0]
    assert item["pixel_values"].shape == (3, 64, 64)
    assert -1.0 <= item["pixel_values"].min() and item["pixel_values"].max() <= 1.0
    assert item["mask"].shape == item["valid_mask"].shape == (1, 8, 8)
    assert "<TOK>" in item["caption"]
    assert 0 < item["mask"].sum() < item["valid_mask"].sum()


def test_letterbox_marks_padding_invalid_and_crop_is_all_valid():
    image, mask = Image.new("RGB", (96, 48), (255, 0, 0)), Image.new("L", (96, 48), 255)
    _, _, valid = resize_crop_letterbox(image, mask, 64, crop_prob=0.0, rng=random.Random(0))
    valid = torch.tensor(list(valid.getdata())).view(64, 64)
    assert valid[:16].sum() == 0 and valid[48:].sum() == 0 and (valid[16:48] == 255).all()
    _, _, valid = resize_crop_letterbox(image, mask, 64, crop_prob=1.0, rng=random.Random(0))
    assert min(valid.getdata()) == 255


def test_shuffle_caption_keeps_leading_tags():
    caption = "<TOK>, red, shiny, round, small"
    out = shuffle_caption(caption, 1, random.Random(3))
    assert out.split(", ")[0] == "<TOK>"
    assert sorted(out.split(", ")) == sorted(caption.split(", "))


def test_prompt_templates_wrap_caption(concept_dir):
    ds = _dataset(concept_dir, prompt_templates=["a good photo of {}"], shuffle_tags=False)
    assert ds[0]["caption"].startswith("a good photo of a photo of <TOK>")


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ConceptDataset([ConceptSource(str(tmp_path / "nope"))])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no images"):
        ConceptDataset([ConceptSource(str(tmp_path / "empty"))])


def test_corrupt_image_is_named(concept_dir):
    (concept_dir / "03.png").write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match="03.png"):
        _dataset(concept_dir)


def test_caption_without_placeholder(concept_dir):
    (concept_dir / "captions" / "02.txt").write_text("a photo of a ball")
    with pytest.raises(ValueError, match="02.png.*placeholder"):
        _dataset(concept_dir)
    assert len(_dataset(concept_dir, require_placeholder=False)) == 6


def test_mask_size_mismatch_and_missing_mask(concept_dir):
    Image.new("L", (10, 10)).save(concept_dir / "masks" / "01.png")
    with pytest.raises(ValueError, match="mask .*01.png is 10x10"):
        _dataset(concept_dir)
    (concept_dir / "masks" / "01.png").unlink()
    with pytest.raises(FileNotFoundError, match="01.png"):
        _dataset(concept_dir)


def test_reference_concept_list_json(concept_dir, tmp_path):
    listing = tmp_path / "concepts.json"
    listing.write_text(json.dumps([{
        "instance_prompt": "<TOK>",
        "instance_data_dir": "redball",
        "caption_dir": "redball/captions",
        "mask_dir": "redball/masks",
    }]))
    sources = read_concept_list(listing)
    assert sources[0].image_dir == str(tmp_path / "redball")
    dm = ConceptDataModule(concept_list=str(listing), resolution=64, batch_size=4, num_workers=0)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["pixel_values"].shape == (4, 3, 64, 64) and len(batch["caption"]) == 4


def test_datamodule_needs_exactly_one_source(concept_dir):
    with pytest.raises(ValueError, match="exactly one"):
        ConceptDataModule()
    with pytest.raises(ValueError, match="exactly one"):
        ConceptDataModule(concept_dir=str(concept_dir), concept_list="x.json")


def test_reference_geometry_keeps_the_top_of_portraits_and_places_images_at_random():
    import random

    import numpy as np
    from PIL import Image

    from mos_lightning.data.transforms import reference_resize_crop

    portrait = np.zeros((128, 64, 3), dtype=np.uint8)
    portrait[:16] = (255, 0, 0)  # the top (a face) is red, the rest black
    image, mask = Image.fromarray(portrait), Image.new("L", (64, 128), 255)
    for seed in range(5):
        out, _, valid = reference_resize_crop(image, mask, 64, crop_prob=1.0, rng=random.Random(seed))
        rows = np.nonzero(np.asarray(valid).max(1))[0]
        assert np.asarray(out)[rows[0] + 1, :, 0].max() > 200  # the top of the kept region is the face
    offsets = set()
    for seed in range(8):
        _, _, valid = reference_resize_crop(image, mask, 64, crop_prob=0.0, rng=random.Random(seed))
        cols = np.nonzero(np.asarray(valid).max(0))[0]
        assert len(cols) == 32  # the whole portrait, long edge resized to 64: 32 wide
        offsets.add(int(cols[0]))
    assert len(offsets) > 1  # placed at random, not centred


def test_reference_object_geometry_shrinks_by_half_to_one_and_places_at_random():
    import random

    import numpy as np
    from PIL import Image

    from mos_lightning.data.transforms import reference_object_fill

    image, mask = Image.new("RGB", (64, 64), (255, 0, 0)), Image.new("L", (64, 64), 255)
    sides, offsets = set(), set()
    for seed in range(20):
        out, out_mask, valid = reference_object_fill(image, mask, 64, crop_prob=0.0, rng=random.Random(seed))
        valid = np.asarray(valid) > 0
        rows, cols = np.nonzero(valid.max(1))[0], np.nonzero(valid.max(0))[0]
        assert 32 <= len(cols) <= 64 and len(rows) == len(cols)  # a square shrunk by a factor in [0.5, 1]
        assert np.array_equal(np.asarray(out_mask) > 0, valid)  # the mask follows the image
        sides.add(len(cols))
        offsets.add((int(rows[0]), int(cols[0])))
    assert len(sides) > 3 and len(offsets) > 3


def test_module_defaults_are_the_reference_recipe(concept_dir):
    """The reference: no flip, its EnhanceText default (object templates), its portrait geometry."""
    from mos_lightning.data.caption_templates import OBJECT

    dm = ConceptDataModule(concept_dir=str(concept_dir), resolution=64, num_workers=0)
    assert (dm.hparams.flip_prob, dm.hparams.prompt_templates, dm.hparams.geometry) == (0.0, "object", "reference")
    dm.setup("fit")
    assert dm.dataset.prompt_templates == OBJECT and dm.dataset.flip_prob == 0.0


def test_caption_template_presets(concept_dir):
    from helpers import make_data

    from mos_lightning.data.caption_templates import HUMAN

    dm = make_data(concept_dir, prompt_templates="human", geometry="reference")
    dm.setup("fit")
    item = dm.dataset[0]
    assert any(item["caption"] == t.format(item["caption"][len(t.split("{}")[0]):]) for t in HUMAN)
    assert item["view"] == ""  # randomly placed: never a cached view
    with pytest.raises(ValueError, match="not a preset"):
        make_data(concept_dir, prompt_templates="humans").setup("fit")


def test_16_bit_images_keep_their_values(tmp_path):
    """An I;16 PNG converted by PIL alone turns white; it must keep its picture."""
    import numpy as np

    from mos_lightning.data.concept import open_image

    gradient = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    Image.fromarray(gradient).save(tmp_path / "deep.png")  # mode I;16
    rgb = np.asarray(open_image(tmp_path / "deep.png", "RGB"))
    assert rgb.min() == 0 and rgb.max() == 255 and 120 < rgb.mean() < 135  # a gradient, not white


def test_wide_images_and_oversized_batches_are_reported(tmp_path):
    from helpers import make_data

    folder = tmp_path / "wide"
    folder.mkdir()
    Image.new("RGB", (256, 32), (200, 0, 0)).save(folder / "a.png")
    Image.new("RGB", (64, 64), (0, 0, 200)).save(folder / "b.png")
    data = make_data(folder, batch_size=4, require_placeholder=False)
    with pytest.warns(UserWarning, match="a.png is 256x32: letterboxed to a square it keeps only 12%"):
        data.setup("fit")
    with pytest.warns(UserWarning, match="batch_size 4 is larger than the 2 images: every step shows some images"):
        loader = data.train_dataloader()
    assert len(next(iter(loader))["caption"]) == 4  # whole batches: the images repeat
