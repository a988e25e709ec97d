"""The world's sketch adapter: a diffusers ``T2IAdapter`` trained on the world base, reading a sketch (the things'
outlines, white on black) — the spatial condition the paper's regional sampling uses (sketches and poses), in the
miniature world.

    python -m mos_lightning.world.sketch train outputs/world/sketch --base demo/world/base   # ~15 min on 2 CPU cores

The base model stays frozen (as the T2I-Adapter paper trains its adapters); the adapter learns from world pictures,
their captions and the sketch of their things (``sketch_of``) with the diffusion loss.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

from .model import RESOLUTION
from .scenes import THINGS_WEIGHTS, Scene, caption, random_scene, render

ADAPTER_CHANNELS = (32, 48, 64, 64)  # the world UNet's block_out_channels


def sketch_of(masks: list[Image.Image], width: int = 3) -> Image.Image:
    """The outlines of ``masks`` (``L`` images, white = a thing): a pixel-wide line where a silhouette ends, as a
    user would draw them; ``L``, white on black."""
    outline = np.zeros(np.asarray(masks[0]).shape, bool) if masks else np.zeros((RESOLUTION, RESOLUTION), bool)
    for mask in masks:
        binary = mask.point(lambda v: 255 if v > 127 else 0)
        inner = np.asarray(binary.filter(ImageFilter.MinFilter(width))) > 127
        outline |= (np.asarray(binary) > 127) & ~inner
    return Image.fromarray((outline * 255).astype(np.uint8), "L")


def scene_sketch(scene: Scene, size: int = RESOLUTION) -> Image.Image:
    """The sketch of ``scene``'s things where the world draws them."""
    return sketch_of(render(scene, size)[1])


def sketch_scenes(count: int, seed: int, things_weights: tuple[float, ...] = THINGS_WEIGHTS) -> list[Scene]:
    """The scenes of :func:`sketch_pictures` (picture ``k``'s depends only on ``(seed, k)`` and the weights)."""
    return [random_scene(random.Random(f"sketch-{seed}-{k}"), weights=things_weights) for k in range(count)]


def sketch_pictures(count: int, seed: int, size: int = RESOLUTION, cache: Path | None = None,
                    things_weights: tuple[float, ...] = THINGS_WEIGHTS):
    """``(uint8 pictures [count, size, size, 3], uint8 sketches [count, size, size], captions)`` of
    :func:`sketch_scenes`."""
    weights = np.asarray(things_weights, float)
    if cache is not None and cache.is_file():
        data = np.load(cache, allow_pickle=False)
        if (data["images"].shape == (count, size, size, 3) and int(data["seed"]) == seed
                and np.array_equal(data.get("things_weights", np.asarray(THINGS_WEIGHTS, float)), weights)):
            return data["images"], data["sketches"], [str(c) for c in data["captions"]]
    from tqdm.auto import tqdm

    images = np.empty((count, size, size, 3), np.uint8)
    sketches = np.empty((count, size, size), np.uint8)
    captions = []
    scenes = sketch_scenes(count, seed, things_weights)
    for k, scene in enumerate(tqdm(scenes, desc="rendering world pictures and sketches", leave=False)):
        image, masks = render(scene, size, seed=seed * 1_000_003 + k)
        images[k], sketches[k] = np.asarray(image), np.asarray(sketch_of(masks))
        captions.append(caption(scene))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, images=images, sketches=sketches, captions=np.array(captions), seed=seed,
                 things_weights=weights)
    return images, sketches, captions


def one_thing_captions(scene: Scene) -> list[str]:
    """Each thing of ``scene`` captioned alone, on the scene's background: what a region prompt says."""
    return [caption(Scene(scene.background, (thing,))) for thing in scene.things] if len(scene.things) > 1 else []


def step_captions(ids: torch.Tensor, index: torch.Tensor, singles: list[int], one_thing: float,
                  generator: torch.Generator) -> torch.Tensor:
    """A step's caption tokens: ``ids`` holds every picture's caption, then each picture's one-thing captions in
    order (``singles[k]`` of them for picture ``k``); with probability ``one_thing`` a picture of several things is
    captioned by one of its things alone (no random draws when ``one_thing`` is 0: the shipped recipe's stream)."""
    tokens = ids[index].clone()
    first = np.cumsum([0] + singles)[:-1]  # picture k's one-thing captions start at len(singles) + first[k]
    for row, k in enumerate(index.tolist()):  # a region prompt's view of the picture
        if one_thing > 0 and singles[k] and torch.rand(1, generator=generator).item() < one_thing:
            pick = int(torch.randint(0, singles[k], (1,), generator=generator))
            tokens[row] = ids[len(singles) + first[k] + pick]
    return tokens


