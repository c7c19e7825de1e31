"""The GPU path of the scan job, on a machine with a CUDA GPU (no Ray needed there).

    python benchmarks/gpu_check.py [--n 64] [--side 1536] [--out DIR]

Runs what the job's Ray workers run, in one process: a plan for a GPU cluster
(`--gpus-per-actor 1`), the read/decode task (`read_and_prepare`) on CPU, and the model actor
(`Examiner`) placed on the GPU by that plan, then the same actor on CPU. Checks the two give the
same rows (verdicts equal, scores within 1e-3) and prints images/s of the model stage on each,
and of the scan network alone on a batch of views. Then the same GPU plan with the `vlm` backend
on a tiny, randomly initialised Qwen2.5-VL built offline (tests/tiny_vlm.py): the actor must
load it on the GPU in bfloat16 and give every image a row (random weights: `unparseable`).
Writes the figures to DIR/gpu_check.json.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--side", type=int, default=1536)
    ap.add_argument("--out", default=".")
    a = ap.parse_args()

    import pyarrow as pa
    import torch

    from jobs.pipeline import Examiner, JobConfig, read_and_prepare
    from jobs.plan import make_plan
    from jobs.sources import plan_source

    assert torch.cuda.is_available(), "no CUDA GPU visible to torch"
    info = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cpus": os.cpu_count()}
    gpu_plan = make_plan({"CPU": float(os.cpu_count()), "GPU": 1.0}, gpus_per_actor=1)
    cpu_plan = make_plan({"CPU": float(os.cpu_count())}, actor_cpus=max(1.0, os.cpu_count() - 1.0), actors=1)
    assert gpu_plan.device == "cuda" and gpu_plan.actor_gpus == 1 and cpu_plan.device == "cpu"
    info["gpu_plan"], info["cpu_plan"] = gpu_plan.describe(), cpu_plan.describe()

    cfg = JobConfig()
    with tempfile.TemporaryDirectory() as d:
        large_jpegs(Path(d), a.n, a.side)
        units = plan_source(d)
        t0 = time.perf_counter()
        prepared = pa.concat_tables(list(read_and_prepare(units, cfg)))
        info["decode_images_per_s_1proc"] = a.n / (time.perf_counter() - t0)

    def run(plan, warm: bool):
        ex = Examiner(cfg, plan)
        assert str(ex.backend.device).startswith(plan.device)
        if warm:
            ex(prepared.slice(0, plan.batch_size))
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        outs = [ex(prepared.slice(i, plan.batch_size)) for i in range(0, prepared.num_rows, plan.batch_size)]
        if plan.device == "cuda":
            torch.cuda.synchronize()
        return pa.concat_tables(outs), a.n / (time.perf_counter() - t0), ex

    gpu_rows, gpu_rate, gpu_ex = run(gpu_plan, warm=True)
    cpu_rows, cpu_rate, cpu_ex = run(cpu_plan, warm=True)
    g, c = gpu_rows.to_pylist(), cpu_rows.to_pylist()
    assert [r["uri"] for r in g] == [r["uri"] for r in c]
    assert all(r["status"] == "ok" for r in g), [r["error"] for r in g if r["status"] != "ok"]
    diffs = [abs(x["score"] - y["score"]) for x, y in zip(g, c)]
    same_verdict = sum(x["verdict"] == y["verdict"] for x, y in zip(g, c))
    info.update(model_stage_images_per_s_gpu=gpu_rate, model_stage_images_per_s_cpu=cpu_rate,
                gpu_over_cpu=gpu_rate / cpu_rate, max_score_diff=max(diffs), same_verdicts=same_verdict,
                n=a.n, side=a.side, scan_s_gpu=sum(r["scan_s"] for r in g) / a.n,
                zoom_s_gpu=sum(r["zoom_s"] for r in g) / a.n, scan_s_cpu=sum(r["scan_s"] for r in c) / a.n,
                zoom_s_cpu=sum(r["zoom_s"] for r in c) / a.n)

    # The scan network alone on one batch of views, as a GPU actor with a large batch sees it.
    from jobs.pipeline import _arrow_to_prepared
    views = [p.view for p in _arrow_to_prepared(prepared)]
    for name, ex in (("gpu", gpu_ex), ("cpu", cpu_ex)):
        ex.backend.scan_logits(views)
        if name == "gpu":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(3):
            ex.backend.scan_logits(views)
        if name == "gpu":
            torch.cuda.synchronize()
        info[f"scan_net_views_per_s_{name}"] = 3 * len(views) / (time.perf_counter() - t0)
    info["peak_gpu_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20

    # The vlm backend behind the same GPU plan: the plan's device reaches the backend, which then
    # picks bfloat16, and images whose answers cannot be parsed still come back as rows.
    from tests.tiny_vlm import build_qwen
    with tempfile.TemporaryDirectory() as d:
        vcfg = JobConfig(backend="vlm", model=str(build_qwen(Path(d) / "tiny-qwen2_5_vl")),
                         backend_options={"max_new_tokens": 8})
        ex = Examiner(vcfg, gpu_plan)
        assert str(ex.backend.device).startswith("cuda") and ex.backend.dtype == torch.bfloat16
        k = min(8, prepared.num_rows)
        t0 = time.perf_counter()
        rows = ex(prepared.slice(0, k)).to_pylist()
        info["vlm_gpu_s_per_image_8_tokens"] = (time.perf_counter() - t0) / k
        info["vlm_gpu_statuses"] = sorted({r["status"] for r in rows})
        assert len(rows) == k and {r["status"] for r in rows} == {"unparseable"}, rows[:1]
    print(json.dumps(info, indent=2))
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "gpu_check.json").write_text(json.dumps(info, indent=2))
    assert max(diffs) < 1e-3 and same_verdict >= a.n - 1, "GPU and CPU rows disagree"


if __name__ == "__main__":
    main()
