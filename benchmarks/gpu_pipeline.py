"""The scan job through Ray on a GPU machine: one model pool against split stages.

    python benchmarks/gpu_pipeline.py [--n 256] [--side 1536] [--plans cpu,gpu1-split] [--json FILE] [--fake-gpu]

On a local Ray cluster with all of this machine's CPUs and GPUs, runs `zoomin scan` (compact
backend) over the same N JPEGs under four plans:
  - CPU only (`--gpus-per-actor 0`, the plan a cluster without GPUs gets);
  - `--gpus-per-actor 1 --split-stages off`: scan and zoom in one actor, crops cut inside it;
  - `--gpus-per-actor 1 --split-stages on` (the default with GPUs): decode tasks -> scan actors
    -> CPU crop tasks -> zoom actors;
  - `--gpus-per-actor 0.5 --split-stages on`: two actor slots sharing the GPU.
(--plans picks some: cpu, gpu1, gpu1-split, gpu05-split; the CPU plan is always run, as the
baseline.) Each plan is warmed up on a few images first (imports, Ray's workers). For each: images/s of the whole run, and the marginal rate (one run over half of the images, one
over all; the second half cost the difference), which is what a long nightly job sees. Every
plan must give every image an `ok` row, and the same verdicts as the CPU plan.

--fake-gpu: the cluster claims one GPU that is not there and the model stays on CPU. A dry run of
this script on a machine without a GPU, not a measurement.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))
from common import large_jpegs  # noqa: E402

PLANS = {  # name: (gpus per actor, split stages)
    "cpu": (0.0, False),
    "gpu1": (1.0, False),         # one pool: scan and zoom in one actor
    "gpu1-split": (1.0, True),    # the default with GPUs
    "gpu05-split": (0.5, True),   # two actor slots sharing the GPU
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=256, help="number of images")
    ap.add_argument("--side", type=int, default=1536, help="long side of each JPEG")
    ap.add_argument("--plans", default=",".join(PLANS), help=f"plans to run (default all: {','.join(PLANS)})")
    ap.add_argument("--json", default=None, help="also write the figures here")
    ap.add_argument("--fake-gpu", action="store_true", help="dry run without a GPU (model on CPU)")
    a = ap.parse_args()
    plans = ["cpu"] + [p for p in a.plans.split(",") if p != "cpu"]
    unknown = [p for p in plans if p not in PLANS]
    if unknown:
        sys.exit(f"gpu_pipeline: unknown plan(s) {', '.join(unknown)} (known: {', '.join(PLANS)})")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    import torch
    from ray.data import DataContext

    from jobs.pipeline import JobConfig
    from jobs.plan import PlanError
    from jobs.scan import RayConfig, run_scan
    from jobs.sinks import read_results

    gpus = 1 if a.fake_gpu else torch.cuda.device_count()
    assert gpus >= 1, "no CUDA GPU visible to torch (use --fake-gpu for a dry run)"
    cpus = os.cpu_count() or 1
    cfg = JobConfig(backend_options={"device": "cpu"} if a.fake_gpu else {})
    figures: dict = {"n": a.n, "side": a.side, "cpus": cpus, "gpus": gpus, "fake_gpu": a.fake_gpu,
                     "gpu": "none" if a.fake_gpu else torch.cuda.get_device_name(0)}
    ray.init(address="local", num_cpus=cpus, num_gpus=gpus, include_dashboard=False,
             logging_level="ERROR", log_to_driver=False)
    DataContext.get_current().enable_progress_bars = False
    verdicts = {}
    with tempfile.TemporaryDirectory() as d:
        src, half, warm = Path(d) / "images", Path(d) / "half", Path(d) / "warm-images"
        t0 = time.perf_counter()
        paths = large_jpegs(src, a.n, a.side)
        print(f"{a.n} JPEGs of {a.side} px made in {time.perf_counter() - t0:.0f} s", flush=True)
        half.mkdir()
        warm.mkdir()
        for p in paths[: a.n // 2]:
            (half / p.name).symlink_to(p)
        for p in paths[: min(32, a.n // 2)]:
            (warm / p.name).symlink_to(p)

        def scan(folder: Path, out: str, gpus_per_actor: float, split: bool) -> float:
            rc = RayConfig(gpus_per_actor=gpus_per_actor, split_stages=split, progress=False)
            t0 = time.perf_counter()
            s = run_scan(str(folder), str(Path(d) / out), cfg, rc, overwrite=True)
            assert s.complete and s.by_status.get("ok") == s.inputs, s.text()
            return time.perf_counter() - t0

        for name in plans:
            gpa, split = PLANS[name]
            try:  # the first run of a plan pays imports and start-up
                scan(warm, "warm", gpa, split)
            except PlanError as e:  # e.g. two GPU slots on a machine with too few CPUs
                figures[name] = {"refused": str(e)}
                print(f"  {name:18s} refused by the planner: {e}", flush=True)
                continue
            t_half = scan(half, "out", gpa, split)
            t_all = scan(src, "out", gpa, split)
            rows = read_results(str(Path(d) / "out"), ["uri", "verdict", "score", "initial_score", "boxes"]).to_pylist()
            verdicts[name] = {r["uri"].rsplit("/", 1)[-1]: (r["verdict"], r["score"], r["initial_score"],
                                                            [(b["x1"], b["y1"]) for b in r["boxes"]]) for r in rows}
            # Too few images for the second half to outlast the timing noise: no marginal rate.
            marginal = (a.n - a.n // 2) / (t_all - t_half) if t_all > 1.05 * t_half else None
            figures[name] = {"whole_images_per_s": a.n / t_all, "marginal_images_per_s": marginal,
                             "seconds": t_all}
            print(f"  {name:18s} whole {a.n / t_all:7.1f} images/s, marginal "
                  f"{'n/a' if marginal is None else f'{marginal:.1f}'} images/s", flush=True)
    ray.shutdown()
    base, cpu_rate = verdicts["cpu"], figures["cpu"]["marginal_images_per_s"]
    for name, v in verdicts.items():
        assert v.keys() == base.keys(), f"{name}: other images than the CPU plan"
        f = figures[name]
        f["same_verdicts_as_cpu"] = sum(v[k][0] == base[k][0] for k in base)
        f["max_score_diff_vs_cpu"] = max(abs(v[k][1] - base[k][1]) for k in base)
        # The first look has no crop to choose; a final score can move more where a box moved.
        f["max_first_look_diff_vs_cpu"] = max(abs(v[k][2] - base[k][2]) for k in base)
        f["images_with_other_boxes"] = sum(v[k][3] != base[k][3] for k in base)
        if name != "cpu" and f["marginal_images_per_s"] and cpu_rate:
            f["marginal_over_cpu"] = f["marginal_images_per_s"] / cpu_rate
    print(json.dumps(figures, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(figures, indent=2))
    assert all(figures[k]["same_verdicts_as_cpu"] >= a.n - 1 for k in verdicts), "plans disagree"


if __name__ == "__main__":
    main()
