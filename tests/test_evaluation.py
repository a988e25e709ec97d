import csv
import json

import numpy as np
import pytest
from conftest import DEMO_CONCEPTS, REPO
from helpers import random_edlora
from PIL import Image

from mos_lightning.cli import build_cli
from mos_lightning.data import EvalConceptSpec, EvalDataModule
from mos_lightning.data.eval_prompts import GROUPS, PAPER_PROMPTS
from mos_lightning.edlora_file import save_edlora
from mos_lightning.tiny import save_tiny_clip


def spec(name="dogA", category="pets", **kw):
    return EvalConceptSpec(name, "dog", str(DEMO_CONCEPTS / "redball"), category, **kw)


def test_paper_prompts_times_seeds_with_groups_and_class_prompts():
    dm = EvalDataModule([spec()])
    dm.setup("test")
    assert len(dm.items) == 20 * 50 and sorted({i.seed for i in dm.items}) == list(range(1, 51))
    assert [i.group for i in dm.items[::50]] == [g for g in GROUPS for _ in range(5)]
    first = dm.items[0]
    assert first.prompt == "A <TOK>, in the swimming pool" and first.class_prompt == "A dog, in the swimming pool"
    assert {i.prompt for i in dm.items} == {p for g in GROUPS for p in PAPER_PROMPTS["pets"][g]}
    chars = EvalDataModule([spec(category="characters")], seeds=[1])
    chars.setup("test")
    assert chars.items[0].prompt.startswith("A photo of <TOK> on the beach, small waves")


def test_two_shards_are_disjoint_complete_and_equally_long():
    dm = EvalDataModule([spec("a"), spec("b", "vase")], seeds=[1, 2, 3])
    dm.setup("test")
    shards = [list(dm.shard(rank, 2)) for rank in (0, 1)]
    assert len(shards[0]) == len(shards[1])
    real = [tuple(sorted(i.items())) for shard in shards for i in shard if i is not None]
    assert len(real) == len(set(real)) == len(dm.items) == 2 * 20 * 3


def test_bad_eval_inputs_are_named(tmp_path):
    with pytest.raises(ValueError, match="unknown category"):
        EvalDataModule([spec(category="cars")]).setup("test")
    with pytest.raises(FileNotFoundError, match="reference_dir"):
        EvalDataModule([EvalConceptSpec("x", "dog", str(tmp_path / "none"))]).setup("test")
    (tmp_path / "p.txt").write_text("a photo of a dog\n")
    with pytest.raises(ValueError, match="without <TOK>"):
        EvalDataModule([spec(prompt_file=str(tmp_path / "p.txt"))]).setup("test")


