"""The scan job on Ray Data, in order: list -> read+decode (CPU tasks, or the model actors themselves
on CPU plans) -> scan+zoom (model actors) [-> second tier on the doubtful images (its own actors,
--cascade)] -> write Parquet.
`zoomin_core.stages.run_chain` is the same chain in one process (`zoomin_core.cascade.run_cascade`
with a second tier).

Rows cross the Ray boundary as Arrow tables; `zoomin_core` records live inside each stage only.
"""
from __future__ import annotations

import json
import logging
import pickle
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Iterator, Optional

import numpy as np
import pyarrow as pa

from zoomin_core.cascade import Band, escalates, first_only, merge, reprepare
from zoomin_core.decode import prepare
from zoomin_core.provenance import Signal
from zoomin_core.records import STATUS_DECODE_ERROR, STATUS_OK, Prepared, ResultRow, View
from zoomin_core.schema import RESULT_SCHEMA, rows_to_table
from zoomin_core.stages import ExamineConfig, Scanned, crop_stage, examine, scan_stage, zoom_stage

from . import dedupe
from .plan import Plan
from .quarantine import POISON_DECODE_MESSAGE, CrashGuard
from .sources import SourceConfig, has_shards, iter_inputs

log = logging.getLogger(__name__)

# Prepared images between the decode tasks and the model actors. The view travels as raw RGB
# bytes (small: at most --view-size a side); the original bytes travel so that the zoom stage can
# cut full-resolution crops without reading the object again.
PREPARED_SCHEMA = pa.schema([
    ("image_id", pa.string()), ("uri", pa.string()), ("status", pa.string()), ("error", pa.string()),
    ("width", pa.int32()), ("height", pa.int32()), ("view", pa.binary()), ("view_h", pa.int32()),
    ("view_w", pa.int32()), ("scale_x", pa.float64()), ("scale_y", pa.float64()),
    ("data", pa.large_binary()), ("decode_s", pa.float64()), ("nbytes", pa.int64()), ("extra", pa.string()),
    ("provenance", pa.string()),   # the marks read while decoding (provenance.Signal fields), JSON
])


# Memory reserved per decode task (Ray's scheduler counts it). It also keeps the decode tasks a
# separate operator: Ray Data fuses a task map into the next actor map when their resource
# requests are equal, which would run decoding inside the model actors, one after the other
# with the model (and, on GPU nodes, while holding the GPU).
# 384 MiB: a task reading from S3 (s3fs, aiobotocore and their event loop) peaked at 254 MiB.
DECODE_TASK_MEMORY = 384 * 1024 * 1024
MAX_PLAN_BLOCKS = 4000
# Objects an actor that decodes its own images reads at once: the reads of a call overlap one
# another (object storage answers each in tens of milliseconds), not the model.
READ_THREADS = 16


@dataclass(frozen=True)
class SecondTier:
    """--cascade: the backend that judges the images the first one scores inside `band`."""
    backend: str
    band: Band
    model: Optional[str] = None
    backend_options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class JobConfig:
    backend: str = "compact"
    model: Optional[str] = None               # weights path or URI; None = the backend's default
    examine: ExamineConfig = field(default_factory=ExamineConfig)
    source: SourceConfig = field(default_factory=SourceConfig)   # formats, read limit, storage
    backend_options: dict = field(default_factory=dict)
    second: Optional[SecondTier] = None       # --cascade: a second tier for the doubtful images

    def tiers(self) -> tuple["JobConfig", ...]:
        """Each tier's configuration, first tier first (one without --cascade)."""
        return (self, self.tier2()) if self.second is not None else (self,)

    def tier2(self) -> "JobConfig":
        """The configuration the second tier's actors load their backend from."""
        assert self.second is not None
        return replace(self, backend=self.second.backend, model=self.second.model,
                       backend_options=self.second.backend_options, second=None)


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
        "provenance": [json.dumps([[s.signal, s.detail, s.says] for s in p.provenance]) if p.provenance else None
                       for p in ps],
    }
    return pa.Table.from_pydict(cols, schema=PREPARED_SCHEMA)


