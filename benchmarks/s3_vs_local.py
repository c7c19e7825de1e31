"""Scanning from object storage versus local disk, and the driver's memory as a prefix grows.

    python benchmarks/s3_vs_local.py [--n 96] [--side 1024] [--small 10000,100000] [--decode actors,tasks]

1. Throughput: the same JPEGs scanned by `zoomin scan` (compact backend, local Ray cluster) from a
   local folder and from a loopback S3 server (moto, its own process), results written beside
   them; images/s of each whole run and the ratio, in one run, for each --decode (model actors
   that read and decode their own images, the CPU default; or decode tasks).
2. Driver memory: prefixes of many small objects (sizes from --small) are planned the way
   `zoomin scan` plans them - list the prefix (paged), build the plan table, hand its blocks to
   Ray Data - each in a fresh driver process; its peak RSS (VmHWM, reset after start-up) over
   the baseline after imports (Ray Data's included), `ray.init` and loading the S3 client, side
   by side. Only keys and sizes pass through the driver, so the growth is a few hundred bytes
   per key, whatever the images weigh.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))
from common import large_jpegs  # noqa: E402

from tests.s3_support import TEST_KEY, TEST_SECRET, make_bucket, moto_server, put_many, s3_client  # noqa: E402

DRIVER = r"""
import json, os, resource, sys, time
import ray
from jobs.pipeline import JobConfig, build
from jobs.plan import make_plan
from jobs.sources import SourceConfig, plan_source
from jobs.storage import StorageConfig

def status_mb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024

from jobs.storage import filesystem
import ray.data  # noqa: F401 - imported by every scan, whatever its size: a fixed cost (~60 MB)
ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level="ERROR")
filesystem(sys.argv[1], StorageConfig(endpoint_url=sys.argv[2]))  # s3fs/aiobotocore loaded: fixed cost
# Not ru_maxrss: on Linux it survives fork + exec, so this driver's would start at the
# benchmark process's own RSS (which grows with the keys it uploaded) and a 100k-key driver
# read 387 MB before planning anything. The kernel's peak counter (VmHWM) belongs to this
# process image alone: reset it here and read it after each step.
inherited = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
base = status_mb("VmRSS")
t0 = time.perf_counter()
cfg = JobConfig(source=SourceConfig(storage=StorageConfig(endpoint_url=sys.argv[2])))
units = plan_source(sys.argv[1], cfg.source)
n = units.num_rows
planned = status_mb("VmHWM")
ds = build(units, cfg, make_plan(ray.cluster_resources()))
del units
peak = status_mb("VmHWM")
print(json.dumps({"keys": n, "base_mb": base, "planned_mb": planned, "peak_mb": peak,
                  "inherited_maxrss_mb": inherited, "plan_s": time.perf_counter() - t0}))
"""


def scan_rate(src: str, out: str, endpoint: str, decode: str = "auto") -> float:
    from jobs.pipeline import JobConfig
    from jobs.scan import RayConfig, run_scan
    from jobs.sources import SourceConfig
    from jobs.storage import StorageConfig
    cfg = JobConfig(source=SourceConfig(storage=StorageConfig(endpoint_url=endpoint)))
    t0 = time.perf_counter()
    s = run_scan(src, out, cfg, RayConfig(progress=False, decode=decode), overwrite=True)
    assert s.complete and s.by_status.get("ok") == s.inputs, s.text()
    return s.inputs / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=96, help="images for the throughput comparison")
    ap.add_argument("--side", type=int, default=1024, help="long side of each JPEG")
    ap.add_argument("--small", default="10000,100000", help="prefix sizes for the driver-memory part")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--decode", default="actors,tasks", help="--decode values to compare (default actors,tasks)")
    a = ap.parse_args()
    env = dict(os.environ, RAY_AUTH_MODE="disabled", AWS_ACCESS_KEY_ID=TEST_KEY,
               AWS_SECRET_ACCESS_KEY=TEST_SECRET, AWS_DEFAULT_REGION="us-east-1",
               AWS_EC2_METADATA_DISABLED="true")
    os.environ.update(env)
    with moto_server() as endpoint, tempfile.TemporaryDirectory() as d:
        client = s3_client(endpoint)
        make_bucket(client, "bench")
        if not a.skip_throughput:
            import ray
            paths = large_jpegs(Path(d) / "imgs", a.n, a.side)
            put_many(client, "bench", {f"imgs/{p.name}": p.read_bytes() for p in paths})
            ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR")
            scan_rate(str(Path(d) / "imgs"), str(Path(d) / "warm"), endpoint)  # warm-up: imports, caches
            rates = {}
            for mode in a.decode.split(","):
                rates[mode] = (scan_rate(str(Path(d) / "imgs"), str(Path(d) / f"out-{mode}"), endpoint, mode),
                               scan_rate("s3://bench/imgs/", f"s3://bench/out-{mode}/", endpoint, mode))
            ray.shutdown()
            print(f"throughput, {a.n} JPEGs of {a.side} px, compact backend, {os.cpu_count()} CPUs, whole runs:")
            for mode, (local, remote) in rates.items():
                print(f"  --decode {mode:6s}  local disk -> local Parquet: {local:6.2f} images/s; loopback S3 -> "
                      f"S3 Parquet: {remote:6.2f} images/s (S3/local = {remote / local:.2f})")
        results = []
        for n in [int(x) for x in a.small.split(",") if x]:
            t0 = time.perf_counter()
            put_many(client, "bench", {f"small-{n}/{i:07d}.jpg": b"x" for i in range(n)}, threads=32)
            upload = time.perf_counter() - t0
            r = subprocess.run([sys.executable, "-c", DRIVER, f"s3://bench/small-{n}/", endpoint],
                               capture_output=True, text=True, cwd=ROOT, env=env)
            if r.returncode:
                sys.exit(r.stderr[-2000:])
            rec = json.loads(r.stdout.strip().splitlines()[-1])
            rec["upload_s"] = upload
            results.append(rec)
        print("driver memory while planning a prefix of small objects (fresh driver each):")
        for rec in results:
            grow = rec["peak_mb"] - rec["base_mb"]
            print(f"  {rec['keys']:>7} keys: peak RSS {rec['peak_mb']:7.1f} MB, {grow:6.1f} MB over the "
                  f"{rec['base_mb']:.1f} MB baseline (after listing: {rec['planned_mb']:.1f} MB; ru_maxrss "
                  f"before planning, inherited: {rec['inherited_maxrss_mb']:.1f} MB), planned in {rec['plan_s']:.1f}s")
        if len(results) >= 2:
            first, last = results[0], results[-1]
            print(f"  {last['keys'] // first['keys']}x the keys -> {last['peak_mb'] / first['peak_mb']:.2f}x the peak RSS; "
                  f"{(last['peak_mb'] - first['peak_mb']) * 2**20 / (last['keys'] - first['keys']):.0f} bytes per extra key")


if __name__ == "__main__":
    main()
