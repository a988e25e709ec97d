"""The world's base model: Stable Diffusion 1.x's layout at a miniature scale — a UNet with the same 16
cross-attention layers in the same down / mid / up order, a VAE with scale factor 4 (64 px pictures, 16×16
latents), a CLIP-architecture text encoder with the real CLIP tokenizer — as a diffusers pipeline that loads
through ``from_pretrained`` like any SD 1.x folder."""

from __future__ import annotations

import torch

RESOLUTION = 64  # the world's native picture size
HIDDEN = 64  # text width (SD 1.5: 768)


def build_world_pipeline(seed: int = 0):
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from ..tiny import build_clip_tokenizer

    torch.manual_seed(seed)
    vae = AutoencoderKL(
        block_out_channels=(32, 64, 64), down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3, latent_channels=4, layers_per_block=1, norm_num_groups=16,
        sample_size=RESOLUTION,
    )
    unet = UNet2DConditionModel(
        sample_size=RESOLUTION // 4, block_out_channels=(32, 48, 64, 64), layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=HIDDEN, attention_head_dim=8, norm_num_groups=16,
    )
    tokenizer = build_clip_tokenizer()
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=4 * HIDDEN, num_hidden_layers=3,
        num_attention_heads=4, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))
    scheduler = DPMSolverMultistepScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                            num_train_timesteps=1000, steps_offset=1)
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
