"""Training parity with the reference implementation's own numbers (attention regularisation, loss, gradients).

These fail when the method breaks: the layer order of the cross-attention layers (the embedding gradients
are per layer), the noise offset, the mask loss, the regulariser, the random draws' order.
"""

from __future__ import annotations

import pytest
import torch
from reference import load_golden, reference_file

from mos_lightning.edlora_file import import_reference_pth
from mos_lightning.edlora_model import EDLoRAModel
from mos_lightning.losses import AttentionRegularisation, DiffusionLoss, attention_regularisation
from mos_lightning.models import load_base_model


@pytest.mark.parametrize("full_identity", [False, True])
def test_attention_regularisation_matches_the_reference(full_identity):
    golden = load_golden(f"attn_reg/attn_reg_reg_full_identity_{str(full_identity).lower()}.pt")
    batch, heads = golden["batch_size"], golden["heads"]
    raw = [m.clone().requires_grad_(True) for key in ("down_cross", "mid_cross", "up_cross")
           for m in golden["attention_maps"][key]]
    maps = {i: m.view(batch, heads, *m.shape[1:]).mean(1) for i, m in enumerate(raw)}  # head-averaged, as recorded
    first_copy = golden["text_input_ids"].view(batch, -1, golden["text_input_ids"].shape[-1])[:, 0]
    positions = torch.isin(first_copy, torch.tensor(golden["all_concept_token_ids"]))
    loss = attention_regularisation(maps, positions, golden["masks"], golden["attn_reg_weight"], full_identity)
    assert abs(loss.item() - golden["loss_float"]) <= 1e-7
    loss.backward()
    expected = [g for key in ("down_cross", "mid_cross", "up_cross") for g in golden["grad_attention_maps"][key]]
    for ours, theirs in zip(raw, expected, strict=True):
        assert torch.allclose(ours.grad, theirs, atol=1e-9, rtol=1e-5)


def test_attention_regularisation_is_zero_when_masks_cover_everything():
    maps = {0: torch.rand(2, 16, 8, requires_grad=True)}
    positions = torch.zeros(2, 8, dtype=torch.bool)
    positions[:, 2:4] = True
    loss = attention_regularisation(maps, positions, torch.ones(2, 1, 4, 4))
    loss.backward()
    assert loss.item() == 0 and torch.isfinite(maps[0].grad).all()


CASES = {
    "i_mask_off": [DiffusionLoss(mask_loss=False)],
    "ii_mask_on": [DiffusionLoss(mask_loss=True)],
    "iii_mask_on_attnreg0.01": [DiffusionLoss(mask_loss=True), AttentionRegularisation(0.01)],
    "iv_mask_on_attnreg0.01_fullidentity": [DiffusionLoss(mask_loss=True), AttentionRegularisation(0.01, True)],
}


def reference_trainer_model() -> EDLoRAModel:
    """Our model on the reference's tiny base, holding the reference trainer's initial state."""
    base = load_base_model(str(reference_file("tiny-sd15")))
    model = EDLoRAModel(base, ("<dog1>", "<dog2>"), ("<rand-0.013>", "dog"), noise_offset=0.01, cache_latents=False)
    model.load_weights(import_reference_pth(reference_file("training/initial_state.pth")))
    return model


def reference_name(name: str) -> str:
    return name.replace(".lora_A.edlora.weight", ".lora_down.weight").replace(".lora_B.edlora.weight", ".lora_up.weight")


@pytest.fixture(scope="module")
def reference_model():
    torch.set_num_threads(2)  # the goldens were made with 2 threads: same reduction orders where it matters
    return reference_trainer_model()


@pytest.mark.parametrize("size", [64, 128])
@pytest.mark.parametrize("case", list(CASES))
def test_training_loss_and_gradients_match_the_reference(reference_model, size, case):
    golden = load_golden(f"training/golden_{size}px_initial.pt")
    inputs, expected = golden["inputs"], golden["cases"][case]
    model = reference_model
    model.zero_grad(set_to_none=True)
    batch = {"pixel_values": inputs["images"], "caption": list(inputs["prompts"]),
             "mask": inputs["masks"], "valid_mask": inputs["img_masks"]}
    terms = CASES[case]
    output = model(batch, record_attention=any(t.needs_attention_maps for t in terms), latent_noise=inputs["vae_eps"],
                   noise=inputs["noise"], offset_noise=inputs["offset_noise"], timesteps=inputs["timesteps"])
    loss = sum(term(output, batch) for term in terms)
    loss.backward()

    steps = expected["intermediates"]
    assert torch.allclose(output.latents, steps["latents"], rtol=1e-5, atol=1e-6)
    assert torch.allclose(output.noisy_latents, steps["noisy_latents"], rtol=1e-5, atol=1e-6)
    assert loss.item() == pytest.approx(expected["loss_float"], rel=1e-5)
    grads = dict(zip(model.concept_tokens.names, model.concept_tokens.weight.grad, strict=True))
    for token, grad in expected["grad_concept_embedding"].items():  # row l = cross-attention layer l
        assert torch.allclose(grads[token], grad, rtol=1e-4, atol=1e-7), token
    for part, module in (("grad_text_encoder_lora", model.text_encoder), ("grad_unet_lora", model.unet)):
        ours = {reference_name(n): p.grad for n, p in module.named_parameters() if p.requires_grad}
        assert ours.keys() == expected[part].keys()
        for name, grad in expected[part].items():
            assert torch.allclose(ours[name], grad, rtol=1e-4, atol=1e-7), name


def test_random_draws_follow_the_reference_order(reference_model):
    """Unseeded draws happen in the reference trainer's order (``random_call_order`` of the golden), so a run
    seeded like a reference run draws the same VAE sample, noise, offset and timesteps."""
    golden = load_golden("training/golden_64px_initial.pt")
    inputs = golden["inputs"]
    assert golden["cases"]["i_mask_off"]["random_call_order"] == [
        "randn:vae_eps", "randn_like:noise", "randn:offset_noise", "randint:timesteps"]
    torch.manual_seed(7)
    eps, noise, offset = torch.randn(2, 4, 32, 32), torch.randn(2, 4, 32, 32), torch.randn(2, 4, 1, 1)
    timesteps = torch.randint(0, 1000, (2,))
    batch = {"pixel_values": inputs["images"], "caption": list(inputs["prompts"]), "valid_mask": inputs["img_masks"]}
    with torch.no_grad():
        explicit = reference_model(batch, latent_noise=eps, noise=noise, offset_noise=offset, timesteps=timesteps)
        torch.manual_seed(7)
        drawn = reference_model(batch)
    assert torch.equal(drawn.timesteps, timesteps)
    assert torch.equal(drawn.noise, explicit.noise) and torch.equal(drawn.latents, explicit.latents)
