"""`zoomin scan`: plan SRC, run the pipeline on a Ray cluster (a local one by default), summarise.

Local:    zoomin scan ./photos --out ./results
S3:       zoomin scan s3://archive/2026/ --out s3://results/2026-11-28/
Cluster:  zoomin scan s3://archive/ --out s3://results/run1 --address auto
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Optional

from . import runs
from .models import check_model
from .pipeline import JobConfig, build
from .plan import make_plan
from .sinks import Summary, make_parquet_sink, open_output, summarise, summary_record
from .sources import KIND_PARQUET, KIND_TAR, SourceError, plan_manifest, plan_source

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RayConfig:
    address: Optional[str] = None     # None: start a local cluster; "auto", "ray://host:10001", ...
    num_cpus: Optional[int] = None    # CPUs of the local cluster (default: all of this machine)
    actors: Optional[int] = None
    actor_cpus: Optional[float] = None
    gpus_per_actor: float = 0.0
    batch_size: Optional[int] = None
    split_stages: Optional[bool] = None   # None: split scan and zoom pools when actors use GPUs
    progress: bool = True


def _init_ray(rc: RayConfig):
    import ray
    import ray.data  # noqa: F401 - run_scan uses ray.data through the returned module
    if ray.is_initialized():
        return ray
    kwargs = dict(logging_level=logging.WARNING, log_to_driver=True)
    # A job submitted through the Jobs API finds its cluster in RAY_ADDRESS.
    address = rc.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=rc.num_cpus or os.cpu_count(), include_dashboard=False, **kwargs)
    return ray


def job_identity(src: Optional[str], manifest: Optional[str], cfg: JobConfig) -> dict:
    prompts = None
    if cfg.backend == "vlm":
        from zoomin_core.backends.vlm import load_prompts
        prompts = load_prompts(cfg.backend_options.get("prompts"))["version"]
    return {"src": f"manifest:{manifest}" if manifest else src, "backend": cfg.backend,
            "stages": cfg.examine.stages, "input_format": cfg.source.input_format,
            "image_column": cfg.source.image_column, "model": cfg.model or "default", "prompt_version": prompts}


def run_scan(src: Optional[str], out: str, cfg: JobConfig, rc: RayConfig = RayConfig(),
             overwrite: bool = False, rows_per_file: Optional[int] = None,
             manifest: Optional[str] = None, incremental: bool = False, rescan: bool = False) -> Summary:
    """Plan SRC (or the manifest), run what is not done yet, write, and return the summary.
    Raises on an unusable SRC / manifest / --out / --model / plan, before any image is read."""
    storage = cfg.source.storage
    t_plan = time.perf_counter()
    units = plan_manifest(manifest, cfg.source) if manifest else plan_source(src, cfg.source, exclude=out)
    if units.num_rows == 0:
        raise SourceError(f"{manifest or src}: no files found" if not manifest else f"{manifest}: empty manifest")
    check_model(cfg.model, storage, cfg.backend)
    output = open_output(out, storage)
    # Plan the resources before the run is recorded: a plan that cannot run leaves --out as it was.
    ray = _init_ray(rc)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = rc.progress
    node_cpus = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=None)
    plan = make_plan(ray.cluster_resources(), actors=rc.actors, actor_cpus=rc.actor_cpus,
                     gpus_per_actor=rc.gpus_per_actor, batch_size=rc.batch_size, split=rc.split_stages,
                     node_cpus=node_cpus)
    run = runs.begin(output, job_identity(src, manifest, cfg), overwrite, incremental, rescan)
    kinds = units.column("kind").to_pylist()
    uris = units.column("uri").to_pylist()
    shards = {u for u, k in zip(uris, kinds) if k in (KIND_TAR, KIND_PARQUET)}
    todo = runs.remaining(units, run.done)
    moved = runs.changed(units, run.done)
    if moved:  # not rescanned: a second row for the same uri would duplicate it
        run.notes.append(f"{len(moved)} object(s) changed size since their row was made (e.g. {moved[0]}); "
                         "their rows are kept - pass --rescan to redo them")
    for note in run.notes:
        print(f"zoomin: note: {note}", flush=True)
    if run.done:
        print(f"zoomin: {run.mode}: {len(run.done)} row(s) already in {output.uri}; "
              f"{todo.num_rows} of {units.num_rows} input(s) left to scan", flush=True)
    what = f"{len(uris)} object(s)" + (f" ({len(shards)} shard(s))" if shards else "")
    print(f"zoomin: scanning {what} from {manifest or src} (planned in {time.perf_counter() - t_plan:.1f}s) "
          f"with backend {cfg.backend} ({cfg.examine.stages}); {plan.describe()}", flush=True)
    t0 = time.perf_counter()
    sink = make_parquet_sink(output, rows_per_file, run.run_id)
    if todo.num_rows:
        # Write tasks take no CPU slot: they are light, and one waiting for a CPU held by a decode
        # task that waits for the writes to drain its output deadlocked a small cluster that had
        # just lost a node (seen in the three-node test).
        build(todo, cfg, plan).write_datasink(sink, ray_remote_args={"num_cpus": 0})
    del units, todo  # the plan's blocks now live in the object store
    summary = Summary(src=manifest or src or "", out=output.uri, inputs=len(uris),
                      seconds=time.perf_counter() - t0, plan=plan.describe(), backend=cfg.backend,
                      stages=cfg.examine.stages, mode=run.mode, new_rows=getattr(sink, "rows_written", 0),
                      notes=run.notes)
    summary = summarise(output, summary, uris, shards)
    runs.write_record(output, {**run.record, "state": "complete" if summary.complete else "incomplete",
                               "ended": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               **summary_record(summary)})
    return summary
