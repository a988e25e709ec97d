"""Regional sampling benchmark: RegionalPipeline with three regions vs plain sampling of the same model,
size, steps and CFG, in one process; the ratio of times is the figure (target ≤ 1.3 at SD 1.5 scale).

    python benchmarks/regional.py --size sd15                      # GPU, fp16, 512×512
    python benchmarks/regional.py --size tiny --device cpu --calls 3
"""

from __future__ import annotations

import argparse
import time

import torch
from common import pipeline, report  # benchmarks/ is on sys.path when these scripts run
from sampling import random_concept  # benchmarks/ is on sys.path when this script runs
from train_step import build_components

from mos_lightning.attention.regions import Region
from mos_lightning.defaults import NEGATIVE_PROMPT
from mos_lightning.pipelines import EDLoRAPipeline
from mos_lightning.pipelines.regional import RegionalPipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("sd15", "tiny"), default="sd15")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    dtype = torch.float16 if cuda else torch.float32
    side = 512 if args.size == "sd15" else 64

    base = build_components(args.size, args.device)
    pipe = pipeline(EDLoRAPipeline, base, args.device, dtype)
    pipe.load_edlora(random_concept(base), scale=0.7)
    regions = [Region("<concept>, standing", (0.0, 0.0, 1.0, 0.34)), Region("a dog", (0.3, 0.33, 1.0, 0.66)),
               Region("a chair", (0.2, 0.66, 1.0, 1.0))]
    prompt = "a person, a dog and a chair near the castle"

    def plain(i):
        pipe(prompt, negative_prompt=NEGATIVE_PROMPT, num_inference_steps=args.steps, height=side, width=side,
             generator=torch.Generator().manual_seed(i), output_type="np")

    regional_pipe = RegionalPipeline(pipe)

    def regional(i):
        regional_pipe(prompt, regions, num_inference_steps=args.steps, height=side, width=side,
                      generator=torch.Generator().manual_seed(i))

    def seconds(fn) -> float:
        fn(0)
        sync()
        start = time.perf_counter()
        for i in range(1, args.calls + 1):
            fn(i)
        sync()
        return (time.perf_counter() - start) / args.calls

    plain_s, regional_s = seconds(plain), seconds(regional)
    summary = {"size": args.size, "device": torch.cuda.get_device_name() if cuda else "cpu", "steps": args.steps,
               "regions": len(regions), "plain_s_per_image": plain_s, "regional_s_per_image": regional_s,
               "ratio": regional_s / plain_s}
    report(summary, args.json)


if __name__ == "__main__":
    main()
