import json

import lightning.pytorch as pl
import pytest
import torch
from conftest import DEMO_CONCEPTS, REPO
from helpers import make_data, make_task, make_trainer, random_edlora
from safetensors.torch import load_file

from mos_lightning.cli import build_cli
from mos_lightning.edlora_file import save_edlora
from mos_lightning.fusion import ConceptSpec, Fuser, load_concepts
from mos_lightning.lora import FEED_FORWARD_TARGETS, UNET_TARGETS
from mos_lightning.models import load_base_model
from mos_lightning.pipelines import EDLoRAPipeline


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    """The two demo concepts, tuned briefly on the tiny model."""
    root = tmp_path_factory.mktemp("tuned")
    files = []
    pl.seed_everything(0)  # the same tuned concepts whatever ran before
    for name, word in (("redball", "ball"), ("bluecube", "cube")):
        task = make_task(tiny_model_dir, root / name, concept_name=name, tokens=(f"<{name}1>", f"<{name}2>"),
                         initializers=("<rand-0.013>", word))
        make_trainer(root, max_steps=30).fit(task, make_data(DEMO_CONCEPTS / name))
        files.append(root / name / "edlora.safetensors")
    return files


# the fusion report's held-out and base-drift checks off, for tests about the solve or the statistics (about a third
# of a small fusion's time goes to the checks)
CHECKS_OFF = ("--model.init_args.held_out_prompts", "[]", "--model.init_args.base_prompts", "[]")


def fuse_args(model_dir, files, out, *extra):
    concepts = json.dumps([{"path": str(f)} for f in files])
    return ["predict", "--config", str(REPO / "configs/demo/fusion.yaml"),
            "--model.init_args.base_model", str(model_dir), "--model.init_args.output_dir", str(out),
            "--model.init_args.num_inference_steps", "8",
            "--data.init_args.concepts", concepts, "--trainer.accelerator", "cpu",
            "--trainer.enable_progress_bar", "false", *extra]


def test_fusion_beats_the_naive_merge_and_the_folder_loads_and_samples(tiny_model_dir, trained, tmp_path):
    cli = build_cli(fuse_args(tiny_model_dir, trained, tmp_path / "fusion"))
    report = json.loads((tmp_path / "fusion" / "fusion_report.json").read_text())
    assert list(report["fidelity"]) == ["redball", "bluecube"]
    for name, figures in report["fidelity"].items():
        for part in ("text_encoder", "unet"):
            fused, naive = figures[part]["fused"], figures[part]["naive"]
            assert fused < 0.5 * naive, (name, part, fused, naive)
    for stage, rows in report["layers"].items():
        # never worse than the naive merge, up to what the small ridge may cost
        assert rows and all(r["objective"] <= r["objective_naive"] + 1e-4 * r["objective_base"] + 1e-9 for r in rows), stage
    assert len(report["layers"]["kv"]) == 32 and len(report["layers"]["text_encoder"]) > 0

    # hooks gone and the in-memory base restored after fusion
    task = cli.model
    base = load_base_model(str(tiny_model_dir))
    for mine, theirs in ((task.unet, base.unet), (task.text_encoder, base.text_encoder)):
        assert all(not m._forward_hooks and not m._forward_pre_hooks for m in mine.modules())
        a, b = mine.state_dict(), theirs.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    # the fused folder: diffusers + the token table; loads with its concepts and samples both
    pipe = EDLoRAPipeline.from_pretrained(tmp_path / "fusion" / "model", local_files_only=True)
    assert set(pipe.concepts) == {"redball", "bluecube"}
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a <redball> next to a <bluecube>", num_inference_steps=3, height=64, width=64,
                 output_type="np", generator=torch.Generator().manual_seed(0)).images
    assert image.shape == (1, 64, 64, 3)
    from diffusers import StableDiffusionPipeline

    plain = StableDiffusionPipeline.from_pretrained(tmp_path / "fusion" / "model", local_files_only=True)
    torch.testing.assert_close(plain.unet.state_dict(), pipe.unet.state_dict())