def _arrow_to_prepared(t: pa.Table) -> list[Prepared]:
    out = []
    for r in t.to_pylist():
        view = None
        if r["view"] is not None:
            px = np.frombuffer(r["view"], np.uint8).reshape(r["view_h"], r["view_w"], 3)
            view = View(px, r["scale_x"], r["scale_y"])
        marks = tuple(Signal(*m) for m in json.loads(r["provenance"])) if r["provenance"] else ()
        out.append(Prepared(r["image_id"], r["uri"], r["status"], r["error"], r["width"],
                            r["height"], view, r["data"], r["decode_s"], r["nbytes"], marks))
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

    def __init__(self, cfg: JobConfig, plan: Plan, registry=None):
        import torch

        from zoomin_core.backends import load_backend

        from .models import fetch_model
        torch.set_num_threads(plan.threads)
        options = dict(cfg.backend_options)
        if cfg.backend in ("compact", "vlm", "classifier"):
            options.setdefault("device", plan.device)
        if cfg.backend == "vlm":
            options.setdefault("batch_size", plan.batch_size)
        if cfg.backend in ("vlm", "classifier") and cfg.model:
            # name rows after the checkpoint as given, not its cache folder
            options.setdefault("model_name", cfg.model.rstrip("/").rsplit("/", 1)[-1])
        # A checkpoint in object storage is fetched once per node into the local cache.
        model = fetch_model(cfg.model, cfg.source.storage)[0] if cfg.model else None
        self.backend = load_backend(cfg.backend, model, **options)
        self.cfg = cfg
        # Built here, in the actor's process: a restarted actor reads what its predecessor left.
        self.guard = CrashGuard()
        self.registry = dedupe.Client(registry, enroll=True)

    def _guarded(self, items: list, stage_fn) -> list:
        """`stage_fn(backend, items, examine config)` under the crash guard."""
        return self.guard.examine(items, lambda b: stage_fn(self.backend, b, self.cfg.examine),
                                  self.backend.model_id, self.cfg.examine.stages)

    def _examine(self, ps: list[Prepared]) -> list:
        """Both stages (in the zoom actor: for a copy whose original's row never came)."""
        return self._guarded(ps, examine)

    def _emit(self, rows: list, prepared: list, extras: list) -> pa.Table:
        """Finished rows: Parquet-ready, or with --cascade the rows (our own records, pickled) and
        the bytes of the images the second tier is to judge."""
        if self.cfg.second is None:
            return rows_to_table(rows, extras)
        band = self.cfg.second.band
        data = [p.data if p is not None and escalates(r, band) else None for r, p in zip(rows, prepared)]
        return pa.Table.from_pydict({"uri": [r.uri for r in rows], "state": [pickle.dumps(r, protocol=5) for r in rows],
                                     "extra": extras, "data": data}, schema=TIERED_SCHEMA)


class Examiner(_ModelActor):
    """Model actor: scans and zooms one batch per call (crops are cut here too). Identical bytes
    under different keys are examined once per run (dedupe.py): copies share the first one's row
    under their own uri."""

    def __call__(self, batch: pa.Table) -> pa.Table:
        return self._examine_batch(_arrow_to_prepared(batch), batch.column("extra").to_pylist())

    def _examine_batch(self, prepared: list[Prepared], extras: list) -> pa.Table:
        shared, pending = self.registry.claim(_ok_ids(prepared))
        fresh, source = dedupe.split_batch(prepared, shared, pending)
        rows: list = [None] * len(prepared)
        _fill(rows, fresh, self._examine([prepared[k] for k in fresh]))
        self.registry.publish(*_outcomes(prepared, rows, fresh))
        _resolve(prepared, rows, source, shared, self.registry, self._examine)
        return self._emit(rows, prepared, extras)


