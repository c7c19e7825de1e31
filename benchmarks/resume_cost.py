"""The cost of a resume: a run killed (SIGKILL, driver and its local Ray cluster) at about half
its images and run again, against one uninterrupted run, same images, one script.

    python benchmarks/resume_cost.py [--n 160] [--side 1024] [--backend compact]

Prints the uninterrupted run's time, the killed run's time until the kill and how many rows it
had committed, the resumed run's time, and the ratios: resumed / uninterrupted (what finishing
costs) and (killed + resumed) / uninterrupted (what the interruption cost in all).
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))
from common import large_jpegs  # noqa: E402


def rows(out: Path) -> int:
    n = 0
    for p in out.glob("part-*.parquet"):
        try:
            n += pq.ParquetFile(p).metadata.num_rows
        except Exception:  # noqa: BLE001 - a file being renamed into place
            pass
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=160)
    ap.add_argument("--side", type=int, default=1024)
    ap.add_argument("--backend", default="compact")
    a = ap.parse_args()
    env = dict(os.environ, RAY_AUTH_MODE="disabled", PYTHONPATH=str(ROOT))
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "imgs"
        large_jpegs(src, a.n, a.side)

        def cmd(out):
            return [sys.executable, "-c", "import sys; from jobs.cli import main; sys.exit(main(sys.argv[1:]))",
                    "scan", str(src), "--out", str(out), "--backend", a.backend, "--no-progress",
                    "--rows-per-file", "8"]

        t0 = time.perf_counter()
        subprocess.run(cmd(Path(d) / "full"), cwd=ROOT, env=env, check=True, capture_output=True)
        full = time.perf_counter() - t0

        out = Path(d) / "killed"
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd(out), cwd=ROOT, env=env, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while rows(out) < a.n // 2 and p.poll() is None:
            time.sleep(0.05)
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        killed = time.perf_counter() - t0
        committed = rows(out)
        t0 = time.perf_counter()
        r = subprocess.run(cmd(out), cwd=ROOT, env=env, capture_output=True, text=True)
        resumed = time.perf_counter() - t0
        assert r.returncode == 0, r.stderr[-2000:]
        assert rows(out) == a.n, (rows(out), a.n)
    print(f"{a.n} JPEGs of {a.side} px, backend {a.backend}, {os.cpu_count()} CPUs, each run a fresh process + local Ray:")
    print(f"  uninterrupted run:            {full:6.1f} s")
    print(f"  killed run, until the kill:   {killed:6.1f} s  ({committed} of {a.n} rows committed)")
    print(f"  resumed run:                  {resumed:6.1f} s  ({a.n - committed} rows left)")
    print(f"  resumed / uninterrupted:      {resumed / full:6.2f}")
    print(f"  (killed + resumed) / uninterrupted: {(killed + resumed) / full:6.2f}")


if __name__ == "__main__":
    main()
