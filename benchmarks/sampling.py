"""Sampling benchmark: EDLoRAPipeline (a concept loaded, layer-wise prompts) vs plain diffusers
StableDiffusionPipeline on the same components, same scheduler, steps, CFG and batch, in one process.

    python benchmarks/sampling.py --size sd15 --batch-sizes 1 8          # GPU, fp16, 512²
    python benchmarks/sampling.py --size tiny --device cpu --calls 2      # CPU smoke run (ratio only)

The number to compare across machines is the ratio ours/plain of images per second (target ≥ 0.95).
"""

from __future__ import annotations

import argparse
import time

import torch
from common import pipeline, report  # benchmarks/ is on sys.path when these scripts run
from diffusers import StableDiffusionPipeline
from diffusers.models.attention_processor import AttnProcessor2_0
from train_step import build_components  # benchmarks/ is on sys.path when this script runs

from mos_lightning.defaults import NEGATIVE_PROMPT
from mos_lightning.edlora_file import ConceptInfo, EDLoRA
from mos_lightning.lora import TEXT_ENCODER_TARGETS, UNET_TARGETS, add_lora, lora_state_dict
from mos_lightning.pipelines import EDLoRAPipeline


def random_concept(base) -> EDLoRA:
    """An ED-LoRA shaped like a tuned one (2 layer-wise tokens, rank-4 LoRA everywhere), random values."""
    import copy

    unet, text = copy.deepcopy(base.unet).cpu().float(), copy.deepcopy(base.text_encoder).cpu().float()
    add_lora(unet, UNET_TARGETS, 4, 1.0)
    add_lora(text, TEXT_ENCODER_TARGETS, 4, 1.0)
    layers, width = 16, base.text_encoder.config.hidden_size
    noisy = lambda state: {k: torch.randn_like(v) * 0.01 for k, v in state.items()}  # noqa: E731
    return EDLoRA({"concept": ConceptInfo(["<c1>", "<c2>"], "person")},
                  {t: torch.randn(layers, width) * 0.01 for t in ("<c1>", "<c2>")},
                  noisy(lora_state_dict(unet)), noisy(lora_state_dict(text)), num_layers=layers)


def time_calls(pipe, prompt: str, batch: int, args, calls: int, sync) -> float:
    """Images per second over ``calls`` sampling calls after one warm-up call."""
    kwargs = dict(num_inference_steps=args.steps, guidance_scale=7.5, height=args.resolution, width=args.resolution,
                  negative_prompt=[NEGATIVE_PROMPT] * batch, output_type="np")
    pipe([prompt] * batch, generator=torch.Generator().manual_seed(0), **kwargs)
    sync()
    start = time.perf_counter()
    for i in range(calls):
        pipe([prompt] * batch, generator=torch.Generator().manual_seed(i + 1), **kwargs)
    sync()
    return calls * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("sd15", "tiny"), default="sd15")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=("float16", "bfloat16", "float32"), default=None,
                        help="default: float16 on GPU, float32 on CPU")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--calls", type=int, default=3, help="timed sampling calls per setting")
    parser.add_argument("--resolution", type=int, default=None, help="default: 512 (sd15), 64 (tiny)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    args.resolution = args.resolution or (512 if args.size == "sd15" else 64)
    dtype = getattr(torch, args.dtype or ("float16" if args.device.startswith("cuda") else "float32"))
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    base = build_components(args.size, args.device)
    concept = random_concept(base)
    plain = pipeline(StableDiffusionPipeline, base, args.device, dtype)
    ours = pipeline(EDLoRAPipeline, base, args.device, dtype)  # the same modules: only the pipeline differs
    plain.unet.set_attn_processor(AttnProcessor2_0())  # diffusers' SDPA default; ours swaps cross-attn per call
    prompt = "a photo of a person on the beach, smiling"
    results = []
    for batch in args.batch_sizes:
        plain_ips = time_calls(plain, prompt, batch, args, args.calls, sync)
        ours.load_edlora(concept, scale=0.7)
        ours_ips = time_calls(ours, "a photo of <TOK> on the beach, smiling", batch, args, args.calls, sync)
        ours.unload_edlora()
        row = {"batch": batch, "plain_images_per_s": plain_ips, "ours_images_per_s": ours_ips,
               "ratio": ours_ips / plain_ips, "plain_it_per_s": plain_ips / batch * args.steps}
        results.append(row)
        print(f"batch {batch}: plain {plain_ips:.2f} img/s ({row['plain_it_per_s']:.1f} it/s), "
              f"ours {ours_ips:.2f} img/s, ratio {row['ratio']:.3f}")
    summary = {"size": args.size, "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
               "dtype": str(dtype), "steps": args.steps, "resolution": args.resolution, "results": results}
    report(summary, args.json)


if __name__ == "__main__":
    main()
