#!/usr/bin/env bash
# Everything a GPU session runs for chapter 13, in order: device and software versions, the
# nvcc compile check with the ptxas report, the full GPU test grid, then the benchmark, which
# checks every configuration against the float64 oracle before timing it. A failing test does
# not stop the benchmark (a first GPU run should report as much as it can); the script's exit
# status is nonzero if any step failed.
# Usage: bash benchmarks/run_gpu_checks.sh [--quick]   (--quick: N = 1024 and 4096 only)
# Logs and the results file are also copied to $OUT when it is set (the lent device machine).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
LOGS=${OUT:-/tmp}
status=0
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
$PY -c "import cupy, torch; print('cupy', cupy.__version__, 'torch', torch.__version__, 'cuda', torch.version.cuda)" || status=1
if command -v nvcc > /dev/null; then
  $PY -m attention_scratch.backends.cuda.compile_check --ptxas-info > "$LOGS/compile_check.log" 2>&1 || status=1
  grep -E "^(ok|FAIL)|failure" "$LOGS/compile_check.log"
fi
$PY -m pytest tests/test_cupy_gpu.py -q -m "slow or not slow" -p no:cacheprovider -rfE \
  > "$LOGS/test_cupy_gpu.log" 2>&1 || status=1
tail -n 40 "$LOGS/test_cupy_gpu.log"
sizes=(); [ "${1:-}" = "--quick" ] && sizes=(--n 1024 4096)
PYTHONUNBUFFERED=1 $PY -m attention_scratch.bench --gpu "${sizes[@]}" --output benchmarks/gpu_results.md || status=1
[ -n "${OUT:-}" ] && cp benchmarks/gpu_results.md "$OUT/" 2>/dev/null
cat benchmarks/gpu_results.md
exit $status
