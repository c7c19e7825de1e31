"""A worker node of a three-node local Ray cluster is killed in the middle of a scan: the scan
completes with exactly one row per image (tests/multinode_kill.py, in its own process).

Ray Data can leave a read task of the dead node unfinished forever (about half the runs); the
watchdog then restarts what is missing, so both outcomes must end complete."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import jpeg_bytes, textured
from tests.multinode_kill import CLUSTER_DID_NOT_START

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.multinode]


def test_killing_a_worker_node_mid_scan_loses_and_duplicates_nothing(tmp_path):
    src = tmp_path / "imgs"
    src.mkdir()
    for i in range(200):
        (src / f"{i:04d}.jpg").write_bytes(jpeg_bytes(textured(96, 80, seed=i)))
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT), RAY_AUTH_MODE="disabled", RAY_ADDRESS="")
    for attempt in range(3):   # a cluster that did not start (not the scan) is started afresh
        r = subprocess.run([sys.executable, str(ROOT / "tests" / "multinode_kill.py"), str(src), str(out), "15"],
                           capture_output=True, text=True, cwd=ROOT, env=env, timeout=420)
        if r.returncode != CLUSTER_DID_NOT_START:
            break
        assert not out.exists(), "the scan must not have begun when the cluster failed to start"
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith('{"rows"')]
    assert lines, r.stdout[-3000:]
    res = json.loads(lines[-1])
    print(res)
    assert res["killed_at_files"] is not None and res["killed_before_end"]   # killed mid-run
    assert res["alive_nodes"] == 2
    assert res["complete"] and res["rows"] == res["unique"] == res["inputs"] == 200
