"""A tiny random Stable-Diffusion-1.x-shaped model, saved as a real diffusers folder.

Tests and the demo use it so that everything downstream goes through the real
``from_pretrained`` path without downloading weights. The UNet keeps SD 1.5's block
layout (three cross-attention down blocks, one plain; mirrored up blocks; a cross-attention
mid block), so it has the real 16 cross-attention layers, with tiny channels.

The tokenizer is the real 49408-token CLIP BPE vocabulary, rebuilt offline from the BPE
merges file that ships inside the ``open_clip_torch`` wheel (installed with ``--no-deps``).
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
from pathlib import Path

import torch

TINY_HIDDEN = 32
TINY_RESOLUTION = 64


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte-level alphabet: every byte maps to a printable unicode character."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def clip_bpe_path() -> Path:
    """Locate ``bpe_simple_vocab_16e6.txt.gz`` inside the installed open_clip package (not imported)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The tiny model needs the CLIP BPE vocabulary shipped in the open_clip_torch wheel. "
            "Install it without its dependencies: pip install --no-deps open_clip_torch"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise FileNotFoundError(f"open_clip is installed but {path} is missing; reinstall open_clip_torch")
    return path


def build_clip_tokenizer():
    """The SD 1.x CLIP tokenizer (49408 tokens), rebuilt the way CLIP builds it from its BPE merges."""
    from transformers import CLIPTokenizer

    lines = gzip.open(clip_bpe_path()).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    alphabet = list(_bytes_to_unicode().values())
    vocab = alphabet + [c + "</w>" for c in alphabet] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(
        vocab={tok: i for i, tok in enumerate(vocab)}, merges=merges, model_max_length=77
    )


def build_tiny_pipeline(seed: int = 0):
    """Build a random tiny ``StableDiffusionPipeline`` with SD 1.5's layout (16 cross-attention layers)."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=TINY_RESOLUTION // 8,
        block_out_channels=(32, 32, 64, 64),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=TINY_HIDDEN,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        block_out_channels=(16, 16, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=TINY_RESOLUTION,
    )
    tokenizer = build_clip_tokenizer()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=TINY_HIDDEN,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
        skip_prk_steps=True,
        set_alpha_to_one=False,
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def save_tiny_model(out_dir: str | Path, seed: int = 0, overwrite: bool = False) -> Path:
    """Save the tiny model as a diffusers folder (skipped if one is already there)."""
    out_dir = Path(out_dir)
    if (out_dir / "model_index.json").is_file() and not overwrite:
        return out_dir
    build_tiny_pipeline(seed).save_pretrained(out_dir)
    return out_dir


def save_tiny_clip(out_dir: str | Path, seed: int = 0, overwrite: bool = False) -> Path:
    """Save a tiny random transformers ``CLIPModel`` + ``CLIPProcessor`` (32² images) for the metrics' demo/tests."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file() and not overwrite:
        return out_dir
    torch.manual_seed(seed)
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    config = CLIPConfig(
        text_config=dict(vocab_size=49408, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
                         pad_token_id=49407, **small),
        vision_config=dict(image_size=32, patch_size=8, **small),
        projection_dim=16,
    )
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPModel(config).save_pretrained(out_dir)
    CLIPProcessor(image_processor=image_processor, tokenizer=build_clip_tokenizer()).save_pretrained(out_dir)
    return out_dir


def save_tiny_adapter(out_dir: str | Path, seed: int = 0, overwrite: bool = False, in_channels: int = 3) -> Path:
    """Save a tiny random diffusers ``T2IAdapter`` matching the tiny UNet (for regional-sampling demos/tests)."""
    from diffusers import T2IAdapter

    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file() and not overwrite:
        return out_dir
    torch.manual_seed(seed)
    channels = [32, 32, 64, 64]  # the tiny UNet's block_out_channels
    T2IAdapter(in_channels=in_channels, channels=channels, num_res_blocks=1, downscale_factor=8).save_pretrained(out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the tiny random SD-1.x-shaped demo/test model.")
    parser.add_argument("out_dir", help="folder to write the diffusers model into")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument("--overwrite", action="store_true", help="rewrite an existing model")
    parser.add_argument("--clip", help="also write a tiny random CLIP model (for the metrics) into this folder")
    parser.add_argument("--adapter", help="also write a tiny random T2I-Adapter (for regional sampling) into this folder")
    args = parser.parse_args(argv)
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # "Writing model shards" bars for a few kB
    print(save_tiny_model(args.out_dir, args.seed, args.overwrite))
    if args.clip:
        print(save_tiny_clip(args.clip, args.seed, args.overwrite))
    if args.adapter:
        print(save_tiny_adapter(args.adapter, args.seed, args.overwrite))


if __name__ == "__main__":
    main()
