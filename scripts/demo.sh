#!/usr/bin/env bash
# Set up, then scan the bundled sample images with the default model on a local Ray cluster,
# and write a page to look at. Results: zoomin-demo/results/*.parquet, zoomin-demo/report.html
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh ray
. .venv/bin/activate
zoomin scan jobs/samples --out zoomin-demo/results --overwrite
zoomin report zoomin-demo/results --out zoomin-demo/report.html
echo "open zoomin-demo/report.html to look at the results"
