"""Fusion parity: our solvers on the reference implementation's own per-layer statistics (two concepts, 136 layers)."""

from __future__ import annotations

import pytest
import torch
from reference import load_golden, reference_file

from mos_lightning.fusion import ClosedForm, LayerProblem


@pytest.fixture(scope="module")
def golden_layers() -> dict:
    return load_golden("fusion/fusion_golden.pt")["layers"]


def problem_and_mse(name: str, layer: dict):
    """Our :class:`LayerProblem` from the reference's Grams, and the reference's loss (mean squared error) of a W."""
    grams, xtv, w0 = layer["gram_XtX_per_concept"].double(), layer["XtV_per_concept"].double(), layer["W0"].double()
    gram = grams.sum(0)
    cross = (xtv - grams @ w0.T).sum(0)  # Σ G_i ΔW_iᵀ, since XᵢᵀVᵢ = G_i W_iᵀ
    elements = sum(layer["rows_per_concept"]) * w0.shape[0]
    energy = torch.tensor(layer["mse_W0"] * elements, dtype=torch.float64)  # f(W0), from the reference's own loss

    def mse(weight: torch.Tensor) -> float:
        return problem.objective(weight) / elements

    rows = torch.tensor(float(sum(layer["rows_per_concept"])), dtype=torch.float64)
    problem = LayerProblem(name, layer["stage"], w0, gram, cross, energy, rows, w0, len(layer["rows_per_concept"]))
    return problem, mse


def test_our_objective_reproduces_the_reference_loss(golden_layers):
    for name, layer in golden_layers.items():
        _, mse = problem_and_mse(name, layer)
        assert mse(layer["W_fused_reference"]) == pytest.approx(layer["mse_reference"], rel=1e-4, abs=1e-12), name


def test_closed_form_reaches_the_reference_objective_on_every_layer(golden_layers):
    """The exact solve is at or below the reference's L-BFGS loss on all 136 layers (text encoder, k/v, spatial);
    the default ridge gives up at most 1e-4 of what the concepts' LoRAs change."""
    default_total = reference_total = 0.0
    for name, layer in golden_layers.items():
        problem, mse = problem_and_mse(name, layer)
        exact = mse(ClosedForm(ridge=1e-9)(problem))
        assert exact <= layer["mse_reference"] + 1e-9 * layer["mse_W0"], name
        default = mse(ClosedForm()(problem))
        assert default <= layer["mse_reference"] + 1e-4 * layer["mse_W0"], name
        default_total += default / layer["mse_W0"]
        reference_total += layer["mse_reference"] / layer["mse_W0"]
    assert default_total < reference_total