class ReadingExaminer(Examiner):
    """Model actor of CPU plans: reads and decodes its own inputs (plan rows: objects, or one shard
    a call), `plan.batch_size` images at a time, and examines them as Examiner does. The objects
    of a call are read by a thread pool, all at once; decoding runs in the actor's own thread,
    under a crash guard of its own (an input whose decoding kills the process is isolated as the
    model's poison images are)."""

    def __init__(self, cfg: JobConfig, plan: Plan, registry=None):
        super().__init__(cfg, plan, registry)
        self.chunk = plan.batch_size
        self.reads = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="zoomin-read")
        self.decode_guard = CrashGuard(step="decode")
        self.before_decode = getattr(self.backend, "before_decode", None)   # a test backend's hook

    def __call__(self, units: pa.Table) -> pa.Table:
        rows = units.to_pylist()
        if has_shards(units):   # one shard a call (build): its members stream, a chunk at a time
            inputs = (x for unit in rows for x in iter_inputs(unit, self.cfg.source))
        else:                   # objects: read together, decoded in order
            inputs = (x for got in self.reads.map(lambda u: list(iter_inputs(u, self.cfg.source)), rows) for x in got)
        tables, chunk = [], []
        for x in inputs:
            chunk.append(x)
            if len(chunk) == self.chunk:
                tables.append(self._decode_and_examine(chunk))
                chunk = []
        if chunk or not tables:
            tables.append(self._decode_and_examine(chunk))
        return pa.concat_tables(tables)

    def _decode_and_examine(self, chunk: list) -> pa.Table:
        prepared = self.decode_guard.run([item for item, _ in chunk], self._decode, lambda item: item.uri,
                                         self._poisoned)
        return self._examine_batch(prepared, [extra for _, extra in chunk])

    def _decode(self, items: list) -> list[Prepared]:
        out = []
        for item in items:
            if self.before_decode is not None:
                self.before_decode(item.uri)
            out.append(prepare(item, self.cfg.examine.decode))
        return out

    @staticmethod
    def _poisoned(item) -> Prepared:
        return Prepared(item.image_id, item.uri, STATUS_DECODE_ERROR,
                        POISON_DECODE_MESSAGE, nbytes=len(item.data or b""))


def _ok_ids(prepared: list[Prepared]) -> list[str]:
    return sorted({p.image_id for p in prepared if p.status == STATUS_OK})


def _fill(rows: list, at: list[int], values: list) -> None:
    for k, v in zip(at, values):
        rows[k] = v


def _outcomes(prepared: list[Prepared], rows: list, at: list[int]) -> tuple[dict, list]:
    """What to tell the registry about the claimed images at `at`: rows to share, ids to release."""
    ok, released = {}, []
    for k in at:
        p, r = prepared[k], rows[k]
        if p.status != STATUS_OK or r is None or isinstance(r, Scanned):
            continue
        if r.status == STATUS_OK:
            ok[p.image_id] = r
        else:
            released.append(p.image_id)
    return ok, released


def _resolve(prepared: list[Prepared], rows: list, source: dict, shared: dict, registry: "dedupe.Client",
             examine_fn, wait_s: float = dedupe.WAIT_S) -> None:
    """Rows of the copies in a batch: from their original in the batch or in the registry; one
    whose original another actor is still examining waits for it up to `wait_s`, then is
    examined here."""
    waited = registry.wait_for(sorted({ref for how, ref in source.values() if how == "pending"}), wait_s)
    late: dict = {}
    for k, (how, ref) in source.items():
        if how == "pending" and ref not in waited:
            late.setdefault(ref, k)
    if late:
        at = list(late.values())
        _fill(rows, at, examine_fn([prepared[k] for k in at]))
        registry.publish(*_outcomes(prepared, rows, at))
    for k, (how, ref) in source.items():
        if rows[k] is None:
            row = rows[ref] if how == "batch" else shared.get(ref) or waited.get(ref) or rows[late[ref]]
            rows[k] = dedupe.share(row, prepared[k])


