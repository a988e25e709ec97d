import pytest
import torch

from mos_lightning.attention import LayerwiseCrossAttnProcessor, cross_attention_layers
from mos_lightning.models import load_base_model
from mos_lightning.tokens import create_layerwise_tokens, encode_prompts, initial_embedding, tokenize


@pytest.fixture
def base(tiny_model_dir):
    return load_base_model(str(tiny_model_dir))


def _tokens(base, layers=16, seed=0):
    torch.manual_seed(seed)
    return create_layerwise_tokens(base.tokenizer, base.text_encoder, ["<a1>", "<a2>"], torch.randn(2, layers, 32))


class SliceRecorder(LayerwiseCrossAttnProcessor):
    """Records the text states each layer attends to."""

    seen: dict[int, torch.Tensor] = {}

    def text_slice(self, states):
        out = super().text_slice(states)
        SliceRecorder.seen[self.layer] = out.detach().clone()
        return out


def _run_unet(base, tokens, prompt):
    layers = cross_attention_layers(base.unet)
    base.unet.set_attn_processor(
        {n: (SliceRecorder(layers.index(n), len(layers)) if n in layers else p) for n, p in base.unet.attn_processors.items()}
    )
    states = encode_prompts(base.text_encoder, tokenize(base.tokenizer, [prompt]), tokens, len(layers))
    torch.manual_seed(0)
    with torch.no_grad():
        base.unet(torch.randn(1, 4, 8, 8), torch.tensor([10]), states)
    return dict(SliceRecorder.seen)


def test_layer_l_attends_to_embedding_l(base):
    tokens = _tokens(base)
    before = _run_unet(base, tokens, "a photo of <a1> <a2>")
    with torch.no_grad():
        tokens.weight[:, 3] += 1.0
    after = _run_unet(base, tokens, "a photo of <a1> <a2>")
    changed = [k for k in range(16) if not torch.equal(before[k], after[k])]
    assert changed == [3]


def test_identical_layer_embeddings_equal_plain_encoding(base):
    tokens = _tokens(base, layers=1)
    ids = tokenize(base.tokenizer, ["a photo of <a1> <a2>", "a dog"])
    shared = encode_prompts(base.text_encoder, ids, tokens, 16)
    tokens_lw = create_layerwise_tokens(base.tokenizer, base.text_encoder, ["<b1>", "<b2>"], tokens.weight.detach().repeat(1, 16, 1))
    ids_lw = tokenize(base.tokenizer, ["a photo of <b1> <b2>", "a dog"])
    layerwise = encode_prompts(base.text_encoder, ids_lw, tokens_lw, 16)
    assert shared.shape == (2, 16 * 77, 32)
    torch.testing.assert_close(shared, layerwise)
    # the table row holds the layer mean, so a plain text-encoder pass agrees as well
    plain = base.text_encoder(ids_lw).last_hidden_state
    torch.testing.assert_close(layerwise[:, :77], plain)


def test_only_concept_positions_differ_between_layers(base):
    tokens = _tokens(base)
    states = encode_prompts(base.text_encoder, tokenize(base.tokenizer, ["<a1> <a2> on the beach"]), tokens, 16)
    per_layer = states.view(1, 16, 77, 32)
    # causal text encoder: positions before the first concept token (just BOS) are identical across layers
    assert torch.equal(per_layer[0, 0, 0], per_layer[0, 5, 0])
    assert not torch.allclose(per_layer[0, 0, 1], per_layer[0, 5, 1])


def test_token_clash_and_bad_initializers_raise(base):
    _tokens(base)
    with pytest.raises(ValueError, match="already exist"):
        create_layerwise_tokens(base.tokenizer, base.text_encoder, ["<a1>"], torch.zeros(1, 16, 32))
    with pytest.raises(ValueError, match="already exist"):
        create_layerwise_tokens(base.tokenizer, base.text_encoder, ["dog</w>"], torch.zeros(1, 16, 32))
    with pytest.raises(ValueError, match="single token"):
        initial_embedding("stable diffusion", base.tokenizer, base.text_encoder)
    word = initial_embedding("man", base.tokenizer, base.text_encoder)
    assert torch.equal(word, base.text_encoder.get_input_embeddings().weight[786])
    rand = initial_embedding("<rand-0.013>", base.tokenizer, base.text_encoder, torch.Generator().manual_seed(0))
    assert 0.005 < rand.std().item() < 0.03
