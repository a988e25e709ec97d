#!/usr/bin/env bash
# The whole chain on the embedded *random* tiny model — plumbing only (its images are noise; the README's demo,
# scripts/demo.sh, runs the trained miniature world). About 1½ minutes; idempotent (finished stages are skipped).
#   1. write the tiny random SD-1.x-shaped model to outputs/demo/tiny-sd (and a tiny random CLIP
#      and T2I-Adapter)
#   2. tune an ED-LoRA for each bundled demo concept → outputs/demo/edlora/<concept>/edlora.safetensors
#      (sample grids at LoRA scales 0 / 0.7 / 1.0 in outputs/demo/logs/<concept>/…/samples/)
#      and each concept's fusion statistics beside its file (edlora.fusion-stats.safetensors)
#   3. sample each concept → outputs/demo/samples/<concept>/ (a rerun makes only missing images)
#   4. fuse both concepts into one model → outputs/demo/fusion/{model/,fusion_report.json}
#   5. sample the fused model with both concepts → outputs/demo/samples/fused/
#   6. regional sampling from the fused model (boxes + an adapter condition) → outputs/demo/regional/
#   7. Table-1 evaluation (single-concept, fused, class-word bound) → outputs/demo/eval/table.md
#      (the tiny CLIP is random: the numbers show the plumbing, not quality)
#   8. one page with all of it → outputs/demo/index.html
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
export TRANSFORMERS_VERBOSITY=error  # no optional-dependency notes (torchvision) from the tiny-model writer
# Each stage's wall time goes to outputs/demo/timing.tsv (benchmarks/demo_time.py reads it).
mkdir -p outputs/demo
TIMING=outputs/demo/timing.tsv
: > "$TIMING"
. scripts/lib/stage.sh
stage tiny-models python -m mos_lightning.tiny outputs/demo/tiny-sd --clip outputs/demo/tiny-clip \
  --adapter outputs/demo/tiny-adapter
tune_and_sample configs/demo outputs/demo redball bluecube
fuse_and_compose configs/demo outputs/demo \
  '["a photo of <redball>", "a photo of <bluecube>", "a <redball> next to a <bluecube>"]' \
  "mos-lightning demo (tiny random model)"
echo "demo: done; ED-LoRA files under outputs/demo/edlora/, the fused model under outputs/demo/fusion/,"
echo "      images under outputs/demo/samples/ and outputs/demo/regional/, the evaluation table in"
echo "      outputs/demo/eval/table.md; everything on one page: outputs/demo/index.html"
