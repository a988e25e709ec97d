"""Loss terms of ED-LoRA tuning, as components chosen in YAML by ``class_path``.

A term is called once per training step with the step's :class:`~mos_lightning.edlora_model.StepOutput`
(prediction, target, timesteps, attention maps, …) and the batch, and returns a scalar that is added to
the loss as it is (a term applies its own weight). A new term is a small subclass of :class:`LossTerm`;
see EXTENDING.md.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .edlora_model import StepOutput


class LossTerm:
    """One additive part of the training loss."""

    name: str = "loss"
    #: The term reads ``output.attention_maps`` (the step then records cross-attention probabilities).
    needs_attention_maps: bool = False
    #: The term reads ``batch["mask"]`` (the data must have a foreground mask for every image).
    needs_masks: bool = False

    def __call__(self, output: StepOutput, batch: dict) -> torch.Tensor:
        raise NotImplementedError

    def setup(self, task) -> None:
        """Called once the task's model is built, before training: read what the term needs from ``task`` — its
        ``model`` (``tokenizer``, ``text_encoder``, ``concept_tokens``), ``concept_class_word``, ``hparams``."""


def term_names(terms: list[LossTerm]) -> list[str]:
    """Each term's ``name`` for logging, numbered where several terms share one."""
    names = [term.name for term in terms]
    return [f"{n}_{names[:i].count(n) + 1}" if names.count(n) > 1 else n for i, n in enumerate(names)]


def masked_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
               channels: Literal["sum", "mean"] = "mean") -> torch.Tensor:
    """Per-pixel squared error (summed or averaged over channels) weighted by ``weight`` [B,1,h,w], normalised per
    sample by the weight's sum."""
    if weight.shape[-2:] != pred.shape[-2:]:
        raise ValueError(
            f"loss mask is {tuple(weight.shape[-2:])} but latents are {tuple(pred.shape[-2:])}: set the data "
            "module's mask_downsample to the VAE scale factor"
        )
    err = (pred.float() - target.float()).pow(2)
    err = err.sum(1, keepdim=True) if channels == "sum" else err.mean(1, keepdim=True)
    per_sample = (err * weight).sum((1, 2, 3)) / weight.sum((1, 2, 3)).clamp_min(1e-8)
    return per_sample.mean()


class DiffusionLoss(LossTerm):
    """The denoising loss: MSE between prediction and target, per pixel weighted by a mask (the reference's).

    Without ``mask_loss`` the weight is the letterbox validity mask (1 on image pixels, 0 on padding), so
    padding is never learned; with it, the foreground mask, so only the concept is. As in the reference, the
    squared error is summed over the latent channels and averaged over the weighted pixels (4× the
    per-element mean with SD's 4 channels; AdamW's steps barely notice a constant factor, but it sets the
    balance against the attention regularisation's weight).
    """

    name = "diffusion_loss"

    def __init__(self, mask_loss: bool = False, channels: Literal["sum", "mean"] = "sum", weight: float = 1.0):
        """
        Args:
            mask_loss: Weight pixels by the foreground masks (needs masks) instead of the validity mask.
            channels: ``sum`` the squared error over latent channels (the reference) or take their ``mean``.
            weight: Factor on this term.
        """
        if channels not in ("sum", "mean"):
            raise ValueError(f"channels must be 'sum' or 'mean', got {channels!r}")
        self.mask_loss = mask_loss
        self.channels = channels
        self.weight = weight

    @property
    def needs_masks(self) -> bool:  # type: ignore[override]  # a plain attribute on LossTerm
        return self.mask_loss

    def __call__(self, output: StepOutput, batch: dict) -> torch.Tensor:
        mask = batch["mask"] if self.mask_loss else batch["valid_mask"]
        return self.weight * masked_mse(output.prediction, output.target, mask, self.channels)


class AttentionRegularisation(LossTerm):
    """The reference's cross-attention regularisation (Mix-of-Show ``cal_attn_reg``) of the first two concept tokens.

    Per attention resolution: the layers' head-averaged maps are averaged; the maps of the first and second
    concept-token positions of each prompt are each divided by their maximum over the whole batch; the
    foreground mask is resized (nearest) to the resolution. The first token's attention outside the mask
    is penalised (its mean over every outside pixel of the batch), and so is the second's — or, with
    ``full_identity``, the second's map is pushed to the mask by MSE. ``weight`` × (both terms), summed
    over resolutions. As in the reference, the term is 0 for a batch whose masks cover every pixel.
    """

    name = "attn_reg"
    needs_attention_maps = True
    needs_masks = True

    def __init__(self, weight: float = 0.01, full_identity: bool = False):
        """
        Args:
            weight: Factor on each resolution's terms (every reference config: 0.01).
            full_identity: Push the second token's map to the mask by MSE (the reference's ``reg_full_identity``)
                instead of only penalising it outside the mask.
        """
        if weight < 0:
            raise ValueError(f"attention regularisation weight must be >= 0, got {weight}")
        self.weight = weight
        self.full_identity = full_identity

    def __call__(self, output: StepOutput, batch: dict) -> torch.Tensor:
        return attention_regularisation(output.attention_maps, output.concept_positions, batch["mask"],
                                        self.weight, self.full_identity)


