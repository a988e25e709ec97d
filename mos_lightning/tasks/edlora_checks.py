"""Checks of the ED-LoRA task's arguments and data: nonsense fails before anything loads."""

from __future__ import annotations

from collections.abc import Sequence

from lightning.pytorch.utilities import rank_zero_warn


def check_arguments(tokens: Sequence[str], initializers: Sequence[str], lora_rank: int, losses: list,
                    gradient_checkpointing: bool, rates: dict[str, float]) -> None:
    if not tokens or len(tokens) != len(initializers):
        raise ValueError(f"need one initializer per token, got tokens={list(tokens)} initializers={list(initializers)}")
    if lora_rank < 0:
        raise ValueError("lora_rank must be >= 0")
    if any(rate < 0 for rate in rates.values()):
        raise ValueError(f"learning rates must be >= 0 (a negative rate climbs the loss), got {rates}")
    if not losses:
        raise ValueError("losses is empty: give at least one loss term, e.g. mos_lightning.losses.DiffusionLoss")
    if gradient_checkpointing and any(term.needs_attention_maps for term in losses):
        raise ValueError("gradient_checkpointing cannot be combined with a loss term that reads attention maps "
                         "(AttentionRegularisation: recomputation does not record them); drop one of them")


def check_masks(losses: list, dataset) -> None:
    needing = [type(term).__name__ for term in losses if term.needs_masks]
    if needing and dataset is not None and not dataset.has_masks:
        raise ValueError(f"loss terms {needing} need a mask for every image: give the data module a mask_dir "
                         "(or a masks/ folder beside the images), or drop them")
    if needing and dataset is not None:
        masks = [item.mask for item in dataset.items]
        empty, binary = masks_selecting_nothing(masks)
        if binary:
            raise ValueError(f"masks hold only the values 0 and 1 ({[str(m) for m in binary[:3]]}): white (255) marks "
                             f"the concept; multiply them by 255 — as they are, {needing} would see no concept")
        if empty and len(empty) == len(masks):
            raise ValueError(f"every mask is all black ({[str(m) for m in empty[:3]]} …): {needing} would train on no "
                             "pixel (loss 0 every step); paint the concept white")
        if empty:
            rank_zero_warn(f"{len(empty)} of {len(masks)} masks are all black ({[str(m) for m in empty[:3]]}): "
                           f"{needing} learn nothing from those images")


def masks_selecting_nothing(paths) -> tuple[list, list]:
    """``(all-black masks, masks whose brightest pixel is 1)``: both select no pixel of the image."""
    import numpy as np

    from ..data.concept import open_image

    empty, binary = [], []
    for path in paths:
        brightest = int(np.asarray(open_image(path, "L")).max())
        if brightest == 0:
            empty.append(path)
        elif brightest == 1:
            binary.append(path)
    return empty, binary