# Between the split stages, items are our own records (stages.Scanned, dedupe.Pending or a finished ResultRow),
# pickled by our own tasks - never anything read from the input.
STAGED_SCHEMA = pa.schema([("uri", pa.string()), ("state", pa.large_binary()), ("extra", pa.string())])


def _pack(items: list, extras: list) -> pa.Table:
    return pa.Table.from_pydict({"uri": [it.uri if isinstance(it, ResultRow) else it.prepared.uri for it in items],
                                 "state": [pickle.dumps(it, protocol=5) for it in items],
                                 "extra": extras}, schema=STAGED_SCHEMA)


def _unpack(batch: pa.Table) -> tuple[list, list]:
    return [pickle.loads(b) for b in batch.column("state").to_pylist()], batch.column("extra").to_pylist()


class Scanner(_ModelActor):
    """Model actor of the scan stage (split plans). Copies of an image another actor claimed
    go on as dedupe.Pending, and the zoom stage gives them their original's row."""

    def __call__(self, batch: pa.Table) -> pa.Table:
        prepared = _arrow_to_prepared(batch)
        shared, pending = self.registry.claim(_ok_ids(prepared))
        fresh, source = dedupe.split_batch(prepared, shared, pending)
        items: list = [None] * len(prepared)
        _fill(items, fresh, self._guarded([prepared[k] for k in fresh], scan_stage))
        self.registry.publish(*_outcomes(prepared, items, fresh))   # images that failed the scan
        for k, (how, ref) in source.items():
            items[k] = dedupe.share(shared[ref], prepared[k]) if how == "registry" else dedupe.Pending(prepared[k])
        return _pack(items, batch.column("extra").to_pylist())


def cut_crops(batch: pa.Table, cfg: JobConfig) -> pa.Table:
    """CPU task between the split stages: full-resolution decode and cropping."""
    items, extras = _unpack(batch)
    return _pack(crop_stage(items, cfg.examine), extras)


class Zoomer(_ModelActor):
    """Model actor of the zoom stage (split plans)."""

    def __call__(self, batch: pa.Table) -> pa.Table:
        items, extras = _unpack(batch)
        work = [k for k, it in enumerate(items) if not isinstance(it, dedupe.Pending)]
        rows: list = [None] * len(items)
        _fill(rows, work, self._guarded([items[k] for k in work], zoom_stage))
        prepared = [it.prepared if isinstance(it, (Scanned, dedupe.Pending)) else None for it in items]
        scanned = [k for k in work if isinstance(items[k], Scanned)]
        self.registry.publish(*_outcomes(prepared, rows, scanned))
        here = {items[k].prepared.image_id: k for k in scanned}
        source = {k: ("batch", here[it.prepared.image_id]) if it.prepared.image_id in here
                  else ("pending", it.prepared.image_id)
                  for k, it in enumerate(items) if isinstance(it, dedupe.Pending)}
        # No waiting here: the original may be queued behind this very call on this actor.
        _resolve(prepared, rows, source, {}, self.registry, self._examine, wait_s=0.0)
        return self._emit(rows, prepared, extras)


# Between the two tiers of a cascade: finished first-tier rows (pickled by our own actors) and,
# for the images to escalate, their bytes.
TIERED_SCHEMA = pa.schema([("uri", pa.string()), ("state", pa.large_binary()), ("extra", pa.string()),
                           ("data", pa.large_binary())])


class Escalator(_ModelActor):
    """Model actor of the second tier (--cascade): judges the images whose first-tier score lies
    in the band, decoding them again from the bytes the first tier passed on; every other row
    passes through. A second tier that fails on an image leaves the first tier's verdict
    (cascade.merge), so each input still has exactly one row."""

    def __init__(self, cfg: JobConfig, plan: Plan, registry=None):
        super().__init__(cfg.tier2(), plan, None)   # no dedupe: copies were shared by the first tier
        self.band = cfg.second.band

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = [pickle.loads(b) for b in batch.column("state").to_pylist()]
        data = batch.column("data").to_pylist()
        up = [k for k, d in enumerate(data) if d is not None]
        again = self._examine([reprepare(rows[k], data[k], self.cfg.examine) for k in up])
        out = [first_only(r) for r in rows]
        for k, r in zip(up, again):
            out[k] = merge(rows[k], r, self.band)
        return rows_to_table(out, batch.column("extra").to_pylist())


