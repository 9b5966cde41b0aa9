#!/usr/bin/env bash
# The GPU benchmark as one short run (about 5 minutes on one H100/H200-class GPU).
#
#   bash benchmarks/gpu.sh [OUT_DIR]            # default: $OUT, else benchmarks/out
#
# Needs python3 with a CUDA build of torch, transformers, safetensors, tokenizers, pytest and
# polars. On a machine without internet, put wheels of what is missing (e.g. polars) in .whl/:
# they are installed into /tmp/site first.
#
# 1. fast vs naive, bf16, random-init model with the Qwen2.5-1.5B shape (28 layers, d = 1536):
#    layer skip, erasure and IG, with the windowed-vs-full-row difference in bf16 (--check-windows);
#    the forward analyses' naive reference loops over the 152k vocabulary in Python, so only
#    their fast path is timed (step 2).
# 2. fast paths only, bf16, Qwen2.5-7B and -32B shapes: time and peak GPU memory per analysis.
# 3. effdepth vs the published code's structure (batch 1 per intervention, 16 IG points per pass),
#    bf16, Qwen2.5-1.5B shape: where batch-1 forwards leave most of the GPU idle.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-benchmarks/out}}
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c "import torch, transformers; print('torch', torch.__version__, '| transformers', transformers.__version__)"
} | tee "$out/gpu-machine.txt"
python3 benchmarks/bench_analyses.py --device cuda --dtype bfloat16 --models qwen2.5-1.5b-shape \
    --analyses layer_skip residual_erasure integrated_gradients --repeat 3 --check-windows \
    --out "$out/gpu-1.5b.csv" 2>&1 | tee "$out/gpu-1.5b.log"
python3 benchmarks/bench_analyses.py --device cuda --dtype bfloat16 --models qwen2.5-1.5b-shape qwen2.5-7b-shape qwen2.5-32b-shape \
    --skip-naive --out "$out/gpu-fast.csv" 2>&1 | tee "$out/gpu-fast.log"
python3 benchmarks/bench_published.py --device cuda --dtype bfloat16 --models qwen2.5-1.5b-shape \
    --ig-layers 0 9 18 27 --repeat 3 --out "$out/gpu-published-1.5b.csv" 2>&1 | tee "$out/gpu-published-1.5b.log"
