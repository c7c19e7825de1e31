"""`zoomin scan`: plan SRC, run the pipeline on a Ray cluster (a local one by default), summarise.

Local:    zoomin scan ./photos --out ./results
S3:       zoomin scan s3://archive/2026/ --out s3://results/2026-11-28/
Cluster:  zoomin scan s3://archive/ --out s3://results/run1 --address auto
"""
from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import dataclass
from typing import Optional

from .models import check_model
from .pipeline import JobConfig, build
from .plan import make_plan
from .sinks import Summary, make_parquet_sink, prepare_output, summarise
from .sources import KIND_FILE, SourceError, plan_manifest, plan_source

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
    if rc.address:
        ray.init(address=rc.address, **kwargs)
    else:
        ray.init(num_cpus=rc.num_cpus or os.cpu_count(), include_dashboard=False, **kwargs)
    return ray


def run_scan(src: Optional[str], out: str, cfg: JobConfig, rc: RayConfig = RayConfig(),
             overwrite: bool = False, rows_per_file: Optional[int] = None,
             manifest: Optional[str] = None) -> Summary:
    """Plan SRC (or the manifest), run, write, and return the summary.
    Raises on an unusable SRC / manifest / --out / --model / plan, before any image is read."""
    storage = cfg.source.storage
    t_plan = time.perf_counter()
    units = plan_manifest(manifest, cfg.source) if manifest else plan_source(src, cfg.source, exclude=out)
    if units.num_rows == 0:
        raise SourceError(f"{manifest or src}: no files found" if not manifest else f"{manifest}: empty manifest")
    check_model(cfg.model, storage, cfg.backend)
    output = prepare_output(out, overwrite, storage)
    kinds = units.column("kind").to_pylist()
    uris = units.column("uri").to_pylist()
    shards = {u for u, k in zip(uris, kinds) if k != KIND_FILE}
    ray = _init_ray(rc)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = rc.progress
    plan = make_plan(ray.cluster_resources(), actors=rc.actors, actor_cpus=rc.actor_cpus,
                     gpus_per_actor=rc.gpus_per_actor, batch_size=rc.batch_size, split=rc.split_stages)
    what = f"{len(uris)} object(s)" + (f" ({len(shards)} shard(s))" if shards else "")
    print(f"zoomin: scanning {what} from {manifest or src} (planned in {time.perf_counter() - t_plan:.1f}s) "
          f"with backend {cfg.backend} ({cfg.examine.stages}); {plan.describe()}", flush=True)
    t0 = time.perf_counter()
    ds = build(units, cfg, plan)
    del units  # the plan's blocks now live in the object store
    ds.write_datasink(make_parquet_sink(output, rows_per_file, uuid.uuid4().hex[:8]))
    summary = Summary(src=manifest or src or "", out=output.uri, inputs=len(uris),
                      seconds=time.perf_counter() - t0, plan=plan.describe(), backend=cfg.backend,
                      stages=cfg.examine.stages)
    return summarise(output, summary, uris, shards)