def test_lbfgs_solver_reaches_the_closed_form_objective(tiny_model_dir, tmp_path):
    files = [save_edlora(tmp_path / f"{n}.safetensors", random_edlora(tiny_model_dir, n, seed=i, lora_std=0.1))
             for i, n in enumerate(("cat", "dog"))]
    reports = {}
    # the exact solve, spelt out: a bare `ClosedForm` would keep the task default's init_args (ridge 1 towards naive)
    exact = '{"class_path": "mos_lightning.fusion.ClosedForm", "init_args": {"ridge": 1.0e-5, "towards": "base"}}'
    solvers = {"closed_form": ["--model.init_args.solver", exact],
               "lbfgs": ["--model.init_args.solver", "mos_lightning.fusion.LBFGS",
                         "--model.init_args.solver.init_args.text_encoder_iterations", "100",
                         "--model.init_args.solver.init_args.unet_iterations", "100"]}
    for solver, args in solvers.items():
        build_cli(fuse_args(tiny_model_dir, files, tmp_path / solver, *args, "--model.init_args.num_inference_steps", "3",
                            *CHECKS_OFF))
        reports[solver] = json.loads((tmp_path / solver / "fusion_report.json").read_text())
    assert reports["lbfgs"]["solver"] == {"class_path": "mos_lightning.fusion.solvers.LBFGS", "init_args": {
        "text_encoder_iterations": 100, "unet_iterations": 100, "history_size": 10, "tolerance_grad": 1e-12,
        "tolerance_change": 1e-15, "kv_iterations": None, "keep_best": False}}
    for stage in ("text_encoder", "kv", "spatial"):
        exact_rows, iterative_rows = reports["closed_form"]["layers"][stage], reports["lbfgs"]["layers"][stage]
        for exact, iterative in zip(exact_rows, iterative_rows, strict=True):
            # the exact solve is never worse than L-BFGS (up to what its small ridge costs)
            assert exact["objective"] <= iterative["objective"] + 1e-3 * exact["objective_base"] + 1e-9, exact["layer"]
        # and L-BFGS from W0 gets most of the way (slowly on ill-conditioned layers)
        base = sum(r["objective_base"] for r in exact_rows)
        best, found = (sum(r["objective"] for r in rows) for rows in (exact_rows, iterative_rows))
        assert base - found >= 0.8 * (base - best), stage


def test_statistics_and_weights_agree_between_one_process_and_two_simulated_nodes(tiny_model_dir, tmp_path):
    from nodes import run_on_nodes

    files = [save_edlora(tmp_path / f"{n}.safetensors", random_edlora(tiny_model_dir, n, seed=i, lora_std=0.1))
             for i, n in enumerate(("cat", "dog", "fox"))]  # 3 concepts: uneven shards (2 + 1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each simulated node's process gets (OMP_NUM_THREADS=1): same CPU kernels
    try:
        build_cli(fuse_args(tiny_model_dir, files, tmp_path / "one", "--model.init_args.num_inference_steps", "3",
                            *CHECKS_OFF))
    finally:
        torch.set_num_threads(threads)
    # two simulated nodes (one process each, both local rank 0): the same global ranks as two processes on one
    run_on_nodes(fuse_args(tiny_model_dir, files, tmp_path / "two", "--model.init_args.num_inference_steps", "3",
                           *CHECKS_OFF))
    one, two = (json.loads((tmp_path / d / "fusion_report.json").read_text()) for d in ("one", "two"))
    assert two["world_size"] == 2 and list(two["fidelity"]) == ["cat", "dog", "fox"]
    for stage in one["layers"]:
        for a, b in zip(one["layers"][stage], two["layers"][stage], strict=True):
            assert a["layer"] == b["layer"] and a["rows"] == b["rows"]
            # objectives are differences of large sums: compare on the scale of the base objective
            assert b["objective"] == pytest.approx(a["objective"], abs=1e-6 * a["objective_base"] + 1e-12)
    for sub, name in (("unet", "diffusion_pytorch_model.safetensors"), ("text_encoder", "model.safetensors")):
        a, b = (load_file(tmp_path / d / "model" / sub / name) for d in ("one", "two"))
        for key in a:
            torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5)


