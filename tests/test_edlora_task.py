import random

import lightning.pytorch as pl
import pytest
import torch
from helpers import make_data, make_task, make_trainer

from mos_lightning.edlora_file import load_edlora
from mos_lightning.lora import FEED_FORWARD_TARGETS, UNET_TARGETS
from mos_lightning.losses import attention_regularisation
from mos_lightning.models import load_base_model


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    """A task trained for 8 steps on the redball demo concept, and its output folder."""
    from conftest import DEMO_CONCEPTS

    pl.seed_everything(0)
    out = tmp_path_factory.mktemp("edlora")
    task = make_task(tiny_model_dir, out)
    make_trainer(out, 8).fit(task, make_data(DEMO_CONCEPTS / "redball"))
    return task, out


def _fixed_batch(concept_dir):
    dm = make_data(concept_dir, batch_size=4, crop_prob=0.0, flip_prob=0.0)
    dm.setup("fit")
    return next(iter(torch.utils.data.DataLoader(dm.dataset, batch_size=4)))


def test_loss_falls_on_a_fixed_batch(tiny_model_dir, concept_dir, tmp_path):
    task = make_task(tiny_model_dir, tmp_path, lr_schedule="constant", noise_offset=0.0, unet_lr=5e-3)
    task.configure_model()
    batch = _fixed_batch(concept_dir)
    optimizer = torch.optim.AdamW(task.trainable_groups(), weight_decay=0.01)

    def loss_at(seed):
        torch.manual_seed(seed)
        return task.compute_loss(batch)[0]

    with torch.no_grad():
        before = torch.stack([loss_at(s) for s in range(4)]).mean()
    for step in range(60):
        optimizer.zero_grad()
        loss_at(step % 4).backward()
        optimizer.step()
    with torch.no_grad():
        after = torch.stack([loss_at(s) for s in range(4)]).mean()
    assert after < 0.85 * before, (before, after)


def test_only_concept_embeddings_and_lora_change(trained, tiny_model_dir):
    task, _ = trained
    fresh = load_base_model(str(tiny_model_dir))
    for name, module in (("unet", task.model.unet), ("text_encoder", task.model.text_encoder), ("vae", task.model.vae)):
        reference = getattr(fresh, name).state_dict()
        for key, value in module.state_dict().items():
            if "lora_" in key:
                continue
            key = key.replace(".base_layer", "")
            if key == "embeddings.token_embedding.weight":
                n = reference[key].shape[0]
                assert torch.equal(value[:n], reference[key]), "base embedding rows changed"
                continue
            assert torch.equal(value, reference[key]), f"{name}.{key} changed"
    # the trainable parts did move
    # At 64 px the mid block is 1x1, where self-attention's softmax is constant: its q/k get no gradient.
    lora_b = [p for n, p in task.model.unet.named_parameters() if "lora_B" in n and "mid_block.attentions.0.transformer_blocks.0.attn1.to_" not in n]
    assert len(lora_b) == 128 - 4 and all(p.abs().sum() > 0 for p in lora_b)
    te_b = [p for n, p in task.model.text_encoder.named_parameters() if "lora_B" in n]
    assert te_b and any(p.abs().sum() > 0 for p in te_b)
    init = torch.stack([torch.randn(32, generator=torch.Generator().manual_seed(0)) * 0.013])
    assert not torch.allclose(task.model.concept_tokens.weight[0, 0], init[0])


def test_end_of_fit_writes_edlora_file_that_reloads_exactly(trained):
    task, out = trained
    edlora = load_edlora(out / "edlora.safetensors")
    assert edlora.concepts["redball"].tokens == ["<redball1>", "<redball2>"]
    assert edlora.concepts["redball"].class_word == "ball"
    assert edlora.num_layers == 16 and edlora.rank == 4 and edlora.alpha == 1.0
    assert torch.equal(edlora.embeddings["<redball2>"], task.model.concept_tokens.weight[1].detach())
    live = dict(task.model.unet.named_parameters())
    for key, value in edlora.unet_lora.items():
        assert torch.equal(value, live[key.replace(".weight", ".edlora.weight")].detach())
    assert len(edlora.text_encoder_lora) == 2 * 4 * 2  # q,k,v,out × A,B × 2 layers


