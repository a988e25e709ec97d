import pytest

from mos_lightning.data import PromptDataModule, read_prompts


def test_prompt_files_txt_and_yaml(tmp_path):
    (tmp_path / "p.txt").write_text("# comment\na photo of <TOK>\n\n<TOK> on the beach\n")
    (tmp_path / "p.yaml").write_text("prompts:\n  - a photo of <TOK>\n  - <TOK> on the beach\n")
    assert read_prompts(tmp_path / "p.txt") == read_prompts(tmp_path / "p.yaml") == ["a photo of <TOK>", "<TOK> on the beach"]
    (tmp_path / "bad.yaml").write_text("prompts: 3\n")
    with pytest.raises(ValueError, match="list of prompt strings"):
        read_prompts(tmp_path / "bad.yaml")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_prompts(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="no prompts"):
        PromptDataModule()


def test_items_cover_prompts_times_seeds_and_skip_existing_images(tmp_path):
    dm = PromptDataModule(prompts=["a photo of <TOK>", "<TOK> in the snow"], num_samples=3, seed=5,
                          batch_size=2, output_dir=str(tmp_path))
    dm.setup("predict")
    assert [(i.prompt_index, i.seed) for i in dm.items] == [(p, s) for p in (0, 1) for s in (5, 6, 7)]
    assert len({i.name for i in dm.items}) == 6 and dm.items[0].name == "0000-a-photo-of-tok/seed000005.png"
    batch = next(iter(dm.predict_dataloader()))
    assert batch["seed"] == [5, 6] and batch["prompt"] == ["a photo of <TOK>"] * 2
    done = tmp_path / dm.items[1].name
    done.parent.mkdir(parents=True)
    done.write_bytes(b"png")
    dm.setup("predict")
    assert len(dm.items) == 5 and all(i.seed != 6 or i.prompt_index != 0 for i in dm.items)
    assert len(PromptDataModule(prompts=["x"], seeds=list(range(1, 51))).all_items) == 50


def test_prompt_file_replaces_the_configs_prompts(tmp_path):
    (tmp_path / "mine.txt").write_text("a <TOK> on the moon\n")
    dm = PromptDataModule(prompts=["<potter> and <hermione>"], prompt_file=str(tmp_path / "mine.txt"))
    assert dm.prompts == ["a <TOK> on the moon"]
