#!/usr/bin/env bash
# The GPU path in one short run, on a machine with a CUDA GPU (no Ray, S3 or model download needed):
#   1. the vlm backend's tests with ZOOMIN_TEST_DEVICE=cuda (bfloat16 on the GPU);
#   2. benchmarks/vlm_bench.py --device cuda --no-ray (images/s and tokens, tiny random Qwen2.5-VL);
#   3. benchmarks/gpu_check.py: the scan job's model actor placed on the GPU by a GPU plan, its rows
#      against the same actor on CPU, and the vlm backend behind that plan;
#   4. the classifier backend's tests with ZOOMIN_TEST_DEVICE=cuda, and benchmarks/classifier_speed.py
#      --device cuda (a ViT-S/16 against the compact backend, and the tile-size sweep);
#   5. training on the GPU: tests/test_train.py (the nets learn on cuda), a small `zoomin synth` set,
#      `zoomin train` on it (--device auto takes the GPU), and benchmarks/train_speed.py (CPU
#      against GPU, the same steps);
#   6. pipeline: benchmarks/gpu_pipeline.py (the node's decode limit, then the CPU and GPU plans of
#      the scan job through Ray: steady rate, share of the limit, per-stage busy time, GPU busy);
#   7. vlmsize: benchmarks/vlm_size.py --size 7b (the vlm backend at the paper's size, random
#      weights: images/s per batch size and attention implementation, memory, GPU busy).
# Parts 6 and 7 are not in the default list; on a machine without Ray, install the wheels that
# benchmarks/gpu_wheels.sh downloads first (its header says how).
#
#   bash benchmarks/gpu_smoke.sh [OUT_DIR] [PARTS]   (default: gpu-smoke/ and vlm,check,classifier,train)
#
# Writes OUT_DIR/log.txt, OUT_DIR/vlm_gpu.json, OUT_DIR/gpu_check.json, OUT_DIR/train_speed.json (and
# gpu_pipeline.json, vlm_size.json);
# exits non-zero if any step failed (each step still runs). The training set goes to a temporary
# folder.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu-smoke}"
parts=",${2:-vlm,check,classifier,train},"
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
if [[ $parts == *,vlm,* ]]; then
  step vlm-tests env ZOOMIN_TEST_DEVICE=cuda "$py" -m pytest -q -p no:cacheprovider tests/test_vlm.py \
    tests/test_vlm_parse.py -k "not through_ray and not from_s3"
  step vlm-bench "$py" benchmarks/vlm_bench.py --device cuda --no-ray --n 48 --json "$out/vlm_gpu.json"
fi
if [[ $parts == *,check,* ]]; then
  step gpu-check "$py" benchmarks/gpu_check.py --n 64 --out "$out"
fi
if [[ $parts == *,classifier,* ]]; then
  step classifier-tests env ZOOMIN_TEST_DEVICE=cuda "$py" -m pytest -q -p no:cacheprovider tests/test_classifier.py \
    -k "not planted and not from_s3"
  step classifier-bench "$py" benchmarks/classifier_speed.py --device cuda --n 32
fi
if [[ $parts == *,train,* ]]; then
  set_dir=$(mktemp -d)
  step train-tests "$py" -m pytest -q -p no:cacheprovider tests/test_train.py
  step train-synth "$py" -m jobs.cli synth --out "$set_dir" --count 160 --generator-steps 100
  step train-cli "$py" -m jobs.cli train "$set_dir/labels.jsonl" --out "$set_dir/w.safetensors" \
    --scan-steps 300 --zoom-steps 150
  step train-speed "$py" benchmarks/train_speed.py --labels "$set_dir/labels.jsonl" --devices cpu,cuda \
    --json "$out/train_speed.json"
  rm -rf "$set_dir"
fi
if [[ $parts == *,pipeline,* ]]; then
  step gpu-pipeline "$py" benchmarks/gpu_pipeline.py --n "${ZOOMIN_GPU_N:-1000}" --json "$out/gpu_pipeline.json"
fi
if [[ $parts == *,vlmsize,* ]]; then
  step vlm-size "$py" benchmarks/vlm_size.py --size "${ZOOMIN_VLM_SIZE:-7b}" --json "$out/vlm_size.json"
fi
echo "== done, rc=$rc ($(date -u +%H:%M:%S))" | tee -a "$log"
exit $rc
