#!/usr/bin/env bash
# The GPU path in one short run, on a machine with a CUDA GPU (no Ray, S3 or model download needed):
#   1. the vlm backend's tests with ZOOMIN_TEST_DEVICE=cuda (bfloat16 on the GPU);
#   2. benchmarks/vlm_bench.py --device cuda --no-ray (images/s and tokens, tiny random Qwen2.5-VL);
#   3. benchmarks/gpu_check.py: the scan job's model actor placed on the GPU by a GPU plan, its rows
#      against the same actor on CPU, and the vlm backend behind that plan.
#
#   bash benchmarks/gpu_smoke.sh [OUT_DIR]      (default: gpu-smoke/)
#
# Writes OUT_DIR/log.txt, OUT_DIR/vlm_gpu.json and OUT_DIR/gpu_check.json; exits non-zero if any
# step failed (each step still runs).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu-smoke}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py="${PYTHON:-python3}"
log="$out/log.txt"
rc=0
step() {  # step NAME CMD...: run, log, remember a failure, go on
  echo "== $1 ($(date -u +%H:%M:%S))" | tee -a "$log"
  shift
  "$@" 2>&1 | tee -a "$log" || { rc=1; echo "== FAILED" | tee -a "$log"; }
}
step versions "$py" -c "import torch, transformers; print('torch', torch.__version__, '| transformers',
  transformers.__version__, '| cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0)
  if torch.cuda.is_available() else '')"
step vlm-tests env ZOOMIN_TEST_DEVICE=cuda "$py" -m pytest -q -p no:cacheprovider tests/test_vlm.py \
  tests/test_vlm_parse.py -k "not through_ray and not from_s3"
step vlm-bench "$py" benchmarks/vlm_bench.py --device cuda --no-ray --n 48 --json "$out/vlm_gpu.json"
step gpu-check "$py" benchmarks/gpu_check.py --n 64 --out "$out"
echo "== done, rc=$rc ($(date -u +%H:%M:%S))" | tee -a "$log"
exit $rc
