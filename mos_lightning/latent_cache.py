"""The VAE posterior of a training batch, with a cache for views that repeat exactly (letterboxed, not randomly
cropped): each is encoded once, then read back."""

from __future__ import annotations

import torch


def encode_posterior(vae, pixels: torch.Tensor, views: list[str] | None,
                     cache: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std ``[B, C, h, w]`` of ``pixels``; ``views[i]`` names sample ``i``'s view when it may be cached
    (``""`` when not), ``views`` ``None``: no caching."""
    if not views:
        dist = vae.encode(pixels.to(vae.dtype)).latent_dist
        # contiguous: the posterior's mean/std are strided views, and randn_like follows strides
        return dist.mean.contiguous(), dist.std.contiguous()
    # A cacheable view is encoded alone, once: a posterior differs in its last bits with the batch it is encoded
    # in, and a value from whichever batch first held the view would make a resumed run (empty cache) differ.
    # Clones: a compiled VAE under CUDA graphs overwrites its outputs on the next call.
    fresh: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for i, view in enumerate(views):
        if view and view not in cache:
            one = vae.encode(pixels[i : i + 1].to(vae.dtype)).latent_dist
            cache[view] = (one.mean[0].clone(), one.std[0].clone())
    todo = [i for i, view in enumerate(views) if not view]
    if todo:
        if len(todo) < len(views):  # an index built on the host and sent without blocking (no sync)
            pixels = pixels.index_select(0, torch.tensor(todo).to(pixels.device, non_blocking=True))
        dist = vae.encode(pixels.to(vae.dtype)).latent_dist
        fresh = {i: (dist.mean[k].clone(), dist.std[k].clone()) for k, i in enumerate(todo)}
    pairs = [fresh[i] if not view else cache[view] for i, view in enumerate(views)]
    return torch.stack([m for m, _ in pairs]), torch.stack([s for _, s in pairs])
