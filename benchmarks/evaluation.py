"""Evaluation benchmark: images/s of a full evaluation step (ED-LoRA generation + CLIP text/image
alignment) vs plain diffusers sampling on the same model in the same process, and the time one
concept's 1000 images (20 prompts × 50 seeds) would take.

    python benchmarks/evaluation.py --size sd15 --batch-size 8           # GPU, fp16, 512², CLIP ViT-B/32 shape
    python benchmarks/evaluation.py --size tiny --device cpu --calls 2   # CPU smoke run

Random weights: SD 1.5-sized components and a CLIP of ViT-B/32's shape (the shapes are what cost time).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import pipeline, report  # benchmarks/ is on sys.path when these scripts run
from diffusers import StableDiffusionPipeline
from diffusers.models.attention_processor import AttnProcessor2_0
from sampling import random_concept  # benchmarks/ is on sys.path when this script runs
from train_step import build_components

from mos_lightning.defaults import NEGATIVE_PROMPT
from mos_lightning.metrics import TEXT_PREFIX, image_alignment_scores, text_alignment_scores
from mos_lightning.pipelines import EDLoRAPipeline
from mos_lightning.tiny import build_clip_tokenizer


def build_clip(size: str, device: str, dtype: torch.dtype):
    """A random CLIPModel (ViT-B/32 shape for sd15, tiny otherwise) and its processor."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    if size == "sd15":
        config, side = CLIPConfig(), 224  # transformers' defaults are ViT-B/32's shape
    else:
        small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
        config = CLIPConfig(text_config=small, vision_config=dict(image_size=32, patch_size=8, **small), projection_dim=16)
        side = 32
    with torch.device(device):
        model = CLIPModel(config).to(dtype).eval()
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": side},
                                                                 crop_size={"height": side, "width": side}),
                              tokenizer=build_clip_tokenizer())
    return model, processor


@torch.no_grad()
def clip_scores(model, processor, images: np.ndarray, prompts: list[str], references: torch.Tensor, device):
    from PIL import Image

    pixels = processor(images=[Image.fromarray(i) for i in images], return_tensors="pt")["pixel_values"]
    image = model.get_image_features(pixel_values=pixels.to(device, model.dtype)).pooler_output
    tokens = processor(text=[TEXT_PREFIX + p for p in prompts], return_tensors="pt", padding=True)
    text = model.get_text_features(**{k: v.to(device) for k, v in tokens.items()}).pooler_output
    return text_alignment_scores(image, text), image_alignment_scores(image, references)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("sd15", "tiny"), default="sd15")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--calls", type=int, default=3, help="timed batches per setting")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    dtype = torch.float16 if cuda else torch.float32
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    resolution = 512 if args.size == "sd15" else 64

    base = build_components(args.size, args.device)
    plain = pipeline(StableDiffusionPipeline, base, args.device, dtype)
    ours = pipeline(EDLoRAPipeline, base, args.device, dtype)
    plain.unet.set_attn_processor(AttnProcessor2_0())
    clip, processor = build_clip(args.size, args.device, dtype)
    references = torch.randn(10, clip.config.projection_dim, device=args.device)
    batch = args.batch_size
    kwargs = dict(num_inference_steps=args.steps, guidance_scale=7.5, height=resolution, width=resolution,
                  negative_prompt=[NEGATIVE_PROMPT] * batch, output_type="np")

    def plain_step(i):
        plain(["A dog, in the snow"] * batch, generator=[torch.Generator().manual_seed(i * batch + k) for k in range(batch)],
              **kwargs)

    def eval_step(i):
        images = ours(["A <TOK>, in the snow"] * batch,
                      generator=[torch.Generator().manual_seed(i * batch + k) for k in range(batch)], **kwargs).images
        clip_scores(clip, processor, (images * 255).round().astype(np.uint8), ["A dog, in the snow"] * batch,
                    references, args.device)

    def rate(step) -> float:
        step(0)  # warm-up
        sync()
        start = time.perf_counter()
        for i in range(1, args.calls + 1):
            step(i)
        sync()
        return args.calls * batch / (time.perf_counter() - start)

    plain_ips = rate(plain_step)
    ours.load_edlora(random_concept(base), scale=0.7)
    eval_ips = rate(eval_step)
    summary = {
        "size": args.size, "device": torch.cuda.get_device_name() if cuda else "cpu", "batch": batch,
        "steps": args.steps, "plain_sampling_images_per_s": plain_ips, "evaluation_images_per_s": eval_ips,
        "ratio": eval_ips / plain_ips, "minutes_per_1000_images": 1000 / eval_ips / 60,
    }
    report(summary, args.json)


if __name__ == "__main__":
    main()
