#!/usr/bin/env bash
# Set up (with the test extras), then run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
. .venv/bin/activate
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}"
python -m pytest tests "$@"
