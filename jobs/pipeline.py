"""The scan job on Ray Data, in order: list -> read+decode (CPU tasks) -> scan+zoom (model actors)
-> write Parquet. `zoomin_core.stages.run_chain` is the same chain in one process.

Rows cross the Ray boundary as Arrow tables; `zoomin_core` records live inside each stage only.
"""
from __future__ import annotations

import logging
import pickle
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Iterator, Optional

import numpy as np
import pyarrow as pa

from zoomin_core.decode import prepare
from zoomin_core.records import STATUS_OK, Prepared, View
from zoomin_core.schema import RESULT_SCHEMA, rows_to_table
from zoomin_core.stages import ExamineConfig, Scanned, crop_stage, examine, scan_stage, zoom_stage

from .plan import Plan
from .quarantine import CrashGuard
from .sources import KIND_PARQUET, KIND_TAR, SourceConfig, iter_inputs

log = logging.getLogger(__name__)

# Prepared images between the decode tasks and the model actors. The view travels as raw RGB
# bytes (small: at most --view-size a side); the original bytes travel so that the zoom stage can
# cut full-resolution crops without reading the object again.
PREPARED_SCHEMA = pa.schema([
    ("image_id", pa.string()), ("uri", pa.string()), ("status", pa.string()), ("error", pa.string()),
    ("width", pa.int32()), ("height", pa.int32()), ("view", pa.binary()), ("view_h", pa.int32()),
    ("view_w", pa.int32()), ("scale_x", pa.float64()), ("scale_y", pa.float64()),
    ("data", pa.large_binary()), ("decode_s", pa.float64()), ("nbytes", pa.int64()), ("extra", pa.string()),
])


# Memory reserved per decode task (Ray's scheduler counts it). It also keeps the decode tasks a
# separate operator: Ray Data fuses a task map into the next actor map when their resource
# requests are equal, which would run decoding inside the model actors, one after the other
# with the model (and, on GPU nodes, while holding the GPU).
# 384 MiB: a task reading from S3 (s3fs, aiobotocore and their event loop) peaked at 254 MiB.
DECODE_TASK_MEMORY = 384 * 1024 * 1024
MAX_PLAN_BLOCKS = 4000


@dataclass(frozen=True)
class JobConfig:
    backend: str = "compact"
    model: Optional[str] = None               # weights path or URI; None = the backend's default
    examine: ExamineConfig = field(default_factory=ExamineConfig)
    source: SourceConfig = field(default_factory=SourceConfig)   # formats, read limit, storage
    backend_options: dict = field(default_factory=dict)


def _prepared_to_arrow(ps: list[Prepared], extras: list[Optional[str]]) -> pa.Table:
    cols = {
        "image_id": [p.image_id for p in ps], "uri": [p.uri for p in ps],
        "status": [p.status for p in ps], "error": [p.error for p in ps],
        "width": [p.width for p in ps], "height": [p.height for p in ps],
        "view": [p.view.pixels.tobytes() if p.view is not None else None for p in ps],
        "view_h": [p.view.pixels.shape[0] if p.view is not None else 0 for p in ps],
        "view_w": [p.view.pixels.shape[1] if p.view is not None else 0 for p in ps],
        "scale_x": [p.view.scale_x if p.view is not None else 1.0 for p in ps],
        "scale_y": [p.view.scale_y if p.view is not None else 1.0 for p in ps],
        "data": [p.data for p in ps], "decode_s": [p.decode_s for p in ps], "nbytes": [p.nbytes for p in ps],
        "extra": extras,
    }
    return pa.Table.from_pydict(cols, schema=PREPARED_SCHEMA)


def _arrow_to_prepared(t: pa.Table) -> list[Prepared]:
    out = []
    for r in t.to_pylist():
        view = None
        if r["view"] is not None:
            px = np.frombuffer(r["view"], np.uint8).reshape(r["view_h"], r["view_w"], 3)
            view = View(px, r["scale_x"], r["scale_y"])
        out.append(Prepared(r["image_id"], r["uri"], r["status"], r["error"], r["width"],
                            r["height"], view, r["data"], r["decode_s"], r["nbytes"]))
    return out


def read_and_prepare(batch: pa.Table, cfg: JobConfig, chunk: int = 16) -> Iterator[pa.Table]:
    """CPU task: plan rows (objects or shards) -> prepared rows, `chunk` images per output block.
    Per-image failures become statuses; a shard yields one row per image member."""
    ps, extras = [], []
    for unit in batch.to_pylist():
        for item, extra in iter_inputs(unit, cfg.source):
            ps.append(prepare(item, cfg.examine.decode))
            extras.append(extra)
            if len(ps) >= chunk:
                yield _prepared_to_arrow(ps, extras)
                ps, extras = [], []
    if ps:
        yield _prepared_to_arrow(ps, extras)


class _ModelActor:
    """Loads the backend once per actor."""

    def __init__(self, cfg: JobConfig, plan: Plan):
        import torch

        from zoomin_core.backends import load_backend

        from .models import fetch_model
        torch.set_num_threads(plan.threads)
        options = dict(cfg.backend_options)
        if cfg.backend in ("compact", "vlm"):
            options.setdefault("device", plan.device)
        if cfg.backend == "vlm":
            options.setdefault("batch_size", plan.batch_size)
            if cfg.model:  # name rows after the checkpoint as given, not its cache folder
                options.setdefault("model_name", cfg.model.rstrip("/").rsplit("/", 1)[-1])
        # A checkpoint in object storage is fetched once per node into the local cache.
        model = fetch_model(cfg.model, cfg.source.storage)[0] if cfg.model else None
        self.backend = load_backend(cfg.backend, model, **options)
        self.cfg = cfg
        # Built here, in the actor's process: a restarted actor reads what its predecessor left.
        self.guard = CrashGuard()


