#!/usr/bin/env bash
# Create .venv (if missing) and install zoomin into it with the given extras.
# CPU machines get the CPU build of torch; on GPU nodes install your CUDA torch build first
# (see README "Installing on GPU nodes") and set ZOOMIN_TORCH=skip.
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
  python -m pip install -q "torch==${ZOOMIN_TORCH_VERSION:-2.13.0}"
fi
# A regular install (not -e): an editable one prints setuptools warnings on every install.
# After changing the code, run this script again (demo.sh and test.sh do).
python -m pip install -q ".[${extras}]"
