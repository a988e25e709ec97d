import pytest
import torch

from mos_lightning.edlora_file import ConceptInfo, EDLoRA, load_edlora, save_edlora
from mos_lightning.lora import UNET_TARGETS, add_lora, lora_state_dict, merge_lora, restore
from mos_lightning.models import check_compatible, load_base_model


def _random_edlora(base, rank=4) -> EDLoRA:
    torch.manual_seed(0)
    add_lora(base.unet, UNET_TARGETS, rank, 1.0)
    unet = {k: torch.randn_like(v) for k, v in lora_state_dict(base.unet).items()}
    return EDLoRA(
        concepts={"cat": ConceptInfo(["<cat1>", "<cat2>"], "cat")},
        embeddings={"<cat1>": torch.randn(16, 32), "<cat2>": torch.randn(16, 32)},
        unet_lora=unet,
        text_encoder_lora={"encoder.layers.0.self_attn.q_proj.lora_A.weight": torch.randn(rank, 32),
                           "encoder.layers.0.self_attn.q_proj.lora_B.weight": torch.randn(32, rank)},
        num_layers=16, rank=rank, alpha=1.0, base_model="tiny",
    )


def test_safetensors_round_trip_is_exact(tiny_model_dir, tmp_path):
    edlora = _random_edlora(load_base_model(str(tiny_model_dir)))
    path = save_edlora(tmp_path / "c.safetensors", edlora)
    again = load_edlora(path)
    assert again.concepts == edlora.concepts and again.metadata() == edlora.metadata()
    for field in ("embeddings", "unet_lora", "text_encoder_lora"):
        a, b = getattr(edlora, field), getattr(again, field)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not list(tmp_path.glob(".*tmp")), "no temporary file left behind"


@pytest.mark.parametrize("branch", ["main", "research"])
def test_reference_pth_imports_to_the_same_tensors(tiny_model_dir, tmp_path, branch):
    edlora = _random_edlora(load_base_model(str(tiny_model_dir)))
    # main: "<module>.lora_down.weight"; research: LoRA modules named "<module>_lora" with "down"/"up" layers
    down, up = (".lora_down.weight", ".lora_up.weight") if branch == "main" else ("_lora.down.weight", "_lora.up.weight")

    def reference_key(key: str, text: bool) -> str:
        key = key.replace(".lora_A.weight", down).replace(".lora_B.weight", up)
        return "text_model." + key if text else key

    params = {
        "new_concept_embedding": dict(edlora.embeddings),
        "text_encoder": {reference_key(k, True): v for k, v in edlora.text_encoder_lora.items()},
        "unet": {reference_key(k, False): v for k, v in edlora.unet_lora.items()},
    }
    torch.save({"params": params}, tmp_path / "cat.pth")
    imported = load_edlora(tmp_path / "cat.pth")
    assert imported.concepts["cat"].tokens == ["<cat1>", "<cat2>"]
    assert imported.rank == 4 and imported.num_layers == 16
    for field in ("embeddings", "unet_lora", "text_encoder_lora"):
        a, b = getattr(edlora, field), getattr(imported, field)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_unknown_reference_lora_keys_are_named(tmp_path):
    torch.save({"params": {"new_concept_embedding": {"<a>": torch.zeros(16, 8)}, "unet": {"x.weird": torch.zeros(1)}}},
               tmp_path / "odd.pth")
    with pytest.raises(ValueError, match=r"odd.pth: LoRA key 'x.weird'"):
        load_edlora(tmp_path / "odd.pth")


def test_pickled_code_in_pth_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"params": {"new_concept_embedding": {}}, "x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(Exception, match="[Ww]eights only"):
        load_edlora(tmp_path / "evil.pth")


def test_wrong_base_model_is_a_clear_error(tiny_model_dir):
    base = load_base_model(str(tiny_model_dir))
    edlora = _random_edlora(base)
    check_compatible(edlora, base.unet, base.text_encoder)
    edlora.embeddings = {k: v[:12] for k, v in edlora.embeddings.items()}
    edlora.num_layers = 12
    with pytest.raises(ValueError, match="12 layer-wise embeddings.*16 cross-attention"):
        check_compatible(edlora, base.unet, base.text_encoder)
    wide = _random_edlora(load_base_model(str(tiny_model_dir)))
    wide.embeddings = {k: torch.zeros(16, 768) for k in wide.embeddings}
    with pytest.raises(ValueError, match="768-wide"):
        check_compatible(wide, base.unet, base.text_encoder)


def test_merge_then_restore_is_bit_exact(tiny_model_dir):
    base = load_base_model(str(tiny_model_dir))
    before = {k: v.clone() for k, v in base.unet.state_dict().items()}
    edlora = _random_edlora(load_base_model(str(tiny_model_dir)))
    originals = merge_lora(base.unet, edlora.unet_lora, edlora.alpha, 0.7)
    assert not torch.equal(base.unet.state_dict()["mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight"],
                           before["mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight"])
    restore(base.unet, originals)
    assert all(torch.equal(v, before[k]) for k, v in base.unet.state_dict().items())


def test_not_an_edlora_file(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not an ED-LoRA"):
        load_edlora(tmp_path / "other.safetensors")
    with pytest.raises(FileNotFoundError):
        load_edlora(tmp_path / "missing.safetensors")