class Examiner(_ModelActor):
    """Model actor: scans and zooms one batch per call (crops are cut here too). Identical bytes
    under different keys (same image_id, the sha256 of the bytes) are examined once per actor:
    later copies share the first one's result under their own uri."""

    SEEN_MAX = 20_000   # results remembered per actor (a row is about a kilobyte)

    def __init__(self, cfg: JobConfig, plan: Plan):
        super().__init__(cfg, plan)
        self.seen: OrderedDict = OrderedDict()   # image_id -> its row, oldest first

    def __call__(self, batch: pa.Table) -> pa.Table:
        prepared = _arrow_to_prepared(batch)
        seen = self.seen
        fresh, first = [], {}
        for p in prepared:
            if p.status != STATUS_OK or (p.image_id not in seen and p.image_id not in first):
                fresh.append(p)
                if p.status == STATUS_OK:
                    first[p.image_id] = p
        rows_fresh = self.guard.examine(fresh, lambda ps: examine(self.backend, ps, self.cfg.examine),
                                   self.backend.model_id, self.cfg.examine.stages)
        own = {id(p): r for p, r in zip(fresh, rows_fresh)}
        for p in fresh:
            if own[id(p)].status == STATUS_OK:
                seen[p.image_id] = own[id(p)]
                seen.move_to_end(p.image_id)
        rows = [own.get(id(p)) or replace(seen[p.image_id], uri=p.uri, decode_s=p.decode_s, scan_s=0.0, zoom_s=0.0)
                for p in prepared]
        while len(seen) > self.SEEN_MAX:  # trimmed only now: this batch's copies may need the oldest
            seen.popitem(last=False)
        return rows_to_table(rows, batch.column("extra").to_pylist())


# Between the split stages, items are our own records (stages.Scanned or a finished ResultRow),
# pickled by our own tasks - never anything read from the input.
STAGED_SCHEMA = pa.schema([("uri", pa.string()), ("state", pa.large_binary()), ("extra", pa.string())])


def _pack(items: list, extras: list) -> pa.Table:
    return pa.Table.from_pydict({"uri": [it.prepared.uri if isinstance(it, Scanned) else it.uri for it in items],
                                 "state": [pickle.dumps(it, protocol=5) for it in items],
                                 "extra": extras}, schema=STAGED_SCHEMA)


def _unpack(batch: pa.Table) -> tuple[list, list]:
    return [pickle.loads(b) for b in batch.column("state").to_pylist()], batch.column("extra").to_pylist()


class Scanner(_ModelActor):
    """Model actor of the scan stage (split plans)."""

    def __call__(self, batch: pa.Table) -> pa.Table:
        items = self.guard.examine(_arrow_to_prepared(batch), lambda ps: scan_stage(self.backend, ps, self.cfg.examine),
                              self.backend.model_id, self.cfg.examine.stages)
        return _pack(items, batch.column("extra").to_pylist())


def cut_crops(batch: pa.Table, cfg: JobConfig) -> pa.Table:
    """CPU task between the split stages: full-resolution decode and cropping."""
    items, extras = _unpack(batch)
    return _pack(crop_stage(items, cfg.examine), extras)


class Zoomer(_ModelActor):
    """Model actor of the zoom stage (split plans)."""

    def __call__(self, batch: pa.Table) -> pa.Table:
        items, extras = _unpack(batch)
        rows = self.guard.examine(items, lambda its: zoom_stage(self.backend, its, self.cfg.examine),
                             self.backend.model_id, self.cfg.examine.stages)
        return rows_to_table(rows, extras)


def build(units: pa.Table, cfg: JobConfig, plan: Plan, read_batch: int = 16):
    """The Ray Data pipeline, unexecuted. `units` (sources.PLAN_SCHEMA) carry keys and sizes only."""
    import ray.data

    if any(k in (KIND_TAR, KIND_PARQUET) for k in units.column("kind").to_pylist()):
        read_batch = 1  # a shard holds many images: one shard per task
    # Blocks are the unit of parallelism of the read tasks, and each costs the driver ~50 KB
    # (measured): a few per CPU of the cluster, at least 200, at most MAX_PLAN_BLOCKS.
    cap = min(MAX_PLAN_BLOCKS, max(200, 4 * int(plan.cluster_cpus)))
    n_blocks = max(1, min(cap, -(-units.num_rows // read_batch)))
    step = -(-units.num_rows // n_blocks)
    ds = ray.data.from_arrow([units.slice(i, step) for i in range(0, units.num_rows, step)])
    ds = ds.map_batches(read_and_prepare, fn_kwargs={"cfg": cfg}, batch_format="pyarrow",
                        batch_size=read_batch, num_cpus=plan.task_cpus, memory=DECODE_TASK_MEMORY)
    model = dict(fn_constructor_kwargs={"cfg": cfg, "plan": plan}, batch_format="pyarrow",
                 batch_size=plan.batch_size, compute=ray.data.ActorPoolStrategy(size=plan.actors),
                 num_cpus=plan.pool_cpus, num_gpus=plan.pool_gpus or None)
    if not (plan.split and cfg.examine.zoom):
        return ds.map_batches(Examiner, **model)
    ds = ds.map_batches(Scanner, **model)
    ds = ds.map_batches(cut_crops, fn_kwargs={"cfg": cfg}, batch_format="pyarrow", batch_size=plan.batch_size,
                        num_cpus=plan.task_cpus, memory=DECODE_TASK_MEMORY)
    return ds.map_batches(Zoomer, **model)


def empty_result() -> pa.Table:
    return RESULT_SCHEMA.empty_table()