def train_sketch_adapter(base: str, out: Path, pictures: int, steps: int, batch: int, lr: float, device: str,
                         seed: int = 0, drop_text: float = 0.1, one_thing: float = 0.0,
                         things_weights: tuple[float, ...] = THINGS_WEIGHTS) -> dict:
    """Train a ``T2IAdapter`` (one input channel) on the frozen ``base``; saves it to ``out`` with ``training.json``.

    ``one_thing``: how often a picture of several things is captioned with one of its things alone
    (:func:`one_thing_captions`) while the sketch shows them all — the situation of a region prompt under
    regional sampling, where the text asks for one thing and the sketch must still place every outline."""
    from diffusers import DDPMScheduler, StableDiffusionPipeline, T2IAdapter

    from .train import encode_all, log, machine

    start = time.time()
    torch.manual_seed(seed)
    tag = "" if tuple(things_weights) == THINGS_WEIGHTS else "-w" + "_".join(f"{w:g}" for w in things_weights)
    images, sketches, captions = sketch_pictures(pictures, seed, cache=out.parent / f"sketch-{pictures}-{seed}{tag}.npz",
                                                 things_weights=things_weights)
    singles = [one_thing_captions(scene) for scene in sketch_scenes(pictures, seed, things_weights)]
    flat = [c for s in singles for c in s]
    pipe = StableDiffusionPipeline.from_pretrained(base, safety_checker=None, requires_safety_checker=False)
    unet, text_encoder, vae = (m.to(device).eval().requires_grad_(False) for m in (pipe.unet, pipe.text_encoder, pipe.vae))
    mean, std = encode_all(vae, torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1, device)
    ids = pipe.tokenizer(captions + flat + [""], padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids
    adapter = T2IAdapter(in_channels=1, channels=list(ADAPTER_CHANNELS), num_res_blocks=2,
                         downscale_factor=pipe.vae_scale_factor).to(device).train()
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=lr, weight_decay=0.01)
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    generator = torch.Generator().manual_seed(seed + 40)
    conditions = torch.from_numpy(sketches).float()[:, None] / 255
    scale, running = vae.config.scaling_factor, None
    for step in range(steps):
        index = torch.randint(0, pictures, (batch,), generator=generator)
        x0 = (mean[index] + std[index] * torch.randn(mean[index].shape, generator=generator)) * scale
        noise = torch.randn(x0.shape, generator=generator)
        t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (batch,), generator=generator)
        tokens = step_captions(ids, index, [len(s) for s in singles], one_thing, generator)
        tokens[torch.rand(batch, generator=generator) < drop_text] = ids[-1]
        with torch.no_grad():
            states = text_encoder(tokens.to(device))[0]
        residuals = adapter(conditions[index].to(device))
        prediction = unet(noise_scheduler.add_noise(x0, noise, t).to(device), t.to(device), states,
                          down_intrablock_additional_residuals=residuals).sample
        loss = F.mse_loss(prediction, noise.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 100 == 0 or step == steps - 1:
            log(f"sketch adapter step {step}/{steps}: loss {running:.4f}")
    adapter.to("cpu").eval().save_pretrained(out)
    record = {"kind": "sketch adapter", "base": str(base), "pictures": pictures, "seed": seed, "steps": steps,
              "batch": batch, "lr": lr, "drop_text": drop_text, "one_thing": one_thing,
              "things_weights": list(things_weights), "final_loss": running, "minutes": round((time.time() - start) / 60, 1),
              "machine": machine(), "torch": torch.__version__}
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the world's sketch adapter (T2I-Adapter) on the world base.")
    parser.add_argument("what", choices=["train"])
    parser.add_argument("out", help="output folder (a diffusers T2IAdapter folder)")
    parser.add_argument("--base", default="demo/world/base", help="the (frozen) world base model folder")
    parser.add_argument("--pictures", type=int, default=8000)
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--one-thing", type=float, default=0.0,
                        help="how often a picture of several things is captioned with one thing alone (region prompts)")
    parser.add_argument("--things-weights", default="5,3.5,1.5", help="how often a picture has 1, 2, 3 things")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    from ..resources import locate

    record = train_sketch_adapter(locate(args.base), Path(args.out), args.pictures, args.steps, args.batch,
                                  args.lr, args.device, args.seed, one_thing=args.one_thing,
                                  things_weights=tuple(float(w) for w in args.things_weights.split(",")))
    print(json.dumps(record))


if __name__ == "__main__":
    main()
