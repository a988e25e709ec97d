"""Training-step benchmark: the ED-LoRA step vs a plain diffusers+peft LoRA step, same model, same batch.

SD 1.5-shaped components are built at full size with random weights (the shapes are what cost
time; nothing is downloaded). Both steps run in one process; the ED-LoRA/plain ratio is the
number to compare across machines. On CPU use ``--size tiny`` (ratio only).

    python benchmarks/train_step.py --size sd15 --batch-sizes 2 4            # GPU
    python benchmarks/train_step.py --size tiny --device cpu --steps 5       # CPU smoke run
    python benchmarks/train_step.py --batch-sizes 4 --compile --compile-kinds edlora --no-eager   # compiled only

``--compile`` adds compiled-UNet runs at the largest batch (``--compile-mode reduce-overhead`` for CUDA
graphs); their ``first_step_s`` is the one-time compile cost (cold, or from inductor's on-disk cache on
a second run). ``--gradient-checkpointing``, ``--cache-latents`` and ``--attn-reg 0.01`` measure those
options of the ED-LoRA step.

Model FLOPs utilisation counts UNet work only: 0.80 TFLOP forward per 512² sample, backward with a
frozen base ≈ 1.15× forward.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from mos_lightning.lora import TEXT_ENCODER_TARGETS, UNET_TARGETS, add_lora
from mos_lightning.losses import AttentionRegularisation, DiffusionLoss
from mos_lightning.models import BaseModel, cast_frozen
from mos_lightning.tasks import EDLoRATask
from mos_lightning.tiny import build_clip_tokenizer, build_tiny_pipeline
from mos_lightning.tokens import tokenize

UNET_FWD_TFLOP_512 = 0.80
BACKWARD_FACTOR = 1.15
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def build_components(size: str, device: str) -> BaseModel:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    if size == "tiny":
        pipe = build_tiny_pipeline()
        parts = pipe.tokenizer, pipe.text_encoder, pipe.unet, pipe.vae
    else:
        tokenizer = build_clip_tokenizer()
        with torch.device(device):  # random init on the GPU: seconds instead of minutes
            unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
            text_encoder = CLIPTextModel(CLIPTextConfig(
                vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                bos_token_id=49406, eos_token_id=49407, pad_token_id=49407))
            vae = AutoencoderKL(
                block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4, sample_size=512)
        parts = tokenizer, text_encoder, unet, vae
    tokenizer, text_encoder, unet, vae = parts
    for m in (text_encoder, unet, vae):
        m.requires_grad_(False).eval()
    scheduler = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
    return BaseModel(tokenizer, text_encoder, unet, vae, scheduler)


class RandomBaseEDLoRA(EDLoRATask):
    """EDLoRATask on randomly initialised components instead of a downloaded model."""

    def __init__(self, size: str, device: str, **kwargs):
        super().__init__(**kwargs)
        self._size, self._device = size, device

    def load_base(self) -> BaseModel:
        return build_components(self._size, self._device)

    def check_base(self) -> None:  # no files to check against
        pass


def make_batch(batch_size: int, resolution: int, device: str, placeholder: str = "<TOK>") -> dict:
    g = torch.Generator().manual_seed(0)
    latent = resolution // 8
    return {
        "pixel_values": (torch.rand(batch_size, 3, resolution, resolution, generator=g) * 2 - 1).to(device),
        "caption": [f"a photo of {placeholder}, on the beach, smiling"] * batch_size,
        "mask": torch.ones(batch_size, 1, latent, latent, device=device),
        "valid_mask": torch.ones(batch_size, 1, latent, latent, device=device),
    }


class OpCounter(TorchDispatchMode):
    """Counts the ATen ops that do work (views excluded): about the number of kernel launches on a GPU."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += not func.is_view
        return func(*args, **(kwargs or {}))


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_steps(step, steps: int, warmup: int, device: str) -> float:
    for _ in range(warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return (time.perf_counter() - start) / steps


def plain_lora_step_fn(size, device, batch_size, resolution, dtype, channels_last, use_compile, checkpointing=False,
                       cache_latents=False, compile_mode="default", attn_reg=0.0, compile_modules=("unet",)):
    """The baseline: one text-encoder pass per prompt, diffusers' own processors, peft LoRA rank 4."""
    base = build_components(size, device)
    add_lora(base.unet, UNET_TARGETS, 4, 1.0)
    add_lora(base.text_encoder, TEXT_ENCODER_TARGETS, 4, 1.0)
    for m in (base.unet, base.text_encoder, base.vae):
        m.to(device)
    cast_frozen((base.unet, base.text_encoder, base.vae), dtype)
    if channels_last:
        base.unet.to(memory_format=torch.channels_last)
    if checkpointing:
        base.unet.enable_gradient_checkpointing()
    if use_compile:  # the same modules as the ED-LoRA step compiles
        for name in compile_modules:
            {"unet": base.unet, "text_encoder": base.text_encoder, "vae": base.vae.encoder}[name].compile(mode=compile_mode)
    params = [p for m in (base.unet, base.text_encoder) for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01, fused=True)  # fused on CPU too: one multi-tensor op, as on GPUs
    batch = make_batch(batch_size, resolution, device, placeholder="sks man")
    ids = tokenize(base.tokenizer, batch["caption"]).to(device)
    alphas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, device=device) ** 2
    alphas_cumprod = torch.cumprod(1 - alphas, 0)

    def step():
        if use_compile and compile_mode in ("reduce-overhead", "max-autotune"):
            torch.compiler.cudagraph_mark_step_begin()  # CUDA graphs: the last step's outputs may be overwritten
        with torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype != torch.float32):
            with torch.no_grad():
                latents = base.vae.encode(batch["pixel_values"].to(base.vae.dtype)).latent_dist.sample() * 0.18215
            noise = torch.randn_like(latents)
            t = torch.randint(0, 1000, (batch_size,), device=device)
            a = alphas_cumprod[t].view(-1, 1, 1, 1)
            noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
            states = base.text_encoder(ids).last_hidden_state
            pred = base.unet(noisy, t, states).sample
            loss = F.mse_loss(pred.float(), noise.float())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step, base