def test_bad_concept_lists_fail_before_the_base_model_loads(tiny_model_dir, tmp_path):
    cat = save_edlora(tmp_path / "cat.safetensors", random_edlora(tiny_model_dir, "cat"))
    other = random_edlora(tiny_model_dir, "cat")
    other.concepts = {"kitty": other.concepts["cat"]}
    clash = save_edlora(tmp_path / "kitty.safetensors", other)
    small = random_edlora(tiny_model_dir, "dog")
    small.embeddings = {k: v[:12] for k, v in small.embeddings.items()}
    small.num_layers = 12
    wrong = save_edlora(tmp_path / "dog.safetensors", small)
    with pytest.raises(ValueError, match="no concepts"):
        load_concepts([])
    with pytest.raises(ValueError, match="more than once"):
        load_concepts([ConceptSpec(str(cat)), ConceptSpec(str(cat))])
    with pytest.raises(ValueError, match="distinct token names"):
        load_concepts([ConceptSpec(str(cat)), ConceptSpec(str(clash))])
    with pytest.raises(ValueError, match="out of range"):
        load_concepts([ConceptSpec(str(cat), unet_alpha=3.0)])
    with pytest.raises(ValueError, match="different base models"):
        load_concepts([ConceptSpec(str(cat)), ConceptSpec(str(wrong))])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_concepts([ConceptSpec(str(tmp_path / "missing.safetensors"))])
    bad_target = random_edlora(tiny_model_dir, "owl")
    bad_target.unet_lora = {"mid_block.nonexistent.lora_A.weight": torch.zeros(4, 8),
                            "mid_block.nonexistent.lora_B.weight": torch.zeros(8, 4)}
    owl = save_edlora(tmp_path / "owl.safetensors", bad_target)
    pipe = EDLoRAPipeline.from_pretrained(tiny_model_dir, local_files_only=True)
    with pytest.raises(ValueError, match="does not have"):
        Fuser(pipe, load_concepts([ConceptSpec(str(owl))]))


def test_saved_statistics_replace_running_the_concepts_models(tiny_model_dir, tmp_path):
    files = [save_edlora(tmp_path / f"{n}.safetensors", random_edlora(tiny_model_dir, n, seed=i, lora_std=0.1))
             for i, n in enumerate(("cat", "dog", "fox"))]
    steps = ("--model.init_args.num_inference_steps", "3", *CHECKS_OFF)
    build_cli(fuse_args(tiny_model_dir, files[:2], tmp_path / "first", *steps, "--model.init_args.save_stats", "true"))
    assert all((tmp_path / f"{n}.fusion-stats.safetensors").is_file() for n in ("cat", "dog"))
    build_cli(fuse_args(tiny_model_dir, files[:2], tmp_path / "again", *steps))
    again = json.loads((tmp_path / "again" / "fusion_report.json").read_text())
    assert all(v.startswith("read from") for v in again["statistics"].values())
    for sub, name in (("unet", "diffusion_pytorch_model.safetensors"), ("text_encoder", "model.safetensors")):
        a, b = (load_file(tmp_path / d / "model" / sub / name) for d in ("first", "again"))
        assert all(torch.equal(a[k], b[k]) for k in a)
    # one concept more: only the new one runs its model
    build_cli(fuse_args(tiny_model_dir, files, tmp_path / "three", *steps))
    three = json.loads((tmp_path / "three" / "fusion_report.json").read_text())
    assert [v.split(" ")[0] for v in three["statistics"].values()] == ["read", "read", "recorded"]
    # other settings: the saved statistics no longer apply and are recorded afresh
    build_cli(fuse_args(tiny_model_dir, files[:1], tmp_path / "other", "--model.init_args.num_inference_steps", "2",
                        *CHECKS_OFF))
    other = json.loads((tmp_path / "other" / "fusion_report.json").read_text())
    assert other["statistics"]["cat"].startswith("recorded") and "num_inference_steps" in other["statistics"]["cat"]


def test_run_fusion_in_a_notebook_equals_the_cli_and_fit_is_refused(tiny_model_dir, tmp_path):
    """The fusion package owns the stage order: without Lightning it produces the CLI's weights and numbers."""
    from mos_lightning.fusion import FusionSettings, run_fusion
    from mos_lightning.fusion.output import save_fused_model

    files = [save_edlora(tmp_path / f"{n}.safetensors", random_edlora(tiny_model_dir, n, seed=i, lora_std=0.1))
             for i, n in enumerate(("cat", "dog"))]
    build_cli(fuse_args(tiny_model_dir, files, tmp_path / "cli", "--model.init_args.use_saved_stats", "false",
                        *CHECKS_OFF))
    report = json.loads((tmp_path / "cli" / "fusion_report.json").read_text())

    pipe = EDLoRAPipeline.from_pretrained(tiny_model_dir, local_files_only=True, safety_checker=None,
                                          requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    settings = FusionSettings(height=64, width=64, num_inference_steps=8, held_out_prompts=[], base_prompts=[])
    fuser = Fuser(pipe, load_concepts([ConceptSpec(str(f)) for f in files]), settings)
    result = run_fusion(fuser)
    assert result.fidelity == report["fidelity"] and result.statistics == {"cat": "recorded", "dog": "recorded"}
    for stage, rows in result.layers.items():
        assert [r["objective"] for r in rows] == [r["objective"] for r in report["layers"][stage]], stage
    save_fused_model(fuser, tmp_path / "notebook")
    for part in ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        ours, theirs = load_file(tmp_path / "notebook" / part), load_file(tmp_path / "cli" / "model" / part)
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)

    with pytest.raises(ValueError, match="runs under `predict`"):
        build_cli(["fit", *fuse_args(tiny_model_dir, files, tmp_path / "fit")[1:]])
    assert not (tmp_path / "fit").exists()


