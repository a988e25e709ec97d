#!/usr/bin/env bash
# The README's main command: the whole chain in the miniature world, on the world base model and CLIP shipped with
# the package, into outputs/world/ (what each stage writes: `python -m mos_lightning.world demo --help` and
# mos_lightning/world/demo.py; from an installed wheel, run that command in any folder). Idempotent: finished
# stages are skipped. WORLD_CONCEPTS="zigcone moonball" picks other concepts. The plumbing-only chain on the
# random tiny model is scripts/tiny_demo.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m mos_lightning.world demo