def edlora_step_fn(size, device, batch_size, resolution, dtype, channels_last, use_compile, checkpointing=False,
                   cache_latents=False, compile_mode="default", attn_reg=0.0, compile_modules=("unet",)):
    """The task's own step (``compute_loss``) with its own speed options, as a run from a config would set them."""
    frozen = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}[dtype]
    task = RandomBaseEDLoRA(size, device, base_model="random", initializers=("<rand-0.013>", "man"), frozen_dtype=frozen,
                            gradient_checkpointing=checkpointing, cache_latents=cache_latents, channels_last=channels_last,
                            compile_unet=use_compile and "unet" in compile_modules,
                            compile_text_encoder=use_compile and "text_encoder" in compile_modules,
                            compile_vae=use_compile and "vae" in compile_modules,
                            compile_mode=compile_mode,
                            losses=[DiffusionLoss(mask_loss=attn_reg > 0)] + ([AttentionRegularisation(attn_reg)] if attn_reg else []))
    task.configure_model()
    task.to(device)
    opt = torch.optim.AdamW(task.trainable_groups(), weight_decay=0.01, fused=True)  # fused on CPU too: one multi-tensor op, as on GPUs
    batch = make_batch(batch_size, resolution, device)
    batch["view"] = [f"{i}:0" for i in range(batch_size)]  # cacheable views (used with --cache-latents)

    def step():
        with torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype != torch.float32):
            loss, _ = task.compute_loss(batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step, task


def measure(kind, args, batch_size, dtype, use_compile=False) -> dict:
    compile_mode = args.compile_mode if use_compile else None
    device = args.device
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    build = edlora_step_fn if kind == "edlora" else plain_lora_step_fn
    t0 = time.perf_counter()
    step, holder = build(args.size, device, batch_size, args.resolution, dtype, args.channels_last, use_compile,
                         args.gradient_checkpointing, args.cache_latents, compile_mode or "default", args.attn_reg,
                         args.compile_modules)
    first = time.perf_counter()
    step()  # first step: includes compilation when compiling
    sync(device)
    warm = time.perf_counter() - first
    seconds = time_steps(step, args.steps, args.warmup, device)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")
    ops = None
    if args.count_ops:
        with OpCounter() as counter:
            step()
        ops = counter.count
    del holder, step
    result = {
        "kind": kind, "batch": batch_size, "dtype": str(dtype).split(".")[-1], "compile": compile_mode or False,
        "compiled": list(args.compile_modules) if use_compile else [],
        "gradient_checkpointing": args.gradient_checkpointing, "cache_latents": args.cache_latents,
        "attn_reg": args.attn_reg if kind == "edlora" else 0.0,
        "s_per_step": seconds, "steps_per_s": 1 / seconds, "samples_per_s": batch_size / seconds,
        "peak_gib": peak, "build_s": first - t0, "first_step_s": warm,
        "min_for_1000_steps": 1000 * seconds / 60, "ops_per_step": ops,
    }
    if args.size == "sd15" and device.startswith("cuda"):
        name = torch.cuda.get_device_name()
        peak_tflops = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
        tflop = UNET_FWD_TFLOP_512 * (args.resolution / 512) ** 2 * (1 + BACKWARD_FACTOR)
        if peak_tflops:
            result["mfu"] = result["samples_per_s"] * tflop / peak_tflops
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["sd15", "tiny"], default="sd15")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--resolution", type=int, default=None, help="default: 512 (sd15) / 64 (tiny)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                        help="autocast + frozen-weight dtype (default: bfloat16 on GPU, float32 on CPU)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations (memory for time)")
    parser.add_argument("--cache-latents", action="store_true", help="ED-LoRA step reuses cached VAE posteriors")
    parser.add_argument("--attn-reg", type=float, default=0.0,
                        help="ED-LoRA step with attention regularisation of this weight (paper: 0.01)")
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile'd UNets (largest batch)")
    parser.add_argument("--compile-mode", default="default",
                        choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"])
    parser.add_argument("--compile-modules", nargs="+", choices=["unet", "text_encoder", "vae"], default=["unet"],
                        help="what --compile compiles (in both steps)")
    parser.add_argument("--compile-kinds", nargs="+", choices=["plain", "edlora"], default=["plain", "edlora"],
                        help="which steps to measure compiled (each cold compile takes minutes at SD 1.5 size)")
    parser.add_argument("--no-eager", action="store_true", help="skip the eager measurements (compiled ones only)")
    parser.add_argument("--count-ops", action="store_true",
                        help="also count the ATen ops of one step (views excluded): a launch-count proxy, also on CPU")
    parser.add_argument("--json", default=None, help="write all results here")
    args = parser.parse_args()
    args.resolution = args.resolution or (512 if args.size == "sd15" else 64)
    dtype = getattr(torch, args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32"))
    results = []
    for bs in [] if args.no_eager else args.batch_sizes:
        plain = measure("plain", args, bs, dtype)
        ed = measure("edlora", args, bs, dtype)
        results += [plain, ed]
        print(f"batch {bs}: ED-LoRA/plain samples/s ratio {ed['samples_per_s'] / plain['samples_per_s']:.3f}", flush=True)
        if args.count_ops:
            print(f"batch {bs}: ATen ops per step: plain {plain['ops_per_step']}, ED-LoRA {ed['ops_per_step']}", flush=True)
        if args.json:
            json.dump(results, open(args.json, "w"), indent=1)
    if args.compile:
        bs = max(args.batch_sizes)
        for kind in args.compile_kinds:
            results.append(measure(kind, args, bs, dtype, use_compile=True))
            if args.json:
                json.dump(results, open(args.json, "w"), indent=1)
    print("\nkind    batch compile          s/step  samples/s  peak GiB  MFU   1000 steps (min)  first step (s)")
    for r in results:
        print(f"{r['kind']:7s} {r['batch']:5d} {str(r['compile']):16s} {r['s_per_step']:7.3f} {r['samples_per_s']:9.2f} "
              f"{r['peak_gib']:8.2f} {r.get('mfu', float('nan')):5.3f} {r['min_for_1000_steps']:8.2f} "
              f"{r['first_step_s']:8.1f}")


if __name__ == "__main__":
    main()