def test_statistics_come_from_each_concepts_own_model(tiny_model_dir, tmp_path):
    """A concept's text-encoder and spatial Grams equal those recorded from its own model built independently
    (base + its ED-LoRA through the pipeline's loader): not the base model's, not another concept's."""
    from mos_lightning.fusion import FusionSettings, GramRecorder
    from mos_lightning.pipelines import make_scheduler

    # the dog's file also holds feed-forward LoRAs (an option beyond the paper): its own model and the fusion read them
    files = [save_edlora(tmp_path / f"{n}.safetensors", random_edlora(tiny_model_dir, n, seed=i, lora_std=0.1,
                                                                      unet_targets=targets))
             for i, (n, targets) in enumerate((("cat", UNET_TARGETS), ("dog", (*UNET_TARGETS, *FEED_FORWARD_TARGETS))))]

    def pipeline():
        pipe = EDLoRAPipeline.from_pretrained(tiny_model_dir, local_files_only=True, safety_checker=None,
                                              requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    settings = FusionSettings(height=64, width=64, num_inference_steps=3)
    fuser = Fuser(pipeline(), load_concepts([ConceptSpec(str(f)) for f in files]), settings)
    record = fuser.record(1)
    own = pipeline()
    own.load_edlora(str(files[1]), scale=1.0)
    own.scheduler = make_scheduler(settings.scheduler, own.scheduler.config)
    with GramRecorder(own.text_encoder, fuser.stage_layers["text_encoder"]) as text:
        own.encode_layerwise(["photo of a <dog1> <dog2>", "<dog1> <dog2>"], own.device)
    with GramRecorder(own.unet, fuser.stage_layers["spatial"]) as spatial:
        own(["photo of a <dog1> <dog2>"], guidance_scale=1.0, num_inference_steps=3, height=64, width=64,
            generator=[torch.Generator().manual_seed(0)], output_type="latent")
    for ours, theirs in ((record.text_encoder, text), (record.spatial, spatial)):
        assert ours.grams.keys() == theirs.grams.keys() and ours.rows == theirs.rows
        for name, gram in theirs.grams.items():
            torch.testing.assert_close(ours.grams[name], gram, rtol=1e-4, atol=1e-5)
    feed_forward = [n for n in fuser.stage_layers["spatial"] if n.endswith(FEED_FORWARD_TARGETS)]
    assert len(feed_forward) == 32 and set(feed_forward) <= set(record.spatial.group_of)
    fuser.add(0, fuser.record(0))
    fuser.add(1, record)
    rows = {r["layer"]: r for r in fuser.solve("spatial")}
    assert all(rows[n]["objective"] < rows[n]["objective_naive"] for n in feed_forward)  # the cat adds nothing there


def test_report_measures_how_far_fusion_drifts_from_the_base(tiny_model_dir, tmp_path):
    """Base preservation: on prompts without concepts, a fusion of no-op concepts is the base exactly, and a real
    fusion drifts less than the naive merge (which adds every concept's change everywhere)."""
    from mos_lightning.fusion import FusionSettings, run_fusion

    files = [save_edlora(tmp_path / f"{n}.safetensors", random_edlora(tiny_model_dir, n, seed=i, lora_std=0.1))
             for i, n in enumerate(("cat", "dog"))]
    pipe = EDLoRAPipeline.from_pretrained(tiny_model_dir, local_files_only=True, safety_checker=None,
                                          requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    settings = FusionSettings(height=64, width=64, num_inference_steps=4, base_prompts=["a photo of a dog"])
    result = run_fusion(Fuser(pipe, load_concepts([ConceptSpec(str(f)) for f in files]), settings))
    fused, naive = result.base_preservation["fused"], result.base_preservation["naive"]
    assert 0 < fused["text_encoder"] < naive["text_encoder"] and 0 < fused["unet"] < naive["unet"]

    zero = random_edlora(tiny_model_dir, "cow", seed=3, lora_std=0.0)
    still = run_fusion(Fuser(pipe, load_concepts([ConceptSpec(str(save_edlora(tmp_path / "cow.safetensors", zero)))]),
                             settings))
    # the floor: the same weights, predictions batched differently from the recorded trajectory
    assert still.base_preservation["fused"]["text_encoder"] == 0.0 and still.base_preservation["fused"]["unet"] < 1e-5
