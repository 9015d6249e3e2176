#!/usr/bin/env bash
# The CUDA path on a real GPU, in under 8 minutes: a verdict per point, then the benchmark against a plain loop.
#   bash benchmarks/gpu_check.sh
# Needs Python with a CUDA build of torch (>= 2.4); installs diagnose's other needs with pip where they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PYTHON=${PYTHON:-python3}
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'; print('torch', torch.__version__)"
if ! "$PYTHON" -c "import hydra, omegaconf, tensorboard, rich, matplotlib" 2>/dev/null; then
  echo "installing diagnose's dependencies (torch stays as it is)"
  "$PYTHON" -m pip install -q --no-deps -e . && "$PYTHON" -m pip install -q "hydra-core>=1.3.2,<1.4" tensorboard rich matplotlib numpy
fi
exec timeout 480 "$PYTHON" benchmarks/gpu_check.py
