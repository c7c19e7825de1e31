"""Throughput of the Ray pipeline versus a plain single-process loop, same model, same images.

    python benchmarks/pipeline_vs_loop.py [--n 48] [--side 1536] [--backend compact]

Prints images/s for: the plain loop (`zoomin_core.stages.run_chain`, one process, torch's
default threads and with 1 thread), and the full `zoomin scan` pipeline on a local Ray cluster
with 1 and with 2 model actors; then the ratios. For the pipeline: the whole run (actor start-up,
model load and Parquet write included, `ray.init` not), and the marginal rate - the cost of the
second half of the images, from a run over half of them and one over all of them - which is what
a long nightly job sees.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import large_jpegs  # noqa: E402


def loop(paths: list[Path], backend_name: str, threads: int, batch: int) -> float:
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


def pipeline(src: Path, out: Path, backend_name: str, actors: int, actor_cpus: float | None) -> float:
    """Seconds for one whole `zoomin scan` run."""
    from jobs.pipeline import JobConfig
    from jobs.scan import RayConfig, run_scan
    t0 = time.perf_counter()
    s = run_scan(str(src), str(out), JobConfig(backend=backend_name),
                 RayConfig(actors=actors, actor_cpus=actor_cpus, progress=False), overwrite=True)
    assert s.complete and s.by_status.get("ok") == s.inputs, s.text()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=48, help="number of images")
    ap.add_argument("--side", type=int, default=1536, help="long side of each JPEG")
    ap.add_argument("--backend", default="compact")
    a = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    cpus = os.cpu_count() or 1
    import ray
    from ray.data import DataContext
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "images"
        paths = large_jpegs(src, a.n, a.side)
        loop(paths[:4], a.backend, cpus, 8)  # warm-up: imports, allocator
        results = {
            f"loop, 1 process, {cpus} threads": loop(paths, a.backend, cpus, 8),
            "loop, 1 process, 1 thread": loop(paths, a.backend, 1, 8),
        }
        half = Path(d) / "half"
        half.mkdir()
        for p in paths[: a.n // 2]:
            (half / p.name).write_bytes(p.read_bytes())
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        DataContext.get_current().enable_progress_bars = False
        fixed = {}
        # One actor: the job's default plan (on 2 CPUs: 1.5 CPUs, 2 torch threads). Two actors
        # on two cores must leave room for the decode tasks: 0.75 CPU (1 thread) each.
        for actors, actor_cpus in ((1, None), (2, 0.75 if cpus <= 2 else 1.0)):
            pipeline(half, Path(d) / "warm", a.backend, actors, actor_cpus)  # first start pays imports
            t_half = pipeline(half, Path(d) / "out", a.backend, actors, actor_cpus)
            t_full = pipeline(src, Path(d) / "out", a.backend, actors, actor_cpus)
            name = f"ray pipeline, {actors} actor(s)"
            results[name + ", whole run"] = a.n / t_full
            # The second half of the images cost t_full - t_half: throughput without the fixed
            # start-up (actor launch, model load, write commit), which a long job pays once.
            results[name + ", marginal"] = (a.n - a.n // 2) / (t_full - t_half)
            fixed[name] = t_half - (a.n // 2) / results[name + ", marginal"]
        ray.shutdown()
    print(f"{a.n} JPEGs, long side {a.side} px, backend {a.backend}, {cpus} CPUs:")
    for k, v in results.items():
        print(f"  {k:48s} {v:7.2f} images/s")
    base = results[f"loop, 1 process, {cpus} threads"]
    for k in [k for k in results if k.startswith("ray")]:
        print(f"  ratio {k} / loop: {results[k] / base:.2f}")
    for k, v in fixed.items():
        print(f"  fixed start-up cost of {k}: {v:.1f} s")


if __name__ == "__main__":
    main()