def test_a_reference_fused_folder_loads_for_sampling_with_its_concepts():
    """The reference's fused model folder (tokens <new0>… mapped by new_concept_cfg.json) samples through our
    pipeline: each concept by name, with the embeddings of the files that were fused."""
    from mos_lightning.edlora_file import load_edlora
    from mos_lightning.pipelines import EDLoRAPipeline

    pipe = EDLoRAPipeline.from_pretrained(reference_file("fusion/reference_fused"), local_files_only=True,
                                          safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    assert {n: c.tokens for n, c in pipe.concepts.items()} == {"cat": ["<cat1>", "<cat2>"], "dog": ["<dog1>", "<dog2>"]}
    table = dict(zip(pipe.concept_tokens.names, pipe.concept_tokens.weight, strict=True))
    for name in ("cat", "dog"):
        for token, embedding in load_edlora(reference_file(f"fusion/edlora_{name}.pth")).embeddings.items():
            torch.testing.assert_close(table[token], embedding)
    images = pipe.sample(["a photo of <cat> next to <dog>"], [0], num_inference_steps=2, height=32, width=32)
    assert images.shape == (1, 32, 32, 3)


def test_a_reference_fusion_concept_list_is_accepted(tmp_path):
    import json

    from mos_lightning.data import FusionDataModule

    listing = tmp_path / "compose.json"
    listing.write_text(json.dumps([
        {"lora_path": str(reference_file("fusion/edlora_cat.pth")), "unet_alpha": 1.0, "text_encoder_alpha": 0.8,
         "concept_name": "<cat1> <cat2>"},
        {"lora_path": str(reference_file("fusion/edlora_dog.pth")), "unet_alpha": 0.9, "text_encoder_alpha": 1.0,
         "concept_name": "<dog1> <dog2>"},
    ]))
    data = FusionDataModule(concept_list=str(listing))
    data.setup("predict")
    assert [(c.name, c.tokens, c.unet_alpha, c.text_encoder_alpha) for c in data.fusion_concepts] == [
        ("edlora_cat", ["<cat1>", "<cat2>"], 1.0, 0.8), ("edlora_dog", ["<dog1>", "<dog2>"], 0.9, 1.0)]


def reference_fuser(**settings):
    """Our fuser on the reference's tiny model and two concepts, with the reference's statistics inputs."""
    from mos_lightning.fusion import ConceptSpec, Fuser, FusionSettings, load_concepts
    from mos_lightning.pipelines import EDLoRAPipeline

    pipe = EDLoRAPipeline.from_pretrained(reference_file("tiny-sd15"), local_files_only=True, safety_checker=None,
                                          requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    concepts = load_concepts([ConceptSpec(str(reference_file(f"fusion/edlora_{n}.pth"))) for n in ("cat", "dog")])
    return Fuser(pipe, concepts, FusionSettings(text_rows="unpadded", kv_positions="concept", spatial_model="hybrid",
                                                **settings))


def assert_grams_match(stage: str, golden_layers: dict, gram_of, concept: int | None = None):
    for name, layer in golden_layers.items():
        if layer["stage"] != stage:
            continue
        gram, rows = gram_of(name)
        expected = layer["gram_XtX_per_concept"]
        expected = expected.sum(0) if concept is None else expected[concept]
        count = sum(layer["rows_per_concept"]) if concept is None else layer["rows_per_concept"][concept]
        assert rows == count, (name, rows, count)
        torch.testing.assert_close(gram.double(), expected, rtol=1e-5, atol=1e-6 * float(expected.abs().max()))


def test_reference_inputs_reproduce_the_references_statistics(golden_layers):
    """With the reference's inputs (unpadded text rows, concept + end-token k/v rows, hybrid spatial trajectories)
    our statistics equal the reference's own Gram matrices and row counts on all 136 layers. The k/v and spatial
    stages read the reference's fused text encoder and k/v (their statistics depend on them)."""
    fuser = reference_fuser(num_inference_steps=2, height=32, width=32)
    for index in range(2):
        record = fuser.record(index)
        text = record.text_encoder
        assert_grams_match("te", golden_layers, lambda n, text=text: (text.grams[text.group_of[n]], text.rows[text.group_of[n]]),
                           index)
        fuser.add(index, record)
    fuser.fused["text_encoder"] = {n: golden_layers[n]["W_fused_reference"].float()
                                   for n in fuser.stage_layers["text_encoder"]}
    fuser.fused["unet"] = {n: golden_layers[n]["W_fused_reference"].float() for n in fuser.stage_layers["kv"]}
    for index in range(2):
        fuser.collect_kv(index)
    assert_grams_match("kv", golden_layers, lambda n: (fuser.sums["kv"].layer(n)[0], int(fuser.sums["kv"].layer(n)[3])))
    for index in range(2):  # the reference seeds each concept's trajectory with 1000 + its index, 128 px
        fuser.settings.spatial_seeds, fuser.settings.height, fuser.settings.width = [1000 + index], 128, 128
        fuser.settings.num_inference_steps = 20
        spatial = fuser.record_spatial_hybrid(index)
        assert_grams_match("spatial", golden_layers,
                           lambda n, spatial=spatial: (spatial.grams[spatial.group_of[n]], spatial.rows[spatial.group_of[n]]), index)