def test_embedding_norm_guard_stops_embedding_updates(tiny_model_dir, tmp_path):
    from conftest import DEMO_CONCEPTS

    task = make_task(tiny_model_dir, tmp_path, max_embedding_norm=0.0)
    task.configure_model()
    start = task.model.concept_tokens.weight.detach().clone()
    make_trainer(tmp_path, 3).fit(task, make_data(DEMO_CONCEPTS / "redball"))
    assert torch.equal(task.model.concept_tokens.weight.detach(), start)
    assert any(p.abs().sum() > 0 for n, p in task.model.unet.named_parameters() if "lora_B" in n)


def test_baseline_switches(tiny_model_dir, tmp_path):
    lora_baseline = make_task(tiny_model_dir, tmp_path, layerwise=False)
    lora_baseline.configure_model()
    assert lora_baseline.model.concept_tokens.weight.shape == (2, 1, 32)
    p_plus = make_task(tiny_model_dir, tmp_path, lora_rank=0)
    p_plus.configure_model()
    assert [g["name"] for g in p_plus.trainable_groups()] == ["embeddings"]
    assert p_plus.export().unet_lora == {}
    # LoRA on the feed-forward layers too (an option beyond the paper): exported with the attention LoRAs
    wider = make_task(tiny_model_dir, tmp_path, unet_lora_targets=(*UNET_TARGETS, *FEED_FORWARD_TARGETS))
    wider.configure_model()
    modules = {k.rsplit(".lora_", 1)[0] for k in wider.export().unet_lora}
    assert len(modules) == 16 * 8 + 16 * 2 and sum(m.endswith(FEED_FORWARD_TARGETS) for m in modules) == 16 * 2
    with pytest.raises(ValueError, match=r"linear layers of UNet2DConditionModel: .*proj_in.* are not linear"):
        make_task(tiny_model_dir, tmp_path, unet_lora_targets=("to_q", "proj_in")).configure_model()
    with pytest.raises(ValueError, match=r"\['ff.net.9'\] match no layer"):
        make_task(tiny_model_dir, tmp_path, unet_lora_targets=("to_q", "ff.net.9")).configure_model()


def test_mask_loss_and_attention_regularisation_train(tiny_model_dir, concept_dir, tmp_path):
    task = make_task(tiny_model_dir, tmp_path, mask_loss=True, attn_reg_weight=1.0, lora_rank=0)
    task.configure_model()
    batch = _fixed_batch(concept_dir)
    torch.manual_seed(0)
    loss = task.compute_loss(batch)[0]
    loss.backward()
    assert task.model.concept_tokens.weight.grad.abs().sum() > 0
    assert not task.model.recorder.maps and not task.model.recorder.active


def test_attention_regularisation_values():
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :] = 1
    inside = mask.flatten(2).transpose(1, 2).squeeze(-1)  # [1, 16]
    maps = torch.zeros(1, 16, 3)
    maps[0, :, 1] = inside[0]  # token at position 1 attends exactly to the mask
    maps[0, :, 2] = inside[0]
    positions = torch.tensor([[False, True, True]])
    assert attention_regularisation({0: maps}, positions, mask, weight=1.0).item() == pytest.approx(0.0)
    maps[0, :, 1] = 1 - inside[0]  # first token entirely outside: mean outside = 1
    assert attention_regularisation({0: maps}, positions, mask, weight=1.0).item() == pytest.approx(1.0)
    maps[0, :, 1] = 0.5 * (1 - inside[0])  # maps are divided by their maximum: the same
    assert attention_regularisation({0: maps}, positions, mask, weight=0.5).item() == pytest.approx(0.5)


def test_masks_required_for_mask_loss(tiny_model_dir, tmp_path):
    import shutil

    from conftest import DEMO_CONCEPTS

    data = tmp_path / "nomask"
    shutil.copytree(DEMO_CONCEPTS / "redball", data, ignore=shutil.ignore_patterns("masks"))
    task = make_task(tiny_model_dir, tmp_path, mask_loss=True)
    with pytest.raises(ValueError, match="mask"):
        make_trainer(tmp_path, 1).fit(task, make_data(data))
    assert task.model is None, "the base model must not be loaded before the data check"


