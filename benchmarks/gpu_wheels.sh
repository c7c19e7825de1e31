#!/usr/bin/env bash
# Wheels for a bare GPU machine that has torch, transformers and pyarrow but neither Ray nor
# network access, downloaded here into .whl/ (ignored by git), to be carried with the code:
#
#   bash benchmarks/gpu_wheels.sh [PYTHON_VERSION]      (default 3.12, the GPU image's Python)
#
# Then, on the GPU machine, in the repository's root:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
#   bash benchmarks/gpu_smoke.sh OUT pipeline,vlmsize
#
# Ray's wheel (about 76 MiB) is repacked without ray/jars (its Java workers, 31 MiB), which a
# Python job never loads, so that code and wheels stay under 64 MiB together.
set -euo pipefail
cd "$(dirname "$0")/.."
py="${1:-3.12}"
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir -p .whl
# Ray and what it needs beyond the GPU image's packages (which has click, filelock, msgpack,
# packaging, protobuf, pyyaml, requests, aiohttp, numpy, pandas, pyarrow, fsspec).
for req in ray==2.60.0 jsonschema==4.25.1 jsonschema-specifications==2025.9.1 referencing==0.36.2 rpds-py==0.27.1; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "$req"
done
python3 - <<'EOF'
import glob, os, zipfile
src = glob.glob(".whl/ray-*.whl")[0]
tmp = src + ".slim"
with zipfile.ZipFile(src) as zin, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zout:
    for item in zin.infolist():
        if item.filename.startswith("ray/jars/"):
            continue
        data = zin.read(item.filename)
        if item.filename.endswith(".dist-info/RECORD"):
            data = b"\n".join(l for l in data.split(b"\n") if not l.startswith(b"ray/jars/"))
        zout.writestr(item, data)
os.replace(tmp, src)
EOF
du -sh .whl
