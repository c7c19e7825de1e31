"""`zoomin submit` and `zoomin scan --address` against a real Ray cluster started with
`ray start --head` (dashboard and Jobs API on loopback) plus a worker node."""
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from jobs.cli import main
from jobs.sinks import read_results
from jobs.sources import SAMPLES_DIR
from tests.conftest import kill_cluster
from tests.s3_support import free_port

pytestmark = [pytest.mark.ray, pytest.mark.slow]
RAY = str(Path(sys.executable).parent / "ray")
ROOT = Path(__file__).resolve().parent.parent


def stop_cluster(temp: str) -> None:
    """kill_cluster(temp), and first the processes it cannot tell by their command line: Ray's
    agents rename themselves (ray::DashboardAgent, ray::RuntimeEnvAgent) and a job's driver runs
    a plain `python ...`; all of them hold log files under `temp`. (`ray stop` would stop every
    Ray cluster on the machine, other tests' too.)"""
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{fd}").startswith(temp + "/") for fd in fds):
                os.kill(int(pid), signal.SIGKILL)
        except OSError:
            continue
    kill_cluster(temp)


@pytest.fixture(scope="module")
def ray_head():
    port, dash = free_port(), free_port()
    # Every node of this one-machine cluster gets its own agent port (two agents on Ray's default
    # port collide, and the Jobs API then finds no agent to run the job).
    temp = tempfile.mkdtemp(prefix="rz", dir="/tmp")  # short: Ray's socket paths have a length limit
    # The cluster's `python` is this environment's, as a cluster image's would be on its PATH.
    env = dict(os.environ, RAY_AUTH_MODE="disabled",
               PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    try:
        subprocess.run([RAY, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                        "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--include-dashboard=true",
                        "--num-cpus=1", f"--temp-dir={temp}", "--disable-usage-stats",
                        f"--dashboard-agent-listen-port={free_port()}"],
                       env=env, check=True, capture_output=True, timeout=120)
        subprocess.run([RAY, "start", f"--address=127.0.0.1:{port}", "--node-ip-address=127.0.0.1",
                        "--num-cpus=1", "--disable-usage-stats", f"--dashboard-agent-listen-port={free_port()}"],
                       env=env, check=True, capture_output=True, timeout=120)
        yield {"jobs": f"http://127.0.0.1:{dash}", "gcs": f"127.0.0.1:{port}"}
    finally:
        stop_cluster(temp)


def test_submit_follows_a_scan_to_completion(ray_head, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["submit", "--address", ray_head["jobs"], "--follow", "--",
                 "scan", str(SAMPLES_DIR), "--out", str(out), "--backend", "fake", "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0, printed[-3000:]
    assert "SUCCEEDED" in printed and "row(s) for" in printed  # the job's own log, streamed
    assert read_results(out).num_rows == len([p for p in SAMPLES_DIR.iterdir() if not p.name.startswith(".")])


def test_a_failing_job_reports_a_non_zero_status(ray_head, tmp_path, capsys):
    code = main(["submit", "--address", ray_head["jobs"], "--wait", "--",
                 "scan", str(tmp_path / "missing"), "--out", str(tmp_path / "out"), "--backend", "fake"])
    assert code == 1 and "FAILED" in capsys.readouterr().out
    assert main(["submit", "--address", ray_head["jobs"], "--", "scan", "--no-such-flag"]) == 2
    assert "not a valid zoomin command" in capsys.readouterr().err


def test_scan_joins_a_running_cluster_with_address(ray_head, tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, RAY_AUTH_MODE="disabled", PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "jobs.cli", "scan", str(SAMPLES_DIR), "--out", str(out),
                        "--backend", "fake", "--no-progress", "--address", ray_head["gcs"]],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "cluster 2 CPU" in r.stdout  # planned from the joined cluster's resources (head + worker)
    assert read_results(out).num_rows > 0