def test_bad_arguments_raise_before_loading(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="one initializer per token"):
        make_task(tiny_model_dir, tmp_path, initializers=("man",))
    with pytest.raises(FileNotFoundError, match="neither an existing folder"):
        make_task("./no/such/model", tmp_path).configure_model()
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        make_task(tmp_path, tmp_path).configure_model()


def test_half_precision_frozen_weights_keep_trainable_state_in_fp32(tiny_model_dir, concept_dir, tmp_path):
    task = make_task(tiny_model_dir, tmp_path, frozen_dtype="bfloat16")
    task.configure_model()
    frozen = [p for m in (task.model.unet, task.model.text_encoder, task.model.vae) for p in m.parameters() if not p.requires_grad]
    trainable = [p for g in task.trainable_groups() for p in g["params"]]
    assert all(p.dtype == torch.bfloat16 for p in frozen)
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = task.compute_loss(_fixed_batch(concept_dir))[0]
    loss.backward()
    assert torch.isfinite(loss) and task.model.concept_tokens.weight.grad.abs().sum() > 0


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(tiny_model_dir, concept_dir, tmp_path):
    batch = _fixed_batch(concept_dir)
    results = []
    for checkpointing in (False, True):
        task = make_task(tiny_model_dir, tmp_path, gradient_checkpointing=checkpointing)
        torch.manual_seed(0)  # peft draws the LoRA A initialisation from the global RNG
        task.configure_model()
        torch.manual_seed(1)
        loss = task.compute_loss(batch)[0]
        loss.backward()
        grads = {n: p.grad.clone() for n, p in task.named_parameters() if p.requires_grad}
        results.append((loss.detach(), grads, task.model.unet.is_gradient_checkpointing and task.model.text_encoder.training))
    (loss_a, grads_a, on_a), (loss_b, grads_b, on_b) = results
    assert not on_a and on_b
    torch.testing.assert_close(loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="gradient_checkpointing cannot be combined"):
        make_task(tiny_model_dir, tmp_path, gradient_checkpointing=True, attn_reg_weight=0.01)


@pytest.mark.parametrize("crop_prob", [0.0, 0.5])
def test_cached_latents_give_the_same_losses_with_fewer_vae_encodes(tiny_model_dir, concept_dir, tmp_path, crop_prob):
    dm = make_data(concept_dir, batch_size=3, crop_prob=crop_prob, flip_prob=0.5)
    dm.setup("fit")
    batches = []
    for epoch in range(3):
        random.seed(epoch)  # the augmentations
        torch.manual_seed(epoch)
        batches += list(torch.utils.data.DataLoader(dm.dataset, batch_size=3, shuffle=True))
    views = [v for b in batches for v in b["view"]]
    if crop_prob == 0:
        assert all(views)
    else:  # a mix of cacheable (letterboxed) and randomly cropped samples, also within batches
        assert any(views) and not all(views)
        assert any(any(b["view"]) and not all(b["view"]) for b in batches)
    runs = []
    for cache in (False, True):
        task = make_task(tiny_model_dir, tmp_path, cache_latents=cache)
        torch.manual_seed(0)  # the LoRA initialisation
        task.configure_model()
        calls = []
        task.model.vae.encoder.register_forward_hook(lambda m, a, o, calls=calls: calls.append(a[0].shape[0]))
        losses = []
        for step, batch in enumerate(batches):
            torch.manual_seed(100 + step)
            with torch.no_grad():
                losses.append(task.compute_loss(batch)[0])
        runs.append((torch.stack(losses), sum(calls), len(task.model.latent_cache)))
    (plain, plain_encoded, _), (cached, cached_encoded, cached_views) = runs
    torch.testing.assert_close(cached, plain, rtol=1e-5, atol=1e-6)
    assert plain_encoded == len(views)
    assert cached_encoded == cached_views + views.count("") < plain_encoded  # each view once, crops every time


