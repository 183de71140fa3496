#!/usr/bin/env bash
# Everything a GPU session runs for chapter 13, in order; stops at the first failure.
# Usage: bash benchmarks/run_gpu_checks.sh [--quick]   (--quick: N = 1024 and 4096 only)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
$PY -c "import cupy, torch; print('cupy', cupy.__version__, 'torch', torch.__version__, 'cuda', torch.version.cuda)"
if command -v nvcc > /dev/null; then $PY -m attention_scratch.backends.compile_check; fi
$PY -m pytest tests/test_cupy_gpu.py -q -x -m "slow or not slow" -p no:cacheprovider
if [ "${1:-}" = "--quick" ]; then
  $PY -m attention_scratch.bench_gpu --n 1024 4096 --output benchmarks/gpu_results.md
else
  $PY -m attention_scratch.bench_gpu --output benchmarks/gpu_results.md
fi
cat benchmarks/gpu_results.md
