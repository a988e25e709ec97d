#!/usr/bin/env bash
# Every GPU figure of BENCHMARKS.md, in two device runs (≤ 9½ min + ≤ 4 min) on one H100, so that a session
# lent a GPU for 15 minutes can measure them all (the device tool's runs are limited to 10 minutes).
#
#   bash benchmarks/gpu_session.sh [results-folder]      # default: $OUT (the device tool's), else ./gpu-results
#
# Runs from the repository root. If diffusers is missing (the device machines lack it), wheels in .whl/
# are installed offline into /tmp/site (see ../shared/ENVIRONMENT.md). .whl/ is ignored by git; to fill it:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 -d .whl diffusers==0.42.1 importlib_metadata==10.2.0 \
#     open_clip_torch==3.3.0 jsonargparse==4.53.0 docstring_parser==0.18.0 typeshed_client==2.15.0
# (jsonargparse and its two extras only for the "demo" part's CLI). Each benchmark has its own time
# limit, so one that hangs or runs long does not cost the others; everything goes to one log, and each
# benchmark writes its JSON beside it (at most 8 files: what the device tool returns).
# A dry run on a CPU: BENCH_SIZE=tiny BENCH_DEVICE=cpu bash benchmarks/gpu_session.sh /tmp/gpu-dry-run
set -u
size=${BENCH_SIZE:-sd15}
device=${BENCH_DEVICE:-cuda}
results=$(realpath -m "${1:-${OUT:-gpu-results}}")
mkdir -p "$results"
log="$results/gpu_session.log"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
if ! python -c "import diffusers" 2>/dev/null; then
  python -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi

{
  date -u; git rev-parse --short HEAD 2>/dev/null
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"
  python -c "import torch, diffusers, transformers, peft; print(torch.__version__, diffusers.__version__, transformers.__version__, peft.__version__)"
} >"$log" 2>&1

run() {  # run NAME SECONDS ARGS...: one benchmark under a time limit, its output appended to the log
  local name=$1 limit=$2
  shift 2
  echo "=== $name (limit ${limit}s): $*" >>"$log"
  local start=$SECONDS
  (cd benchmarks && timeout "$limit" python "$@") >>"$log" 2>&1
  echo "=== $name: exit $?, $((SECONDS - start)) s" >>"$log"
  tail -n 3 "$log"
}

# BENCH_PARTS picks the parts: "tests" (≤ 45 s), "train" (issue 7: ≤ 505 s), "others" (sampling, fusion,
# evaluation, regional: ≤ 175 s), "smoke" (CUDA graphs on the tiny model, ≤ 60 s) and "demo" (the README's
# demo chain through the CLI, ≤ 240 s; jsonargparse and its extras travel in .whl/ too); the default runs the
# first three (over 10 minutes: split them across device calls). The inductor cache lives in the
# repository's ignored .inductor-cache/, which a warm device machine keeps between calls.
parts=${BENCH_PARTS:-tests train others}
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$PWD/.inductor-cache}
if [[ $parts == *tests* ]]; then
  # 0. the GPU-only tests: no synchronisation in the step, nor between logging steps of a Lightning run
  echo "=== gpu tests (limit 45s)" >>"$log"
  timeout 45 python -m pytest -q -s -p no:cacheprovider tests/test_gpu.py tests/test_host_values.py >>"$log" 2>&1
  echo "=== gpu tests: exit $?" >>"$log"
fi
if [[ $parts == *train* ]]; then
  # 1. eager training steps, ED-LoRA vs plain LoRA, batch 2 and 4
  run train_eager 95 train_step.py --size $size --device $device --batch-sizes 2 4 --count-ops --json "$results/train_eager.json"
  # 2. the fastest configurations at batch 4: UNet and text encoder compiled, latents cached (the VAE idles);
  #    the cold compile takes minutes and is reported as first_step_s. Then the same with CUDA graphs, whose
  #    compile reuses the Triton kernels that the first one built.
  compiled="train_step.py --size $size --device $device --batch-sizes 4 --compile --compile-kinds edlora --no-eager \
    --compile-modules unet text_encoder --cache-latents"
  run train_compiled 240 $compiled --json "$results/train_compiled.json"
  run train_cudagraphs 170 $compiled --compile-mode reduce-overhead --json "$results/train_cudagraphs.json"
fi
if [[ $parts == *others* ]]; then
  # 3. sampling, fusion of 14 concepts (closed form: the ≤ 30 s target), evaluation and regional sampling at
  #    SD 1.5 size (issues 3-6)
  run sampling 50 sampling.py --size $size --device $device --batch-sizes 1 8 --calls 3 --json "$results/sampling.json"
  run fusion 55 fusion.py --size $size --device $device --concepts 14 --solvers closed_form --json "$results/fusion.json"
  run evaluation 40 evaluation.py --size $size --device $device --batch-size 8 --calls 2 --json "$results/evaluation.json"
  run regional 30 regional.py --size $size --device $device --calls 2 --json "$results/regional.json"
fi
if [[ $parts == *smoke* ]]; then  # CUDA graphs on the tiny model: does the option work (compiles in seconds)?
  run cudagraphs_tiny 60 train_step.py --size tiny --device $device --batch-sizes 4 --compile --compile-kinds edlora \
    --no-eager --compile-modules unet text_encoder --cache-latents --compile-mode reduce-overhead --steps 10
fi
if [[ $parts == *demo* ]]; then  # the README's demo chain through the CLI on the GPU: every task's Trainer path
  bin=$(mktemp -d)  # `mos-lightning` without installing the package (the repository is on PYTHONPATH)
  printf '#!/bin/sh\nexec python -m mos_lightning "$@"\n' >"$bin/mos-lightning" && chmod +x "$bin/mos-lightning"
  echo "=== demo (limit 240s)" >>"$log"
  PATH="$bin:$PATH" timeout 240 bash scripts/demo.sh >>"$log" 2>&1
  echo "=== demo: exit $?" >>"$log"
  cp outputs/world/eval/table.md "$results/demo_table.md" 2>/dev/null
fi
echo "done: $results" >>"$log"