def test_logs_the_loss_and_embedding_norm_each_step(trained):
    task, _ = trained
    metrics = task.trainer.callback_metrics
    assert {"train/loss", "train/embedding_norm"} <= set(metrics)
    assert "train/diffusion_loss" not in metrics  # the only part of the loss: logged once, as train/loss
    assert torch.isfinite(metrics["train/loss"]) and metrics["train/embedding_norm"] > 0
    # the progress bar's loss is a host copy (off the GPU: this step's)
    bar = task.trainer.progress_bar_metrics
    assert set(bar) == {"loss"} and bar["loss"] == pytest.approx(metrics["train/loss"].item())


def test_gradient_accumulation_steps_once_per_cycle(tiny_model_dir, concept_dir, tmp_path):
    torch.manual_seed(0)
    task = make_task(tiny_model_dir, tmp_path / "out")
    stepped = []
    task.on_before_optimizer_step = lambda optimizer: stepped.append(task.trainer.fit_loop.total_batch_idx)
    make_trainer(tmp_path, 2, accumulate_grad_batches=2).fit(task, make_data(concept_dir))
    # batches 0+1 make one step, 2+3 the next: the stream repeats the 6 images, so no epoch end cuts a cycle short
    assert task.global_step == 2 and stepped == [1, 3]
    assert load_edlora(tmp_path / "out" / "edlora.safetensors").extra["global_step"] == 2


def test_embedding_kde_is_the_research_branch_formula():
    """KDELoss of the reference's research branch, transcribed from its formula: per learned embedding x,
    −log Σ_c mean_v N(x_c − e_vc; 0, h²), summed, times the weight."""
    from types import SimpleNamespace

    from mos_lightning.losses import EmbeddingKDE

    torch.manual_seed(0)
    vocabulary, learned = torch.randn(50, 8), (torch.randn(2, 3, 8) * 0.3).requires_grad_(True)
    h, weight = 0.5, 0.002
    expected = 0
    for x in learned.reshape(-1, 8):
        kernel = torch.exp(-0.5 * ((x - vocabulary) / h) ** 2) / (torch.sqrt(torch.tensor(2 * torch.pi)) * h)
        expected = expected - torch.log(kernel.mean(0).sum())
    expected = weight * expected
    ours = EmbeddingKDE(weight, h)(SimpleNamespace(vocabulary=vocabulary, embeddings=learned), {})
    torch.testing.assert_close(ours, expected)
    (grad,) = torch.autograd.grad(ours, learned)
    (expected_grad,) = torch.autograd.grad(expected, learned)
    torch.testing.assert_close(grad, expected_grad)


def test_embedding_kde_trains_as_a_loss_term(tiny_model_dir, concept_dir, tmp_path):
    from mos_lightning.losses import DiffusionLoss, EmbeddingKDE

    task = make_task(tiny_model_dir, tmp_path, losses=[DiffusionLoss(), EmbeddingKDE()])
    make_trainer(tmp_path, 2).fit(task, make_data(concept_dir))
    vocabulary = task.model.text_encoder.get_input_embeddings().weight
    assert task.model.vocabulary_size == vocabulary.shape[0] - 2  # every row but the concept's two tokens


@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_kv_lora_dropout_switches_off_cross_attention_kv_loras(tiny_model_dir, concept_dir, tmp_path, rate):
    task = make_task(tiny_model_dir, tmp_path, kv_lora_dropout=rate)
    task.configure_model()
    task.train()
    with torch.no_grad():  # give every LoRA an output, so that switching one off changes the step
        for name, param in task.model.unet.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.1)
    task.compute_loss(_fixed_batch(concept_dir))[0].backward()
    kv = {n: p.grad for n, p in task.model.unet.named_parameters() if "lora_A" in n and "attn2.to_" in n
          and n.split("attn2.to_")[1][0] in "kv"}
    # self-attention's value and output LoRAs: its query and key LoRAs get no gradient where a level has one cell
    # (the tiny model's mid block: softmax over one key is 1 whatever q and k are)
    others = [p.grad for n, p in task.model.unet.named_parameters() if "lora_A" in n and "attn1." in n
              and n.split("attn1.to_")[1][0] in "vo"]
    assert len(kv) == 32 and len(others) == 32 and all(g is not None and g.abs().sum() > 0 for g in others)
    assert all((g is None or g.abs().sum() == 0) == (rate == 1.0) for g in kv.values())
    assert all(m.scaling["edlora"] == 1.0 for m in task.model.kv_lora)  # restored after the step