def test_test_run_writes_table_one_and_resumes(tiny_model_dir, tmp_path):
    clip = save_tiny_clip(tmp_path / "clip")
    files = {n: save_edlora(tmp_path / f"{n}.safetensors", random_edlora(tiny_model_dir, n, seed=i, lora_std=0.1))
             for i, n in enumerate(("redball", "bluecube"))}
    build_cli(["predict", "--config", str(REPO / "configs/demo/fusion.yaml"),
               "--model.init_args.base_model", str(tiny_model_dir), "--model.init_args.output_dir", str(tmp_path / "fusion"),
               "--model.init_args.num_inference_steps", "3", "--trainer.accelerator", "cpu",
               "--data.init_args.concepts", json.dumps([{"path": str(f)} for f in files.values()])])
    methods = [
        {"name": "single-concept", "base_model": str(tiny_model_dir), "edloras": {k: str(v) for k, v in files.items()}},
        {"name": "fused", "base_model": str(tmp_path / "fusion" / "model")},
        {"name": "bound", "base_model": str(tiny_model_dir), "class_word": True},
    ]
    args = ["test", "--config", str(REPO / "configs/demo/eval.yaml"),
            "--model.init_args.clip_model", str(clip),
            "--model.init_args.output_dir", str(tmp_path / "eval"),
            "--model.init_args.methods", json.dumps(methods),
            "--model.init_args.num_inference_steps", "3",
            "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"]
    build_cli(args)
    out = tmp_path / "eval"
    with open(out / "table.csv") as f:
        table = list(csv.reader(f))
    assert table[0] == ["metric", "method", "redball", "bluecube", "mean"]
    assert [row[:2] for row in table[1:]] == [[m, n] for m in ("text_alignment", "image_alignment")
                                              for n in ("single-concept", "fused", "bound")]
    for row in table[1:]:
        values = [float(v) for v in row[2:]]
        assert all(0 <= v <= 2.5 for v in values) and values[2] == pytest.approx((values[0] + values[1]) / 2, abs=1e-6)
    scores = json.loads((out / "scores.json").read_text())
    assert len(scores) == 3 * 2 * 4 * 2  # methods × concepts × (1 prompt per group × 4 groups) × 2 seeds
    image_rows = [float(r[2]) for r in table[1:] if r[0] == "image_alignment"]
    per_image = [s["image_alignment"] for s in scores if s["method"] == "single-concept" and s["concept"] == "redball"]
    assert image_rows[0] == pytest.approx(sum(per_image) / len(per_image), abs=1e-6)
    assert "| Image-alignment | redball | bluecube | mean |" in (out / "table.md").read_text()
    assert "<td>image_alignment</td>" in (out / "index.html").read_text()  # the results page beside the tables
    with open(out / "groups.csv") as f:
        assert {row[2] for row in list(csv.reader(f))[1:]} == set(GROUPS)
    # rerun: every image is reused (none rewritten) and the table is the same
    stamps = {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*.png")}
    first = (out / "table.csv").read_text()
    build_cli(args)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    assert (out / "table.csv").read_text() == first


def test_the_authors_benchmark_prompt_files_keep_their_groups(tmp_path):
    """datasets/benchmark_prompts/…/test_chair.txt layout: four blank-line-separated blocks, one per group."""
    blocks = [[f"A <TOK>, {g} {i}" for i in range(5)] for g in GROUPS]
    (tmp_path / "test_chair.txt").write_text("\n\n".join("\n".join(b) for b in blocks) + "\n")
    dm = EvalDataModule([spec(prompt_file=str(tmp_path / "test_chair.txt"))], seeds=[1])
    dm.setup("test")
    assert [(i.group, i.prompt) for i in dm.items] == [(g, p) for g, b in zip(GROUPS, blocks, strict=True) for p in b]
    (tmp_path / "plain.txt").write_text("A <TOK>\nA <TOK> again\n")
    plain = EvalDataModule([spec(prompt_file=str(tmp_path / "plain.txt"))], seeds=[1])
    plain.setup("test")
    assert {i.group for i in plain.items} == {"custom"}


def test_evaluation_across_two_nodes_and_reruns_that_reuse_only_what_the_same_method_made(tiny_model_dir, tmp_path):
    """Two simulated nodes score what one process scores, and a rerun after a node died makes only the missing
    images. Reuse was by path alone: an ED-LoRA re-tuned in place, or other sampling settings, were scored with the
    old images as the new method's, silently."""
    from nodes import run_on_nodes

    clip = save_tiny_clip(tmp_path / "clip")
    redball = save_edlora(tmp_path / "redball.safetensors", random_edlora(tiny_model_dir, "redball", lora_std=0.1))
    methods = [{"name": "single", "base_model": str(tiny_model_dir), "edloras": {"redball": str(redball)}}]

    def args(out, *extra):
        return ["test", "--config", str(REPO / "configs/demo/eval.yaml"), "--model.init_args.clip_model", str(clip),
                "--model.init_args.output_dir", str(out), "--model.init_args.methods", json.dumps(methods),
                "--model.init_args.num_inference_steps", "2", "--trainer.accelerator", "cpu",
                "--trainer.enable_progress_bar", "false", "--data.init_args.concepts",
                json.dumps([{"name": "redball", "class_word": "ball", "reference_dir": str(DEMO_CONCEPTS / "redball"),
                             "category": "vase"}]), *extra]

    def stamps(out):
        return {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*.png")}

    one, nodes = tmp_path / "one", tmp_path / "nodes"
    build_cli(args(one))
    run_on_nodes(args(nodes))
    assert len(stamps(one)) == len(stamps(nodes)) == 4 * 2  # groups × seeds
    for a, b in zip(*(sorted((p.relative_to(out), p) for p in stamps(out)) for out in (one, nodes)), strict=True):
        assert a[0] == b[0]
        assert abs(np.asarray(Image.open(a[1]), int) - np.asarray(Image.open(b[1]), int)).max() <= 1, a[0]
    tables = [list(csv.reader((out / "table.csv").open())) for out in (one, nodes)]
    assert tables[0][0] == tables[1][0]
    for a, b in zip(tables[0][1:], tables[1][1:], strict=True):
        assert a[:2] == b[:2] and [float(x) for x in a[2:]] == pytest.approx([float(x) for x in b[2:]], abs=1e-4)
    # a node died: some images missing; the rerun on two nodes makes only those, and scores the same
    lost = sorted(stamps(nodes))[::3]
    for path in lost:
        path.unlink()
    kept = {p: t for p, t in stamps(nodes).items()}
    run_on_nodes(args(nodes))
    after = stamps(nodes)
    assert set(after) == set(kept) | set(lost) and all(after[p] == t for p, t in kept.items())
    assert list(csv.reader((nodes / "table.csv").open())) == tables[1]

    made = stamps(one)
    build_cli(args(one))  # the same method: every image reused
    assert stamps(one) == made and (one / "images" / "single" / "made_by.json").is_file()
    with pytest.raises(ValueError, match=r"num_inference_steps: 2 → 3"):
        build_cli(args(one, "--model.init_args.num_inference_steps", "3"))
    save_edlora(redball, random_edlora(tiny_model_dir, "redball", seed=5, lora_std=0.1))  # re-tuned in place
    with pytest.raises(ValueError, match=r"method single made otherwise \(redball.safetensors changed"):
        build_cli(args(one))
    build_cli(args(one, "--model.init_args.reuse_images", "false"))  # remade; the folder vouches for the new file
    assert all(stamps(one)[p] != t for p, t in made.items())
    build_cli(args(one))
