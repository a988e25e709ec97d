"""Saves ``predict`` images as PNGs named by prompt and seed, and optional per-prompt grids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from lightning.pytorch.callbacks import BasePredictionWriter
from PIL import Image

from mos_lightning.data.prompts import SampleItem
from mos_lightning.images import make_grid, save_png


class ImageWriter(BasePredictionWriter):
    """Writes every predicted image to ``<output_dir>/<prompt index>-<prompt>/seed<seed>.png``.

    The prompt, seed and model are stored in the PNG's text chunks. Existing files are left alone (unless the
    data module's ``skip_existing`` is off), so a rerun after an interruption only fills the gaps; the CLI refuses
    a rerun into a folder whose images were made with other settings.
    """

    def __init__(self, output_dir: str | None = None, grids: bool = True, grid_columns: int | None = None):
        # A prediction may also carry "metadata" (per image, extra PNG text chunks, e.g. the model) and "extra_images"
        # ({key: images}, saved beside each image as seed<N>.<key>.png, e.g. regional debug boxes).
        """
        Args:
            output_dir: Image folder; default: the prompt DataModule's ``output_dir``.
            grids: After the run, write ``grids/<prompt index>-<prompt>.png`` with all of a prompt's images (rank 0).
            grid_columns: Images per grid row (default: about square).
        """
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir) if output_dir else None
        self.grids = grids
        self.grid_columns = grid_columns

    def folder(self, trainer) -> Path:
        if self.output_dir is not None:
            return self.output_dir
        data_dir = getattr(trainer.datamodule, "output_dir", None)
        if data_dir is None:
            raise ValueError("ImageWriter needs output_dir (or a data module with an output_dir)")
        return Path(data_dir)

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        folder = self.folder(trainer)
        count = len(prediction["images"])
        metadata = prediction.get("metadata") or [{}] * count
        extras = prediction.get("extra_images") or {}  # e.g. {"boxes": [...]} → seed<N>.boxes.png
        for k, (image, prompt, seed, index) in enumerate(zip(prediction["images"], prediction["prompt"],
                                                             prediction["seed"], prediction["prompt_index"], strict=True)):
            path = folder / SampleItem(prompt, index, seed).name
            if path.exists() and getattr(trainer.datamodule, "skip_existing", True):
                continue  # made by an earlier (interrupted) run with the same settings (checked at the start)
            for key, images in extras.items():
                save_png(path.with_suffix(f".{key}.png"), images[k], {"prompt": prompt, "seed": str(seed)})
            save_png(path, image, {"prompt": prompt, "seed": str(seed), **metadata[k]})

    def on_predict_end(self, trainer, pl_module) -> None:
        if not self.grids:
            return
        trainer.strategy.barrier("image-writer-grids")  # every rank's images are on disk
        if not trainer.is_global_zero:
            return
        items = getattr(trainer.datamodule, "all_items", None)
        if not items:
            return
        folder = self.folder(trainer)
        by_prompt: dict[str, list[Path]] = {}
        for item in items:
            by_prompt.setdefault(item.folder, []).append(folder / item.name)
        for name, paths in by_prompt.items():
            images = [np.asarray(Image.open(p).convert("RGB")) for p in paths if p.is_file()]
            if images:
                grid = make_grid(images, self.grid_columns)
                save_png(folder / "grids" / f"{name}.png", grid, {"prompt_folder": name})
