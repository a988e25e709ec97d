"""``python -m mos_lightning.world concepts FOLDER`` / ``sample FOLDER N`` / ``demo``: concept folders, captioned
pictures, or the README's whole demo chain (:mod:`mos_lightning.world.demo`) into ``outputs/world/`` here."""

from __future__ import annotations

import argparse
import os
import random
from pathlib import Path

from .concepts import CONCEPTS, write_concept
from .demo import DEFAULT_CONCEPTS
from .scenes import caption, random_scene, render


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The miniature world: concept folders and sample pictures.")
    sub = parser.add_subparsers(dest="command", required=True)
    concepts = sub.add_parser("concepts", help="write every concept's folder (images, captions/, masks/)")
    concepts.add_argument("folder")
    concepts.add_argument("--views", type=int, default=8, help="views per concept")
    concepts.add_argument("--seed", type=int, default=0)
    sample = sub.add_parser("sample", help="write N world pictures with their captions")
    sample.add_argument("folder")
    sample.add_argument("count", type=int)
    sample.add_argument("--seed", type=int, default=0)
    demo = sub.add_parser("demo", help="the README's demo: tune, sample, fuse, compose, evaluate → outputs/world/")
    demo.add_argument("--concepts", nargs=2, choices=sorted(CONCEPTS),
                      default=os.environ.get("WORLD_CONCEPTS", " ".join(DEFAULT_CONCEPTS)).split(),
                      help="the two concepts to tune (default buoyring moonball, or $WORLD_CONCEPTS)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import Demo

        Demo(args.concepts).run()
    elif args.command == "concepts":
        for name in CONCEPTS:
            print(write_concept(name, Path(args.folder) / name, args.views, args.seed))
    else:
        folder = Path(args.folder)
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(args.count):
            scene = random_scene(random.Random(f"sample-{args.seed}-{k}"))
            image, _ = render(scene, seed=args.seed * 7919 + k)
            image.save(folder / f"{k:04d}.png")
            (folder / f"{k:04d}.txt").write_text(caption(scene) + "\n")
        print(folder)


if __name__ == "__main__":
    main()
