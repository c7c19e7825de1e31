"""What a scan's start-up costs on a small machine: the driver stays free of torch (about 1 s of
imports before Ray even starts, on 2 cores); only the model actors load it."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.ray, pytest.mark.slow]

DRIVER = """
import json, sys
from jobs.cli import main
rc = main(["scan", "--out", sys.argv[1], "--no-progress", "--num-cpus", "2"])
print(json.dumps({"rc": rc, "heavy": sorted(m for m in ("torch", "scipy", "transformers") if m in sys.modules)}))
"""


def test_a_default_scan_never_imports_torch_in_the_driver(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    r = subprocess.run([sys.executable, "-c", DRIVER, str(tmp_path / "out")], cwd=ROOT, capture_output=True,
                       text=True, timeout=300, env={**env, "RAY_AUTH_MODE": "disabled"})
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["rc"] == 0 and list((tmp_path / "out").rglob("*.parquet"))
    assert got["heavy"] == [], f"the scan's driver imported {got['heavy']}"
