#!/usr/bin/env bash
# Create .venv (if missing) and install zoomin into it with the given extras.
# torch is installed on its own first: `pip install torch==VERSION`, from ZOOMIN_TORCH_INDEX when
# set (e.g. https://download.pytorch.org/whl/cpu: PyPI's Linux wheel of torch brings CUDA
# libraries, several GB). On GPU nodes install your CUDA torch build first and set
# ZOOMIN_TORCH=skip (docs/operations.md, "GPUs").
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-ray,synth}"
py="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if [ "${ZOOMIN_TORCH:-cpu}" != "skip" ] && ! python -c "import torch" 2>/dev/null; then
  # Installed on its own, first: a resolver asked for "torch" together with other packages
  # may pick a multi-GB CUDA build on a machine that has no GPU.
  python -m pip install -q "torch==${ZOOMIN_TORCH_VERSION:-2.13.0}" ${ZOOMIN_TORCH_INDEX:+--index-url "$ZOOMIN_TORCH_INDEX"}
fi
# A regular install (not -e): an editable one prints setuptools warnings on every install.
# After changing the code, run this script again (demo.sh and test.sh do).
python -m pip install -q ".[${extras}]"
if [[ ",${extras}," == *",test,"* ]]; then
  # The tests embed watermarks with invisible-watermark itself. Its metadata asks for opencv-python
  # (a GUI build that needs libGL) and torch; the test extra brings the headless OpenCV instead.
  python -m pip install -q --no-deps "invisible-watermark==0.2.0"
fi
