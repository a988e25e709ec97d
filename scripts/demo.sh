#!/usr/bin/env bash
# The whole chain in the miniature world (mos_lightning.world), on the trained world base model and world CLIP
# shipped in demo/world/: tune two world concepts, sample them, fuse them, compose them regionally, evaluate with
# the world's CLIP, and put it all on one page (outputs/world/index.html). Idempotent: finished stages are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
CONCEPTS="${WORLD_CONCEPTS:-starbox bandball}"
mkdir -p outputs/world
TIMING=outputs/world/timing.tsv
: > "$TIMING"
. scripts/lib/stage.sh
stage concepts python -m mos_lightning.world concepts outputs/world/concepts
for concept in $CONCEPTS; do
  if [ -f "outputs/world/edlora/$concept/edlora.safetensors" ]; then
    echo "world: $concept already tuned (delete outputs/world/edlora/$concept to redo)"
    continue
  fi
  stage "tune-$concept" mos-lightning fit --config configs/world/edlora.yaml --config "configs/world/concepts/$concept.yaml"
done
for concept in $CONCEPTS; do
  stage "sample-$concept" mos-lightning predict --config configs/world/sample.yaml \
    --model.init_args.edloras "[outputs/world/edlora/$concept/edlora.safetensors]" \
    --data.init_args.output_dir "outputs/world/samples/$concept"
done
stage fuse mos-lightning predict --config configs/world/fusion.yaml
stage sample-fused mos-lightning predict --config configs/world/sample.yaml \
  --model.init_args.base_model outputs/world/fusion/model --model.init_args.edloras '[]' \
  --data.init_args.prompts '["a photo of <starbox> on the grass", "a photo of <bandball> in the snow", "<starbox> and <bandball> on the sand"]' \
  --data.init_args.output_dir outputs/world/samples/fused
stage regional mos-lightning predict --config configs/world/regional.yaml
stage evaluate mos-lightning test --config configs/world/eval.yaml
stage page python -m mos_lightning.results_page outputs/world --title "mos-lightning in the miniature world"
echo "world: done; everything on one page: outputs/world/index.html"
