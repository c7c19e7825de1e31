"""`zoomin scan`: run the pipeline on a Ray cluster (a local one by default) and summarise.

Local:    zoomin scan ./photos --out ./results
Cluster:  zoomin scan /shared/photos --out /shared/results --address auto
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Optional

from .pipeline import JobConfig, build
from .plan import make_plan
from .sinks import Summary, prepare_output, summarise
from .sources import SourceError, list_source

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RayConfig:
    address: Optional[str] = None     # None: start a local cluster; "auto", "ray://host:10001", ...
    num_cpus: Optional[int] = None    # CPUs of the local cluster (default: all of this machine)
    actors: Optional[int] = None
    actor_cpus: Optional[float] = None
    gpus_per_actor: float = 0.0
    batch_size: Optional[int] = None
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


def run_scan(src: str, out: str, cfg: JobConfig, rc: RayConfig = RayConfig(),
             overwrite: bool = False, rows_per_file: Optional[int] = None) -> Summary:
    """List SRC, plan, run, write, and return the summary. Raises on unusable SRC/--out/plan."""
    items = list_source(src, exclude=out)
    if not items:
        raise SourceError(f"{src}: no files found")
    out_path = prepare_output(out, overwrite)
    ray = _init_ray(rc)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = rc.progress
    plan = make_plan(ray.cluster_resources(), actors=rc.actors, actor_cpus=rc.actor_cpus,
                     gpus_per_actor=rc.gpus_per_actor, batch_size=rc.batch_size)
    log.info("zoomin: %d input(s) from %s; %s", len(items), src, plan.describe())
    print(f"zoomin: scanning {len(items)} file(s) from {src} with backend {cfg.backend} "
          f"({cfg.examine.stages}); {plan.describe()}", flush=True)
    t0 = time.perf_counter()
    ds = build(items, cfg, plan)
    ds.write_parquet(str(out_path), min_rows_per_file=rows_per_file)
    summary = Summary(src=src, out=str(out_path), inputs=len(items), seconds=time.perf_counter() - t0,
                      plan=plan.describe(), backend=cfg.backend, stages=cfg.examine.stages)
    return summarise(out_path, summary)