class EmbeddingKDE(LossTerm):
    """The research branch's embedding regulariser (``KDELoss``): keeps each layer-wise concept embedding where the
    vocabulary's embeddings are dense. Per embedding x: ``−log Σ_c mean_v N(x_c − e_vc; 0, bandwidth²)`` over the
    frozen vocabulary e, summed over the concept's embeddings, times ``weight``. Costs one pass over the vocabulary
    per embedding (32 at SD 1.5 with two tokens); recomputed in backward to keep memory at one pass."""

    name = "embedding_kde"

    def __init__(self, weight: float = 0.002, bandwidth: float = 0.5):
        """
        Args:
            weight: Factor on the term (research configs: 0.002).
            bandwidth: Gaussian kernel bandwidth (research configs: 0.5).
        """
        if weight < 0 or bandwidth <= 0:
            raise ValueError(f"EmbeddingKDE needs weight >= 0 and bandwidth > 0, got {weight}, {bandwidth}")
        self.weight, self.bandwidth = weight, bandwidth

    def __call__(self, output: StepOutput, batch: dict) -> torch.Tensor:
        vocabulary = output.vocabulary.detach().float()
        learned = output.embeddings.reshape(-1, output.embeddings.shape[-1]).float()
        norm = 1 / (math.sqrt(2 * math.pi) * self.bandwidth)

        def neg_log_density(x: torch.Tensor) -> torch.Tensor:
            kernel = norm * torch.exp(-0.5 * ((x - vocabulary) / self.bandwidth) ** 2)  # [V, C]
            return -torch.log(kernel.mean(0).sum())

        total = sum(checkpoint(neg_log_density, x, use_reentrant=False) for x in learned)
        return self.weight * total


def first_positions(present: torch.Tensor, count: int) -> torch.Tensor:
    """``[B, count]`` indices of the first ``count`` True positions of each row of ``present`` [B, T] (no host sync)."""
    length = present.shape[1]
    score = present.float() * (length - torch.arange(length, device=present.device))  # earlier = larger
    return score.topk(count, dim=1).indices


def attention_regularisation(
    maps: dict[int, torch.Tensor], concept_positions: torch.Tensor, mask: torch.Tensor, weight: float = 0.01,
    full_identity: bool = False,
) -> torch.Tensor:
    """See :class:`AttentionRegularisation`. ``maps``: layer → head-averaged attention ``[B, N_pixels, T]``;
    ``concept_positions``: ``[B, T]`` True where a concept token stands; ``mask``: ``[B, 1, h, w]``."""
    if not maps:
        raise ValueError("attention regularisation needs the step's attention maps (record_attention=True)")
    by_size: dict[int, list[torch.Tensor]] = {}
    for layer_map in maps.values():
        by_size.setdefault(layer_map.shape[1], []).append(layer_map)
    index = first_positions(concept_positions, 2)  # [B, 2]: the adjective and the subject token
    h, w = mask.shape[-2:]
    total = mask.new_zeros((), dtype=torch.float32)
    valid = torch.ones((), dtype=torch.bool, device=mask.device)
    for pixels, layer_maps in by_size.items():
        ratio = math.sqrt(h * w / pixels)
        size = (round(h / ratio), round(w / ratio))
        attn = torch.stack(layer_maps).mean(0)  # [B, N, T]
        attn = attn.gather(2, index[:, None, :].expand(-1, attn.shape[1], -1)).float()  # [B, N, 2]
        attn = attn / attn.amax(dim=(0, 1), keepdim=True)  # each token's map over its batch maximum
        first, second = attn[..., 0].view(-1, *size), attn[..., 1].view(-1, *size)
        target = F.interpolate(mask.float(), size=size, mode="nearest").squeeze(1)  # [B, h', w']
        outside = (target == 0).float()
        count = outside.sum()
        valid = valid & (count > 0)  # the reference skips the term when a mean over no pixels is NaN
        outside_mean = lambda m, outside=outside, count=count: (m * outside).sum() / count.clamp_min(1)  # noqa: E731  (mean over a selection, no sync)
        subject = F.mse_loss(second, target) if full_identity else outside_mean(second)
        total = total + weight * (subject + outside_mean(first))
    return torch.where(valid, total, torch.zeros_like(total))
