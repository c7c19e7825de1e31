#!/usr/bin/env bash
# Set up (with the test extras), then run the whole test suite. Extra arguments go to pytest;
# `bash scripts/test.sh tests/test_cascade.py` runs that file only.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
. .venv/bin/activate
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}"
# Test files or folders among the arguments run alone; otherwise the whole suite.
where=tests
for arg in "$@"; do
  if [[ "$arg" != -* && -e "${arg%%::*}" ]]; then where=""; fi
done
python -m pytest $where "$@"
