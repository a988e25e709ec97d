#!/usr/bin/env bash
# Create .venv and install mos-lightning with its test extras, from scratch.
# TORCH_SPEC picks the torch build (default: the CPU pin used by CI; GPU users: e.g. TORCH_SPEC=torch).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"   # first, so nothing else pulls a CUDA build
python -m pip install -q -e '.[test,logging]'
# The tiny demo/test model rebuilds the real CLIP tokenizer from the BPE file inside this wheel;
# --no-deps keeps it from pulling another torch.
python -m pip install -q --no-deps open_clip_torch
python -c "import mos_lightning, diffusers, transformers, peft, lightning; print('mos-lightning environment ready')"
