"""Checkpoints that hold only what trains: a resume checkpoint of a LoRA run is megabytes, not the frozen base."""

from __future__ import annotations


class TrainableStateCheckpoints:
    """A LightningModule mix-in: ``state_dict`` in checkpoints is filtered to parameters that require gradients,
    and loading refuses a checkpoint that lacks any of them (written by a run with another setup). Set
    ``self.strict_loading = False`` in the module's ``__init__``: the frozen base is not in the checkpoint."""

    def trainable_keys(self) -> set[str]:
        return {name for name, p in self.named_parameters() if p.requires_grad}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        keep = self.trainable_keys()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        trainer = getattr(self, "_trainer", None)
        done, limit = checkpoint.get("global_step", 0), trainer.max_steps if trainer is not None else -1
        if 0 <= limit <= done:
            raise ValueError(f"the checkpoint is already at step {done} and trainer.max_steps is {limit}: resuming "
                             "would train nothing; raise max_steps above the checkpoint's step")
        missing = self.trainable_keys() - set(checkpoint["state_dict"])
        if missing:
            raise ValueError(
                f"checkpoint lacks {len(missing)} trainable tensors (e.g. {sorted(missing)[:2]}): it was written "
                "by a run with different tokens, LoRA rank or base model"
            )
        ours = dict(self.named_parameters())
        reshaped = [f"{k} {tuple(v.shape)} vs {tuple(ours[k].shape)}" for k, v in checkpoint["state_dict"].items()
                    if k in ours and v.shape != ours[k].shape]
        if reshaped:
            raise ValueError(f"checkpoint tensors have other shapes than this run's ({reshaped[0]}, {len(reshaped)} in "
                             "all): it was written with another lora_rank, layerwise setting or base model; resume "
                             "with its settings")
