"""Throughput of `zoomin scan` (Ray) against a plain single-process loop, same model, same images.

    python benchmarks/pipeline_vs_loop.py [--n 480] [--side 384] [--repeat 3] [--plans default,decode-tasks]
                                          [--backend compact] [--json FILE]

The images are JPEGs cut from packaged real photos (benchmarks/common.py). Each repeat runs, one
after the other so that the machine's drift hits all alike: the plain loop
(`zoomin_core.stages.run_chain`, one process, batches of 8, torch with all cores' threads and
with one thread), then `zoomin scan IMAGES --out OUT` as a user runs it (a new process that
imports, starts its local Ray cluster, plans, scans and writes) under each plan:

  default       the job's own plan for this machine
  decode-tasks  --decode tasks (CPU tasks read and decode, the actors only run the model)
  one-actor     --actors 1 (one model actor with all the CPUs)
  two-actors    --actors 2

From the job's output the script reads when each Parquet file was committed and how many rows
it holds. The steady rate is the least-squares slope of rows committed over time after the
first tenth (read as `zoomin scan --estimate` reads it, `jobs.estimate.steady`): what a long
nightly job sees. Start-up is the time the job would have needed before its first row, had it run at that
rate from the start (command start to that point: imports, Ray's start, planning, actor start
and model load). Medians over the repeats are printed side by side with
their ratio to the loop with all threads, then where the CPU went during each plan's runs: CPU
milliseconds per image of the model actors, the decode tasks, the driver and Ray's own
processes (raylet, GCS, agents), against the machine's CPU milliseconds per image.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))
from common import large_jpegs  # noqa: E402

PLANS = {"default": [], "decode-tasks": ["--decode", "tasks"], "one-actor": ["--actors", "1"],
         "two-actors": ["--actors", "2"]}


def loop(paths: list[Path], backend_name: str, threads: int, batch: int = 8) -> float:
    import torch

    from zoomin_core import ImageInput, load_backend, run_chain
    torch.set_num_threads(threads)
    backend = load_backend(backend_name)
    t0 = time.perf_counter()
    for i in range(0, len(paths), batch):
        chunk = [ImageInput(str(p), p.read_bytes()) for p in paths[i:i + batch]]
        rows = run_chain(backend, chunk)
        assert all(r.status == "ok" for r in rows)
    return len(paths) / (time.perf_counter() - t0)


def commits(out: Path) -> list[tuple[float, int]]:
    """(commit time, cumulative rows) per result file of a local --out, in commit order."""
    import pyarrow.parquet as pq
    files = sorted((f.stat().st_mtime, pq.read_metadata(f).num_rows) for f in out.glob("*.parquet"))
    total, points = 0, []
    for t, rows in files:
        total += rows
        points.append((t, total))
    return points


GROUPS = ("model actors", "decode and write tasks", "driver", "Ray's own processes")


def _group(title: str, driver: int, pid: int) -> str:
    if pid == driver:
        return "driver"
    if "MapWorker" in title:
        return "model actors"
    if "read_and_prepare" in title or "cut_crops" in title or "Write" in title:
        return "decode and write tasks"
    return "Ray's own processes"


class CpuLedger:
    """CPU seconds of every process of the job, by role, sampled every 0.25 s while it runs (a
    process's last quarter second before it exits is lost). A Ray worker is counted under the
    role it was seen in most (between tasks its title is ray::IDLE)."""

    def __init__(self, driver: int):
        import psutil
        self.psutil, self.driver, self.cpu, self.titles = psutil, driver, {}, {}

    def sample(self) -> None:
        me = os.getpid()
        for p in self.psutil.process_iter(["cmdline"]):
            try:
                if p.pid == me:
                    continue
                title = " ".join(p.info["cmdline"] or [])
                if p.pid != self.driver and "ray" not in title:
                    continue
                t = p.cpu_times()
                self.cpu[p.pid] = t.user + t.system
                if "IDLE" not in title:
                    self.titles.setdefault(p.pid, []).append(title)
            except (self.psutil.NoSuchProcess, self.psutil.AccessDenied):
                pass

    def by_role(self) -> dict:
        out = dict.fromkeys(GROUPS, 0.0)
        for pid, cpu in self.cpu.items():
            seen = self.titles.get(pid) or ["ray::IDLE"]
            out[_group(max(set(seen), key=seen.count), self.driver, pid)] += cpu
        return out


def scan_cli(src: Path, out: Path, backend: str, flags: list[str]) -> dict:
    """One `zoomin scan` as a user runs it, in its own process; its rates from the commit times."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    cmd = [sys.executable, "-m", "jobs.cli", "scan", str(src), "--out", str(out), "--overwrite",
           "--backend", backend, "--no-progress", *flags]
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ledger = CpuLedger(proc.pid)
    while proc.poll() is None:
        ledger.sample()
        time.sleep(0.25)
    stdout, stderr = proc.communicate()
    done = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
    wall = time.time() - t0
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")
    plan = next((ln.split("; ", 1)[-1] for ln in done.stdout.splitlines() if ln.startswith("zoomin: scanning")), "?")
    points = commits(out)
    # the estimate's own reading of a steady rate, from the commit times since the command started
    from jobs.estimate import steady
    rate, startup, measured = steady([(t - t0, rows) for t, rows in points], wall)
    if not measured:
        raise SystemExit("too few result files to time the steady rate: use more images (--n)")
    # CPU per image by role, against the machine's CPU seconds per image over the whole run
    cpu = {f"cpu_ms_per_image/{k}": v / points[-1][1] * 1000 for k, v in ledger.by_role().items()}
    cpu["cpu_ms_per_image/machine"] = wall * (os.cpu_count() or 1) / points[-1][1] * 1000
    return {"steady": rate, "startup_s": startup, "whole": points[-1][1] / wall, "plan": plan, **cpu}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=480, help="number of images (default 480)")
    ap.add_argument("--side", type=int, default=384, help="long side of each JPEG (default 384)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds of loop and plans, medians printed (default 3)")
    ap.add_argument("--plans", default="default,decode-tasks", help=f"plans to run, of {','.join(PLANS)}")
    ap.add_argument("--backend", default="compact")
    ap.add_argument("--json", default=None, help="also write the figures here")
    a = ap.parse_args()
    plans = a.plans.split(",")
    if any(p not in PLANS for p in plans):
        sys.exit(f"unknown plan in {a.plans} (known: {', '.join(PLANS)})")
    cpus = os.cpu_count() or 1
    runs: dict[str, list] = {f"loop, {cpus} threads": [], "loop, 1 thread": [], **{p: [] for p in plans}}
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "images"
        paths = large_jpegs(src, a.n, a.side)
        loop(paths[:16], a.backend, cpus)   # warm-up: imports, allocator
        for r in range(a.repeat):
            runs[f"loop, {cpus} threads"].append({"whole": loop(paths, a.backend, cpus)})
            runs["loop, 1 thread"].append({"whole": loop(paths, a.backend, 1)})
            for p in plans:
                runs[p].append(scan_cli(src, Path(d) / f"out-{p}", a.backend, PLANS[p]))
            print(f"round {r + 1}/{a.repeat}: " + ", ".join(
                f"{k} {v[-1].get('steady', v[-1]['whole']):.1f}/s" for k, v in runs.items()), flush=True)
    base = statistics.median(x["whole"] for x in runs[f"loop, {cpus} threads"])
    figures: dict = {"n": a.n, "side": a.side, "cpus": cpus, "backend": a.backend, "repeat": a.repeat}
    print(f"\n{a.n} JPEGs of real photos, long side {a.side} px, backend {a.backend}, {cpus} CPUs, "
          f"medians of {a.repeat}:")
    print(f"  {'':22s} {'steady img/s':>13s} {'vs loop':>8s} {'whole run':>10s} {'vs loop':>8s} {'start-up':>9s}")
    for k, v in runs.items():
        med = {m: statistics.median(x[m] for x in v) for m in v[0] if m != "plan"}
        figures[k] = {**med, "plan": v[0].get("plan")}
        if "steady" in med:
            print(f"  {k:22s} {med['steady']:13.1f} {med['steady'] / base:7.2f}x {med['whole']:10.1f} "
                  f"{med['whole'] / base:7.2f}x {med['startup_s']:8.1f}s   ({v[0]['plan']})")
        else:
            print(f"  {k:22s} {med['whole']:13.1f} {med['whole'] / base:7.2f}x")
    print("\n  CPU milliseconds per image over the whole run, by process role (the machine has "
          f"{cpus} CPUs: 'machine' is their time per image):")
    for k in plans:
        cpu = {m.split("/", 1)[1]: v for m, v in figures[k].items() if m.startswith("cpu_ms_per_image/")}
        print(f"  {k:22s} " + ", ".join(f"{role} {v:.1f}" for role, v in cpu.items()))
    if a.json:
        Path(a.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