def read_split(n_units: int, plan: Plan, read_batch: int = 16) -> tuple[int, int]:
    """(units per decode task, units per input block) for a job of `n_units` units."""
    # Each decode task's output reaches the model actors as one block, and an actor call takes
    # whole blocks: a small job cut into 16-unit blocks would leave most actors of a big machine
    # idle (96 images, 12 actors: 6 busy). So at least one block per actor where there are units.
    # Not more: every block in flight on an actor that dies is retried through the crash guard
    # (two blocks per actor doubled the time of the crash-isolation test on one actor).
    read_batch = max(1, min(read_batch, -(-n_units // max(1, plan.actors))))
    # Blocks are the unit of parallelism of the read tasks, and each costs the driver ~50 KB
    # (measured): a few per CPU of the cluster, at least 200, at most MAX_PLAN_BLOCKS.
    cap = min(MAX_PLAN_BLOCKS, max(200, 4 * int(plan.cluster_cpus)))
    n_blocks = max(1, min(cap, -(-n_units // read_batch)))
    return read_batch, -(-n_units // n_blocks)


def build(units: pa.Table, cfg: JobConfig, plan: Plan, read_batch: int = 16, registry=None):
    """The Ray Data pipeline, unexecuted. `units` (sources.PLAN_SCHEMA) carry keys and sizes only;
    `registry` (dedupe.start) lets the model actors examine identical bytes once."""
    import ray.data

    shards = has_shards(units)
    if shards:
        read_batch = 1  # a shard holds many images: one shard per task
    read_batch, step = read_split(units.num_rows, plan, read_batch)
    # from_blocks reads the blocks' sizes here; from_arrow ran a Ray task per block for them, which
    # the driver waited on while worker processes started (on 2 cores, part of the start-up).
    ds = ray.data.from_blocks([units.slice(i, step) for i in range(0, units.num_rows, step)])
    model = dict(fn_constructor_kwargs={"cfg": cfg, "plan": plan, "registry": registry}, batch_format="pyarrow",
                 batch_size=plan.batch_size, compute=ray.data.ActorPoolStrategy(size=plan.actors),
                 num_cpus=plan.pool_cpus, num_gpus=plan.pool_gpus or None)
    if plan.decode_in_actors:
        from .quiet import drop_no_free_cpu_warning
        drop_no_free_cpu_warning()
        # As many inputs a call as the actor examines at once, fewer where that would leave actors idle.
        per_call = 1 if shards else max(1, min(plan.batch_size, -(-units.num_rows // plan.actors)))
        ds = ds.map_batches(ReadingExaminer, **{**model, "batch_size": per_call})
        return ds.map_batches(Escalator, **model) if cfg.second is not None else ds
    ds = ds.map_batches(read_and_prepare, fn_kwargs={"cfg": cfg}, batch_format="pyarrow",
                        batch_size=read_batch, num_cpus=plan.task_cpus, memory=DECODE_TASK_MEMORY)
    if not (plan.split and cfg.examine.zoom):
        ds = ds.map_batches(Examiner, **model)
    else:
        ds = ds.map_batches(Scanner, **model)
        ds = ds.map_batches(cut_crops, fn_kwargs={"cfg": cfg}, batch_format="pyarrow", batch_size=plan.batch_size,
                            num_cpus=plan.task_cpus, memory=DECODE_TASK_MEMORY)
        ds = ds.map_batches(Zoomer, **model)
    # --cascade: the second tier's own actor pool, fed by the first's
    return ds.map_batches(Escalator, **model) if cfg.second is not None else ds


def empty_result() -> pa.Table:
    return RESULT_SCHEMA.empty_table()
