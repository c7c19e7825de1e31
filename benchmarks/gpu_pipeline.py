"""The scan job through Ray on a GPU machine: each plan as a share of the node's decode limit.

    python benchmarks/gpu_pipeline.py [--n 256] [--side 1536] [--plans cpu,gpu1-split] [--json FILE] [--fake-gpu]

On a local Ray cluster with all of this machine's CPUs and GPUs, over the same N JPEGs:
  - decode: the node's limit for the tier that sees every image: read, decode the scan view and
    cut two crops at full resolution (`zoomin_core.stages.crop_stage`), one task per CPU, no
    model. Every other plan reads as a share of it;
  - cpu: `--gpus-per-actor 0`, the plan a cluster without GPUs gets (always run: the verdicts of
    every other plan are compared with its own);
  - gpu1: `--gpus-per-actor 1 --split-stages off`: scan and zoom in one actor, crops cut inside it;
  - gpu1-split: `--gpus-per-actor 1` (the default with GPUs): decode tasks -> scan actors -> CPU
    crop tasks -> zoom actors;
  - gpu05-split: `--gpus-per-actor 0.5`: two actor slots sharing the GPU;
  - gpu1-decoding: `--gpus-per-actor 1 --split-stages off --decode actors`: one actor reads,
    decodes, scans and zooms (the CPU plans' way, on a GPU).
(--plans picks some; decode and cpu always run.) Each model plan is warmed up on a few images
(imports, Ray's workers), then timed twice: once as `zoomin scan --estimate` times a sample (all
N images through the same pipeline, rows back to the driver: the steady rate, start-up, and each
stage's busy and CPU milliseconds per image, from Ray Data's statistics, to tell which stage holds
the plan back), and once as a whole `zoomin scan` (images/s with the Parquet write, and the
verdicts). While it runs, the GPU's utilisation is sampled (nvidia-smi, every 0.2 s). Every plan
must give every image an `ok` row, and the same verdicts as the CPU plan.

--fake-gpu: the cluster claims one GPU that is not there and the model stays on CPU. A dry run of
this script on a machine without a GPU, not a measurement.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))
from common import large_jpegs  # noqa: E402

PLANS = {  # name: (gpus per actor, split stages, --decode)
    "cpu": (0.0, False, "auto"),
    "gpu1": (1.0, False, "tasks"),         # one pool: scan and zoom in one actor
    "gpu1-split": (1.0, True, "auto"),     # the default with GPUs
    "gpu05-split": (0.5, True, "auto"),    # two actor slots sharing the GPU
    "gpu1-decoding": (1.0, False, "actors"),   # the actor reads and decodes too
}


class GpuSampler:
    """Mean GPU utilisation (%) while in the `with` block, from nvidia-smi (None without one)."""

    def __init__(self, every: float = 0.2):
        self.every, self.samples, self._stop = every, [], threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=5).stdout.split()
                self.samples.append(float(out[0]))
            except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
                return
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mean(self):
        return sum(self.samples) / len(self.samples) if self.samples else None


def _decode_and_crop(batch, cfg):
    """Decode task of the `decode` plan: the job's own read and decode, then two crops per image
    (a centre and a corner region, each a quarter of the sides, the way the zoom stage cuts them)."""
    import pyarrow as pa

    from jobs.pipeline import _arrow_to_prepared, read_and_prepare
    from zoomin_core.records import STATUS_OK, Box
    from zoomin_core.stages import Scanned, crop_stage
    uris, status = [], []
    for block in read_and_prepare(batch, cfg):
        items = []
        for p in _arrow_to_prepared(block):
            if p.status != STATUS_OK:
                items.append(p)
                continue
            w, h = p.width, p.height
            boxes = [Box(w * 3 / 8, h * 3 / 8, w * 5 / 8, h * 5 / 8, 0.5), Box(0, 0, w / 4, h / 4, 0.5)]
            items.append(Scanned(p, None, boxes, "decode-only", None, 0.0))
        for it in crop_stage([it for it in items if isinstance(it, Scanned)], cfg.examine):
            assert isinstance(it, Scanned) and len(it.crops) == 2
        uris += [it.uri if not isinstance(it, Scanned) else it.prepared.uri for it in items]
        status += [getattr(it, "status", "ok") for it in items]
    return pa.table({"uri": uris, "status": status})


def decode_limit(units, cfg, cpus: int) -> dict:
    """images/s of reading, decoding and cropping on every CPU of the node, no model."""
    import ray.data

    from jobs.estimate import steady
    step = max(1, -(-units.num_rows // (4 * cpus)))    # four tasks per CPU
    ds = ray.data.from_blocks([units.slice(i, step) for i in range(0, units.num_rows, step)])
    ds = ds.map_batches(_decode_and_crop, fn_kwargs={"cfg": cfg}, batch_format="pyarrow", batch_size=step,
                        num_cpus=1)
    t0, total, arrivals = time.perf_counter(), 0, []
    for b in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        total += b.num_rows
        arrivals.append((time.perf_counter() - t0, total))
    rate, startup, _ = steady(arrivals, time.perf_counter() - t0)
    assert total == units.num_rows
    return {"steady_images_per_s": rate, "startup_s": startup, "whole_images_per_s": total / (time.perf_counter() - t0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=256, help="number of images")
    ap.add_argument("--side", type=int, default=1536, help="long side of each JPEG")
    ap.add_argument("--plans", default=",".join(PLANS), help=f"plans to run (default all: {','.join(PLANS)})")
    ap.add_argument("--json", default=None, help="also write the figures here")
    ap.add_argument("--fake-gpu", action="store_true", help="dry run without a GPU (model on CPU)")
    a = ap.parse_args()
    plans = ["cpu"] + [p for p in a.plans.split(",") if p not in ("cpu", "decode")]
    unknown = [p for p in plans if p not in PLANS]
    if unknown:
        sys.exit(f"gpu_pipeline: unknown plan(s) {', '.join(unknown)} (known: decode, {', '.join(PLANS)})")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    import torch
    from ray.data import DataContext

    from jobs.estimate import time_sample
    from jobs.pipeline import JobConfig
    from jobs.plan import PlanError, make_plan
    from jobs.scan import RayConfig, run_scan
    from jobs.sinks import read_results
    from jobs.sources import plan_source

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
        src, warm = Path(d) / "images", Path(d) / "warm-images"
        t0 = time.perf_counter()
        paths = large_jpegs(src, a.n, a.side)
        print(f"{a.n} JPEGs of {a.side} px made in {time.perf_counter() - t0:.0f} s", flush=True)
        warm.mkdir()
        for p in paths[: min(32, a.n // 2)]:
            (warm / p.name).symlink_to(p)
        units = plan_source(str(src), cfg.source)
        decode_limit(plan_source(str(warm), cfg.source), cfg, cpus)   # warm-up: the workers' imports
        limit = figures["decode"] = decode_limit(units, cfg, cpus)
        print(f"  {'decode':12s} steady {limit['steady_images_per_s']:7.1f} images/s: the node's limit "
              f"(read, decode the view, cut two crops; {cpus} CPUs, no model)", flush=True)

        for name in plans:
            gpa, split, decode = PLANS[name]
            rc = RayConfig(gpus_per_actor=gpa, split_stages=split, decode=decode, progress=False)
            try:  # the first run of a plan pays imports and start-up
                run_scan(str(warm), str(Path(d) / "warm"), cfg, rc, overwrite=True)
            except PlanError as e:  # e.g. two GPU slots on a machine with too few CPUs
                figures[name] = {"refused": str(e)}
                print(f"  {name:12s} refused by the planner: {e}", flush=True)
                continue
            plan = make_plan(ray.cluster_resources(), gpus_per_actor=gpa, split=split, decode=decode)
            with GpuSampler() as gpu:
                timing = time_sample(units, cfg, plan)
            t1 = time.perf_counter()
            s = run_scan(str(src), str(Path(d) / "out"), cfg, rc, overwrite=True)
            whole = a.n / (time.perf_counter() - t1)
            assert s.complete and s.by_status.get("ok") == s.inputs, s.text()
            rows = read_results(str(Path(d) / "out"), ["uri", "verdict", "score", "initial_score", "boxes"]).to_pylist()
            verdicts[name] = {r["uri"].rsplit("/", 1)[-1]: (r["verdict"], r["score"], r["initial_score"],
                                                            [(b["x1"], b["y1"]) for b in r["boxes"]]) for r in rows}
            figures[name] = {"plan": plan.describe(), "steady_images_per_s": timing.rate, "startup_s": timing.startup_s,
                             "whole_images_per_s": whole, "share_of_decode_limit": timing.rate / limit["steady_images_per_s"],
                             "gpu_utilisation_pct": gpu.mean,
                             "stages_ms_per_image": {k: {"busy": b / timing.images * 1000, "cpu": c / timing.images * 1000}
                                                     for k, (b, c) in timing.stages.items()}}
            util = "n/a" if gpu.mean is None else f"{gpu.mean:.0f}%"
            print(f"  {name:12s} steady {timing.rate:7.1f} images/s ({timing.rate / limit['steady_images_per_s']:.0%} of "
                  f"the limit), start-up {timing.startup_s:.1f} s, whole run with writes {whole:.1f} images/s, GPU busy "
                  f"{util}\n  {'':12s} {plan.describe()}\n  {'':12s} per image: {timing.stage_text()}", flush=True)
    ray.shutdown()
    base, cpu_rate = verdicts["cpu"], figures["cpu"]["steady_images_per_s"]
    for name, v in verdicts.items():
        assert v.keys() == base.keys(), f"{name}: other images than the CPU plan"
        f = figures[name]
        f["same_verdicts_as_cpu"] = sum(v[k][0] == base[k][0] for k in base)
        f["max_score_diff_vs_cpu"] = max(abs(v[k][1] - base[k][1]) for k in base)
        # The first look has no crop to choose; a final score can move more where a box moved.
        f["max_first_look_diff_vs_cpu"] = max(abs(v[k][2] - base[k][2]) for k in base)
        f["images_with_other_boxes"] = sum(v[k][3] != base[k][3] for k in base)
        if name != "cpu":
            f["steady_over_cpu"] = f["steady_images_per_s"] / cpu_rate
    print(json.dumps(figures, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(figures, indent=2))
    assert all(figures[k]["same_verdicts_as_cpu"] >= a.n - 1 for k in verdicts), "plans disagree"


if __name__ == "__main__":
    main()
