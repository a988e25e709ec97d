"""Does a world base read each thing's words where the thing is? Real pictures of held-out two-thing scenes, noised
to a few timesteps, go through the base's UNet under their caption; for each thing's colour word and class word,
the share of its cross-attention that falls in its own thing's box minus the share in the other thing's box (0: the
word is read everywhere alike; 1: only where its thing is), per cross-attention layer, and the mean over the layers
of 4 × 4 cells and finer with a 95 % interval resampling the scenes.

    python -m mos_lightning.world.check attention demo/world/base
"""

from __future__ import annotations

import numpy as np
import torch

from ..tokens import tokenize
from .check import held_out_scenes, load_base, real_scene_pictures
from .grounding import AttentionMaps, attention_maps, inside_share, thing_box, thing_words_positions
from .identity import bootstrap, mean_score
from .scenes import Scene, caption

TIMESTEPS = (750, 500, 250)
WORDS = {"colour": 0, "class": -1}  # which of a thing's words: its first (colour) and its last (class)


def noised_latents(pipe, image, t: int, seed: int) -> torch.Tensor:
    """The picture's latent with the noise of timestep ``t`` (noise drawn from ``seed``), scaled for the UNet."""
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
    latent = pipe.vae.encode(pixels).latent_dist.mean * pipe.vae.config.scaling_factor
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed))
    return pipe.scheduler.add_noise(latent, noise, torch.tensor([t]))


def record_scene(pipe, maps: AttentionMaps, scene: Scene, picture, t: int, seed: int) -> AttentionMaps:
    """``maps`` (installed by :func:`~mos_lightning.world.grounding.attention_maps`) filled by one UNet call on the
    scene's picture noised to ``t``, under its caption."""
    states = pipe.text_encoder(tokenize(pipe.tokenizer, [caption(scene)]))[0]
    maps.clear()
    maps.recording = True
    pipe.unet(noised_latents(pipe, picture, t, seed), t, states)
    maps.recording = False
    return maps


def own_minus_other(maps, positions: list[list[int]], boxes: list[tuple], word: int) -> list[float]:
    """Per layer: for each of two things, its word's share in its own box minus in the other's; their mean."""
    return [float(np.mean([(inside_share(m[0], [positions[k][word]], boxes[k])
                            - inside_share(m[0], [positions[k][word]], boxes[1 - k])).item() for k in (0, 1)]))
            for m in maps]


@torch.no_grad()
def attention_check(base: str, count: int = 48, timesteps: tuple[int, ...] = TIMESTEPS) -> dict[str, dict]:
    """Per timestep and word (colour, class): ``per layer`` (own box minus other box, mean over the scenes, layers
    down → mid → up) and ``fine layers`` (the mean over layers of ≥ 4 × 4 cells, with its interval)."""
    pipe = load_base(base)
    scenes = held_out_scenes(count, 2)
    pictures = real_scene_pictures(scenes)
    out: dict[str, dict] = {}
    with attention_maps(pipe.unet) as maps:
        for t in timesteps:
            rows: dict[str, list[list[float]]] = {word: [] for word in WORDS}
            for k, (scene, picture) in enumerate(zip(scenes, pictures, strict=True)):
                record_scene(pipe, maps, scene, picture, t, seed=k)
                positions, boxes = thing_words_positions(pipe.tokenizer, scene), [thing_box(th) for th in scene.things]
                for word, index in WORDS.items():
                    rows[word].append(own_minus_other(maps, positions, boxes, index))
            fine = [i for i, m in enumerate(maps) if round(m.shape[1] ** 0.5) >= 4]
            out[f"t={t}"] = {word: {"per layer": np.round(np.mean(r, 0), 3).tolist(),
                                    "fine layers": bootstrap(mean_score, {"scenes": np.mean(np.array(r)[:, fine], 1)})}
                             for word, r in rows.items()}
    return out
