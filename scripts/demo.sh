#!/usr/bin/env bash
# The README's main command: the whole chain in the miniature world (mos_lightning.world), on the trained world
# base model and world CLIP shipped in demo/world/ (nothing is downloaded, nothing large is trained):
#   1. write the world concepts' folders (8 views, captions with <TOK>, masks) → outputs/world/concepts/
#   2. tune an ED-LoRA for two of them → outputs/world/edlora/<concept>/edlora.safetensors (a sample grid at
#      LoRA scales 0 / 0.7 / 1.0 in outputs/world/logs/<concept>/…/samples/) and its fusion statistics
#   3. sample each concept → outputs/world/samples/<concept>/
#   4. fuse both into one world model → outputs/world/fusion/{model/,fusion_report.json}
#   5. sample the fused model with both concepts → outputs/world/samples/fused/
#   6. compose both regionally from the fused model → outputs/world/regional/
#   7. Table-1 evaluation scored by the world CLIP (single-concept, fused, class-word bound) → outputs/world/eval/
#   8. one page with all of it → outputs/world/index.html
# Idempotent: finished stages are skipped. WORLD_CONCEPTS="zigcone moonball" picks other concepts (any two of
# starbox bandball zigcone buoyring moonball heartcube; the fusion, regional and evaluation configs name the
# default two). The plumbing-only chain on the random tiny model is scripts/tiny_demo.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
CONCEPTS="${WORLD_CONCEPTS:-buoyring moonball}"
mkdir -p outputs/world
TIMING=outputs/world/timing.tsv
: > "$TIMING"
. scripts/lib/stage.sh
stage concepts python -m mos_lightning.world concepts outputs/world/concepts
tune_and_sample configs/world outputs/world $CONCEPTS
fuse_and_compose configs/world outputs/world \
  '["<buoyring> on the grass", "<moonball> in the snow", "<buoyring> and <moonball> on the sand"]' \
  "mos-lightning in the miniature world"
echo "demo: done; ED-LoRA files under outputs/world/edlora/, the fused model under outputs/world/fusion/,"
echo "      images under outputs/world/samples/ and outputs/world/regional/, the world's Table 1 in"
echo "      outputs/world/eval/table.md; everything on one page: outputs/world/index.html"
