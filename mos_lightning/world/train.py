"""Train the world's base model and its CLIP from scratch, seeded, on whatever device there is.

    python -m mos_lightning.world.train base outputs/world/base     # VAE, then UNet + text encoder
    python -m mos_lightning.world.train clip outputs/world/clip     # image and text towers, contrastive
    python -m mos_lightning.world.train vae outputs/world/base-vae --from demo/world/base   # a base's VAE, further

Both write diffusers / transformers folders (safetensors) plus ``training.json`` (every setting, the steps, the
time, the machine, the final losses). Rows of the token tables for words the world never uses stay zero, so the
shipped files compress to what the world needs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..resources import locate
from .data import caption_variants, world_pictures, world_scenes
from .denoiser import train_denoiser
from .grounding import scene_targets
from .model import HIDDEN, RESOLUTION, build_world_pipeline
from .scenes import BACKGROUNDS, CLASSES, COLOURS, PATTERNS, THINGS_WEIGHTS


def world_words() -> list[str]:
    """Every word a world caption (or a prompt about the world) can contain."""
    words = {"a", "an", "and", "the", "on", "in", "of", "photo", "picture", "wooden", *CLASSES, *COLOURS, *PATTERNS}
    for phrase in BACKGROUNDS.values():
        words |= set(phrase.split())
    return sorted(words)


def keep_world_rows(embedding: torch.nn.Embedding, tokenizer) -> None:
    """Zero the rows of tokens no world text uses (special tokens and the world's words keep theirs)."""
    ids = set(tokenizer(" ".join(world_words()) + " ,").input_ids) | set(tokenizer.all_special_ids)
    keep = torch.zeros(embedding.weight.shape[0], dtype=torch.bool)
    keep[sorted(ids)] = True
    with torch.no_grad():
        embedding.weight[~keep] = 0
    embedding.weight.register_hook(lambda grad: grad * keep[:, None].to(grad.dtype))


def machine() -> dict:
    return {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
            "processor": platform.processor(), "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---------------------------------------------------------------------------------------------------- base
def train_vae(vae, images: torch.Tensor, steps: int, batch: int, lr: float, device: str) -> float:
    vae.train().to(device)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(1)
    loss_value = math.nan
    for step in range(steps):
        index = torch.randint(0, images.shape[0], (batch,), generator=generator)
        x = images[index].to(device)
        posterior = vae.encode(x).latent_dist
        reconstruction = vae.decode(posterior.sample(generator=None)).sample
        loss = F.l1_loss(reconstruction, x) + 1e-6 * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_value = loss.item()
        if step % 200 == 0 or step == steps - 1:
            log(f"vae step {step}/{steps}: loss {loss_value:.4f}")
    return loss_value


@torch.no_grad()
def encode_all(vae, images: torch.Tensor, device: str, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    vae.eval()
    means, stds = [], []
    for start in range(0, images.shape[0], batch):
        dist = vae.encode(images[start:start + batch].to(device)).latent_dist
        means.append(dist.mean.cpu())
        stds.append(dist.std.cpu())
    return torch.cat(means), torch.cat(stds)


def train_base(out: Path, pictures: int, vae_steps: int, unet_steps: int, batch: int, device: str, seed: int,
               resume: Path | None = None, things_weights: tuple[float, ...] = THINGS_WEIGHTS, lr: float = 3e-4,
               stream: int | None = None, sparse_captions: bool = False, grounding: float = 0.0) -> dict:
    """VAE, then UNet + text encoder; with ``resume`` (a base this function wrote), its VAE is kept and the
    denoiser trains ``unet_steps`` more from its weights (the record keeps the earlier run's). ``things_weights``:
    how often a picture has one, two, three things; ``stream``: the batches' generator seed (default 2, resumed 20);
    ``sparse_captions``: a picture of several things is also captioned naming one thing's colour only (half the
    time), so that a colour word is seen to belong to its noun (:func:`~mos_lightning.world.data.caption_variants`)."""
    start = time.time()
    tag = "" if tuple(things_weights) == THINGS_WEIGHTS else "-w" + "_".join(f"{w:g}" for w in things_weights)
    images, captions = world_pictures(pictures, seed, RESOLUTION, cache=out.parent / f"world-{pictures}-{seed}{tag}.npz",
                                      things_weights=things_weights)
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    if resume is None:
        pipe = build_world_pipeline(seed)
        keep_world_rows(pipe.text_encoder.get_input_embeddings(), pipe.tokenizer)
        vae_loss = train_vae(pipe.vae, pixels, vae_steps, 32, 1e-3, device)
        mean, std = encode_all(pipe.vae, pixels, device)
        pipe.vae.register_to_config(scaling_factor=float(1.0 / mean.std()))
        log(f"latent scaling factor {pipe.vae.config.scaling_factor:.4f}")
    else:
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline.from_pretrained(resume, safety_checker=None, requires_safety_checker=False)
        keep_world_rows(pipe.text_encoder.get_input_embeddings(), pipe.tokenizer)
        if pipe.vae.config.latent_channels != pipe.unet.config.in_channels:  # `world.train vae --latent-channels`
            from .latent_width import widen_unet_latent

            pipe.register_modules(unet=widen_unet_latent(pipe.unet, pipe.vae.config.latent_channels))
        vae_loss, vae_steps = None, 0
        mean, std = encode_all(pipe.vae.to(device), pixels, device)
    stream = stream if stream is not None else 2 if resume is None else 20  # a resumed run draws other batches
    scenes = world_scenes(pictures, seed, things_weights)
    variants = caption_variants(scenes, captions, sparse_captions, seed)
    targets = [scene_targets(pipe.tokenizer, s) for s in scenes] if grounding else None
    denoise_loss = train_denoiser(pipe, (mean, std), variants, unet_steps, batch, lr, device,
                                  warmup=500 if resume is None else 100, stream=stream, grounding=grounding,
                                  targets=targets)
    pipe.to("cpu")
    for module in (pipe.unet, pipe.text_encoder, pipe.vae):
        module.eval()
    pipe.save_pretrained(out)
    record = {"kind": "base", "pictures": pictures, "seed": seed, "things_weights": list(things_weights),
              "vae_steps": vae_steps, "unet_steps": unet_steps, "batch": batch, "lr": lr, "stream": stream,
              "sparse_captions": sparse_captions, **({"grounding": grounding} if grounding else {}),
              "final_vae_loss": vae_loss, "final_denoise_loss": denoise_loss,
              "scaling_factor": pipe.vae.config.scaling_factor, "minutes": round((time.time() - start) / 60, 1),
              "machine": machine(), "torch": torch.__version__}
    if resume is not None:
        record["resumed_from"] = json.loads((resume / "training.json").read_text())
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


# ---------------------------------------------------------------------------------------------------- clip
def build_world_clip(seed: int = 0):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from ..tiny import build_clip_tokenizer

    torch.manual_seed(seed)
    tower = dict(hidden_size=HIDDEN, intermediate_size=4 * HIDDEN, num_hidden_layers=3, num_attention_heads=4)
    config = CLIPConfig(
        text_config=dict(vocab_size=49408, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
                         pad_token_id=49407, **tower),
        vision_config=dict(image_size=RESOLUTION, patch_size=8, **tower), projection_dim=64,
    )
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": RESOLUTION},
                                           crop_size={"height": RESOLUTION, "width": RESOLUTION}),
        tokenizer=build_clip_tokenizer())
    return CLIPModel(config), processor


def train_clip(out: Path, pictures: int, steps: int, batch: int, device: str, seed: int) -> dict:
    """Contrastive (CLIP's loss) on batches of half world pictures, half their twins (one attribute of one thing
    changed, :func:`~mos_lightning.world.data.twin`): without the twins a batch is told apart by background and
    colour alone and the class is never learned (zero-shot class 37 % after 2000 plain steps)."""
    start = time.time()
    images, captions = world_pictures(pictures, seed, RESOLUTION, cache=out.parent / f"world-{pictures}-{seed}.npz")
    twin_images, twin_captions = world_pictures(pictures, seed, RESOLUTION, twins=True,
                                                cache=out.parent / f"world-twins-{pictures}-{seed}.npz")
    model, processor = build_world_clip(seed)
    keep_world_rows(model.text_model.embeddings.token_embedding, processor.tokenizer)
    model.to(device).train()
    # the processor's normalisation, applied in bulk (the pictures are already at the processor's size)
    mean = torch.tensor(processor.image_processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(processor.image_processor.image_std).view(1, 3, 1, 1)
    all_pixels = (torch.from_numpy(np.concatenate([images, twin_images])).permute(0, 3, 1, 2).float() / 255 - mean) / std
    tokens = processor.tokenizer(captions + twin_captions, padding="max_length", max_length=77, truncation=True,
                                 return_tensors="pt")
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.05)
    warmup = min(300, steps // 10 + 1)
    schedule = torch.optim.lr_scheduler.LambdaLR(  # warm-up, then cosine decay to a tenth
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * (0.55 + 0.45 * math.cos(math.pi * min(1.0, s / steps))))
    generator = torch.Generator().manual_seed(3)
    running = None
    for step in range(steps):
        originals = torch.randint(0, pictures, (batch // 2,), generator=generator)
        index = torch.cat([originals, originals + pictures])
        output = model(input_ids=tokens.input_ids[index].to(device), attention_mask=tokens.attention_mask[index].to(device),
                       pixel_values=all_pixels[index].to(device), return_loss=True)
        optimizer.zero_grad(set_to_none=True)
        output.loss.backward()
        optimizer.step()
        schedule.step()
        running = output.loss.item() if running is None else 0.98 * running + 0.02 * output.loss.item()
        if step % 200 == 0 or step == steps - 1:
            log(f"clip step {step}/{steps}: loss {running:.4f}")
    model.to("cpu").eval()
    model.save_pretrained(out)
    processor.save_pretrained(out)
    record = {"kind": "clip", "pictures": pictures, "twins": pictures, "seed": seed, "steps": steps, "batch": batch,
              "final_loss": running, "minutes": round((time.time() - start) / 60, 1), "machine": machine(),
              "torch": torch.__version__}
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the world's base model or CLIP from scratch, or a base's VAE "
                                     "further (world/vae_train.py).")
    parser.add_argument("what", choices=["base", "clip", "vae"])
    parser.add_argument("out", help="output folder")
    parser.add_argument("--pictures", type=int, default=20000, help="world pictures to train on")
    parser.add_argument("--vae-steps", type=int, default=1500)
    parser.add_argument("--unet-steps", type=int, default=8000)
    parser.add_argument("--clip-steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, help="pictures per step (default 64; vae: 32)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--resume", type=Path, help="base: train this base's denoiser further (its VAE is kept)")
    parser.add_argument("--things-weights", default="5,3.5,1.5", help="base: how often a picture has 1, 2, 3 things")
    parser.add_argument("--lr", type=float, default=3e-4, help="base: the denoiser's learning rate")
    parser.add_argument("--stream", type=int, help="base: the batches' generator seed (default 2; 20 when resuming)")
    parser.add_argument("--sparse-captions", action="store_true", help="base: also name one thing's colour only")
    parser.add_argument("--grounding", type=float, default=0.0,
                        help="base: weight of the loss asking each thing's words to attend inside its box (0: none)")
    parser.add_argument("--from", dest="source", type=Path, help="vae: the base whose VAE trains further (a copy is written)")
    parser.add_argument("--vae-lr", type=float, default=3e-4, help="vae: the learning rate")
    parser.add_argument("--recolour", type=float, default=0.25, help="vae: the share of pictures recoloured")
    parser.add_argument("--decoder-only", action="store_true", help="vae: train the decoder alone (latents unchanged)")
    parser.add_argument("--thing-weight", type=float, default=0.0, help="vae: things' pixels weigh 1 + this in the loss")
    parser.add_argument("--no-check", action="store_true", help="vae: skip `world.check vae` of both VAEs (35 s each)")
    parser.add_argument("--latent-channels", type=int,
                        help="vae: widen the latent to this many channels first (then `base --resume` widens the UNet)")
    args = parser.parse_args(argv)
    if args.what == "vae" and args.source is None:
        parser.error("vae needs --from BASE (the base whose VAE trains further)")
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    out = Path(args.out)
    if args.what == "base":
        record = train_base(out, args.pictures, args.vae_steps, args.unet_steps, args.batch or 64, args.device, args.seed,
                            args.resume, tuple(float(w) for w in args.things_weights.split(",")), args.lr, args.stream,
                            args.sparse_captions, args.grounding)
    elif args.what == "vae":
        from .vae_train import train_vae_further

        record = train_vae_further(out, Path(locate(str(args.source))), args.vae_steps, args.pictures, args.batch or 32,
                                   args.vae_lr, args.recolour, args.decoder_only, args.device, args.seed,
                                   check=not args.no_check, thing_weight=args.thing_weight,
                                   latent_channels=args.latent_channels)
    else:
        record = train_clip(out, args.pictures, args.clip_steps, args.batch or 64, args.device, args.seed)
    log(f"wrote {out}: {json.dumps(record)}")


if __name__ == "__main__":
    main()
