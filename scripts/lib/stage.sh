# Sourced by the demo scripts. `stage NAME COMMAND...` runs the command and appends "NAME<TAB>seconds" to
# $TIMING (the stage table benchmarks/demo_time.py reads).
stage() {
  local name=$1 began=$SECONDS
  shift
  "$@"
  printf '%s\t%s\n' "$name" "$((SECONDS - began))" >> "$TIMING"
}

# `tune_and_sample CONFIGS OUTPUTS CONCEPT...`: tune each concept with CONFIGS/edlora.yaml and its overlay
# CONFIGS/concepts/<concept>.yaml (skipped when OUTPUTS/edlora/<concept>/edlora.safetensors exists), then sample
# it with CONFIGS/sample.yaml into OUTPUTS/samples/<concept>.
tune_and_sample() {
  local configs=$1 outputs=$2 concept
  shift 2
  for concept in "$@"; do
    if [ -f "$outputs/edlora/$concept/edlora.safetensors" ]; then
      echo "demo: $concept already tuned (delete $outputs/edlora/$concept to redo)"
      continue
    fi
    stage "tune-$concept" mos-lightning fit --config "$configs/edlora.yaml" --config "$configs/concepts/$concept.yaml"
  done
  for concept in "$@"; do
    stage "sample-$concept" mos-lightning predict --config "$configs/sample.yaml" \
      --model.init_args.edloras "[$outputs/edlora/$concept/edlora.safetensors]" \
      --data.init_args.output_dir "$outputs/samples/$concept"
  done
}

# `fuse_and_compose CONFIGS OUTPUTS PROMPTS TITLE`: fuse with CONFIGS/fusion.yaml, sample the fused model
# (PROMPTS: a JSON list) into OUTPUTS/samples/fused, compose regionally, evaluate, and write OUTPUTS/index.html.
fuse_and_compose() {
  local configs=$1 outputs=$2 prompts=$3 title=$4
  stage fuse mos-lightning predict --config "$configs/fusion.yaml"
  stage sample-fused mos-lightning predict --config "$configs/sample.yaml" \
    --model.init_args.base_model "$outputs/fusion/model" --model.init_args.edloras '[]' \
    --data.init_args.prompts "$prompts" --data.init_args.output_dir "$outputs/samples/fused"
  stage regional mos-lightning predict --config "$configs/regional.yaml"
  stage evaluate mos-lightning test --config "$configs/eval.yaml"
  stage page python -m mos_lightning.results_page "$outputs" --title "$title"
}
