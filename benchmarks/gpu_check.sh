#!/usr/bin/env bash
# The GPU check (issue #19), one command on a machine with one NVIDIA GPU, from the repository root:
#   bash benchmarks/gpu_check.sh [--preset phi1-small|phi1] [--steps 30]
# Uses the machine's python3 with torch, transformers and accelerate (no install, no download; phi1lib is
# read from this checkout). Writes gpu_check.json and gpu_check.log into $OUT when set, else /tmp.
# Under 8 minutes for phi1-small on an A100/H100/H200. Record the numbers in benchmarks/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-python3}
dest=${OUT:-/tmp}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$dest/gpu_check.log" || true
$PY -c "import torch, transformers, accelerate; print('torch', torch.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__, 'flash_attn', __import__('importlib').util.find_spec('flash_attn') is not None)" 2>&1 | tee -a "$dest/gpu_check.log"
$PY benchmarks/gpu_check.py --json "$dest/gpu_check.json" "$@" 2>&1 | tee -a "$dest/gpu_check.log"
