"""The ED-LoRA task's optimizer: its parameter groups (each at its rate; none left out), the schedule, and the
embedding-norm guard."""

from __future__ import annotations

import torch
from lightning.pytorch.utilities import rank_zero_info


class ParameterGroups:
    """A mix-in for :class:`~mos_lightning.tasks.EDLoRATask` (reads ``self.model``, ``self.hparams``,
    ``self.optimizer_factory`` and ``self.scheduler_factory``)."""

    #: Learning rate of trainable parameters a model subclass adds outside the three groups (None: ``unet_lr``).
    extra_lr: float | None = None

    def trainable_groups(self) -> list[dict]:
        """The optimizer's parameter groups: embeddings, text-encoder LoRA, UNet LoRA, each at its rate — and every other
        trainable parameter of the model (a subclass's) in an ``extra`` group at :attr:`extra_lr`, named on the
        console: no trainable parameter is ever left out of the optimizer."""
        h, m = self.hparams, self.model
        groups = [{"params": [m.concept_tokens.weight], "lr": h.embedding_lr, "name": "embeddings"}]
        lora = lambda n: ".lora_A." in n or ".lora_B." in n  # noqa: E731 - the LoRA's own weights only
        for name, module, lr in (("text_encoder_lora", m.text_encoder, h.text_encoder_lr), ("unet_lora", m.unet, h.unet_lr)):
            params = [p for n, p in module.named_parameters() if p.requires_grad and lora(n)]
            if params:
                groups.append({"params": params, "lr": lr, "name": name})
        grouped = {id(p) for g in groups for p in g["params"]}
        extra = [(n, p) for n, p in m.named_parameters() if p.requires_grad and id(p) not in grouped]
        if extra:
            lr = self.extra_lr if self.extra_lr is not None else h.unet_lr
            rank_zero_info(f"{len(extra)} trainable parameter(s) outside the embeddings and LoRAs "
                           f"({', '.join(n for n, _ in extra[:4])}{' …' if len(extra) > 4 else ''}) train in group "
                           f"'extra' at lr {lr:g} (set the task's extra_lr to change it)")
            groups.append({"params": [p for _, p in extra], "lr": lr, "name": "extra"})
        return groups

    def configure_optimizers(self):
        groups = self.trainable_groups()
        if self.optimizer_factory is not None:
            optimizer = self.optimizer_factory(groups)
        else:  # the reference's AdamW; fused: one multi-tensor kernel, no per-step host reads
            optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.999), weight_decay=0.01,
                                          fused=self.device.type in ("cuda", "cpu"))
        if self.scheduler_factory is not None:
            schedule = self.scheduler_factory(optimizer)
        elif self.hparams.lr_schedule == "constant":
            return optimizer
        else:
            total = max(1, int(self.trainer.estimated_stepping_batches))
            schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        limit = self.hparams.max_embedding_norm
        if limit is None:
            return super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        weight = self.model.concept_tokens.weight
        before = weight.detach().clone()
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        # Embedding-norm guard without a host sync: undo the step if the norm had reached the limit.
        with torch.no_grad():
            reached = before.norm(dim=-1).mean() >= limit
            weight.copy_(torch.where(reached, before, weight))
