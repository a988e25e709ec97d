"""Regional multi-concept sampling as a LightningModule: ``mos-lightning predict --config configs/regional/…``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from PIL import Image

from ..data.scenes import check_scenes
from ..defaults import BASE_MODEL, NEGATIVE_PROMPT
from ..models import Geometry
from ..pipelines import SchedulerName
from ..pipelines.collage import check_canvas, check_fit, check_scale
from ..pipelines.regional import AdapterCondition, RegionalPipeline, draw_regions
from .sampling import SamplingTask
from .termination import stop_if_terminated


class RegionalTask(SamplingTask):
    """Samples the scenes of a :class:`~mos_lightning.data.SceneDataModule`: a global prompt plus regions, each
    with its own prompt and box, optionally following T2I-Adapter conditions (keypose, sketch…).

    Scenes are checked before the model loads (boxes inside the image, sizes, every ``<concept>`` known,
    adapters configured). ``predict_step`` returns the image and a debug image with the boxes drawn.
    """

    def __init__(
        self,
        base_model: str = BASE_MODEL,
        edloras: list[str] | None = None,
        lora_scale: float = 0.7,
        adapters: dict[str, str] | None = None,
        scheduler: SchedulerName = "dpm_solver",
        num_inference_steps: int = 20,
        guidance_scale: float = 7.5,
        negative_prompt: str = NEGATIVE_PROMPT,
        dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto",
        box_rounding: Literal["inward", "outward"] = "inward",
        solo_steps: int = 0,
        bounded_steps: int = 0,
        collage_strength: float = 0.0,
        collage_canvas: Literal["regional", "plain"] = "regional",
        collage_guidance: float | None = None,
        collage_fit: Literal["cover", "thing"] = "cover",
        collage_scale: int = 1,
    ):
        """
        Args:
            base_model: Usually a fused model folder (its concepts come along); or a base model plus ``edloras``.
            edloras: ED-LoRA files to load on top of ``base_model``.
            lora_scale: Scale of those files' LoRA.
            adapters: Name → diffusers ``T2IAdapter`` folder or hub id (e.g. ``keypose: TencentARC/t2iadapter_openpose_sd14v1``);
                scene conditions refer to these names.
            scheduler: Sampler (see :class:`~mos_lightning.tasks.SamplingTask`).
            num_inference_steps: Denoising steps.
            guidance_scale: CFG scale.
            negative_prompt: Default negative prompt of scenes and regions (default: the paper's).
            dtype: ``auto`` = float16 on GPUs, float32 on CPU.
            box_rounding: Which feature cells a box covers at each UNet resolution: ``inward`` (the cells wholly
                inside it, the reference's rule; a small box may have none at a coarse level) or ``outward`` (every
                cell it touches). Adapter region weights follow the same rule.
            solo_steps: For the first N steps, inside each box the noise prediction of its region prompt alone (one
                more UNet pass per region and step; outside the boxes the regional prediction) — latent compositing
                as in later work, against attributes leaking between regions. 0 (the reference): never.
            bounded_steps: For the first N steps, bounded self-attention: a cell inside a box attends only to its
                own box and the cells outside every box (no extra cost; see ``mos_lightning.attention.bounded``).
                0 (the reference): never.
            collage_strength: > 0: each region's prompt is first drawn alone, in a picture of its own, shrunk into its
                box over the regional picture, and the collage denoised again under region control for this share of
                the steps (``mos_lightning.pipelines.collage``; 1 + regions + strength times the sampling cost).
                0 (the reference): never.
            collage_canvas: What the collage's pieces are pasted on: ``regional`` (the region-control picture) or
                ``plain`` (one colour, the mean of the pieces' borders — their background; no regional picture is
                drawn first, so regions + strength times the sampling cost).
            collage_guidance: Guidance scale of the collage's steps (≤ 1: unguided); None: ``guidance_scale``.
            collage_fit: How a piece goes into its box: ``cover`` (the whole picture scaled to cover the box, centred)
                or ``thing`` (the thing found in it — what differs from its border's colour — scaled to fill at most
                80 % of the box, centred on it, only its pixels pasted; a piece without one as ``cover``).
            collage_scale: The collage is made and denoised at this multiple of the picture's size (pieces shrunk
                that much less; its steps cost ``collage_scale²`` times as much), then resized to the picture's size.
        """
        for name, value in (("solo_steps", solo_steps), ("bounded_steps", bounded_steps)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if not 0 <= collage_strength <= 1:
            raise ValueError(f"collage_strength must be in [0, 1] (0: no collage), got {collage_strength}")
        check_canvas(collage_canvas)
        check_fit(collage_fit)
        check_scale(collage_scale)
        super().__init__(base_model=base_model, edloras=edloras, lora_scale=lora_scale, scheduler=scheduler,
                         num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                         negative_prompt=negative_prompt, dtype=dtype)
        self.save_hyperparameters()
        self.adapter_models = torch.nn.ModuleDict()

    def setup(self, stage: str) -> None:
        super().setup(stage)
        scenes = self.trainer.datamodule.load()
        adapters = set(self.hparams.adapters or {})
        for name, path in (self.hparams.adapters or {}).items():
            if not Path(path).is_dir() and (path.startswith((".", "/", "~")) or path.count("/") != 1):
                raise FileNotFoundError(f"adapter {name}: {path} is neither a T2IAdapter folder nor a hub id 'owner/name'")
        geometry = Geometry.of(self.hparams.base_model)
        # T2I-Adapters reach the UNet's coarsest level from pixels: sizes must divide down that far
        multiple = geometry.vae_factor * (geometry.unet_factor if any(s.conditions for s in scenes) else 1)
        native = (geometry.native_size, geometry.native_size)
        check_scenes(scenes, native, self.known_tokens(), adapters, multiple)
        # load only the adapters a scene uses: an unused hub adapter would need a download for nothing
        self.used_adapters = sorted({c.adapter for scene in scenes for c in scene.conditions})

    def configure_model(self) -> None:
        if self.pipe is not None:
            return
        super().configure_model()
        from diffusers import T2IAdapter

        for name in self.used_adapters:
            path = self.hparams.adapters[name]
            self.adapter_models[name] = T2IAdapter.from_pretrained(path, local_files_only=Path(path).exists())

    def on_predict_start(self) -> None:
        super().on_predict_start()
        self.adapter_models.to(self.device, self.sampling_dtype())

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        h = self.hparams
        scenes = self.trainer.datamodule.scenes
        images, debug, metadata = [], [], []
        for index, seed in zip(batch["prompt_index"], batch["seed"], strict=True):
            stop_if_terminated(self._trainer)  # between images (Lightning checks only after the batch)
            scene = scenes[index]
            conditions = [AdapterCondition(self.adapter_models[c.adapter], Image.open(c.image), c.weight, c.regions)
                          for c in scene.conditions]
            image = RegionalPipeline(self.pipe, h.box_rounding, h.solo_steps, h.bounded_steps, h.collage_strength,
                                     h.collage_canvas, h.collage_guidance, h.collage_fit,
                                     h.collage_scale)(
                scene.prompt, scene.regions, negative_prompt=scene.negative_prompt or h.negative_prompt,
                height=scene.height, width=scene.width, num_inference_steps=h.num_inference_steps,
                guidance_scale=h.guidance_scale, generator=torch.Generator().manual_seed(int(seed)), conditions=conditions,
            )
            images.append(image)
            debug.append(draw_regions(image, scene.regions))
            metadata.append({"model": str(h.base_model), "context_prompt": scene.prompt,
                             "regions": "; ".join(f"{r.prompt} @ {list(r.box)}" for r in scene.regions)})
        return {**batch, "images": images, "extra_images": {"boxes": debug}, "metadata": metadata}
