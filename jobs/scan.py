"""`zoomin scan`: plan SRC, run the pipeline on a Ray cluster (a local one by default), summarise.

Local:    zoomin scan ./photos --out ./results
S3:       zoomin scan s3://archive/2026/ --out s3://results/2026-11-28/
Cluster:  zoomin scan s3://archive/ --out s3://results/run1 --address auto
"""
from __future__ import annotations

import gc
import logging
import os
import time
import warnings
from dataclasses import dataclass
from typing import Optional

from . import dedupe, runs
from .models import check_model
from .pipeline import JobConfig, build
from .plan import make_plan
from .progress import Progress
from .sinks import RowCounter, Summary, make_parquet_sink, open_output, result_files, summarise, summary_record
from .sources import KIND_PARQUET, KIND_TAR, SourceError, plan_manifest, plan_source, unlisted_folders
from .watchdog import Stalled, Watchdog

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
    decode: str = "auto"           # where images are decoded: "actors", "tasks", "auto" (plan.make_plan)
    progress: bool = True
    progress_every: float = 30.0   # seconds between progress lines in a log (a terminal redraws in place)
    verbose: bool = False          # Ray's own progress bars and log lines too
    stall_s: float = 300.0    # after a lost node, restart what remains when nothing was committed this long
    max_restarts: int = 3


def _init_ray(rc: RayConfig):
    import ray
    import ray.data  # noqa: F401 - run_scan uses ray.data through the returned module
    if ray.is_initialized():
        return ray
    if not rc.verbose:
        from . import quiet
        quiet.install()   # before Ray starts: its processes inherit the filtered stderr
    # ERROR: not Ray's notice that token authentication is on for the cluster it starts.
    kwargs = dict(logging_level=logging.INFO if rc.verbose else logging.ERROR, log_to_driver=True)
    # A job submitted through the Jobs API finds its cluster in RAY_ADDRESS.
    address = rc.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, **kwargs)
    else:
        # "local": a new cluster of our own even when another Ray runs on this machine; without it
        # ray.init() joins that one (found through /tmp/ray) and then refuses num_cpus.
        ray.init(address="local", num_cpus=rc.num_cpus or os.cpu_count(), include_dashboard=False, **kwargs)
    if not rc.verbose:
        # Ray Data's plan and "execution finished" lines, and its note that its bars are off.
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        # Its advice, on a job of fewer blocks than actors or write tasks, to make more blocks.
        warnings.filterwarnings("ignore", message=r"The (minimum|maximum) number of concurrent", category=UserWarning)
    return ray


def plan_units(src: Optional[str], manifest: Optional[str], cfg: JobConfig, exclude: Optional[str] = None):
    """The objects (or shards) of SRC or the manifest; refused when there are none."""
    units = plan_manifest(manifest, cfg.source) if manifest else plan_source(src, cfg.source, exclude=exclude)
    if units.num_rows == 0:
        raise SourceError(f"{manifest or src}: no files found" if not manifest else f"{manifest}: empty manifest")
    return units


def plan_on_cluster(ray, rc: RayConfig, cfg: JobConfig):
    """The resource plan for this job on the cluster Ray is connected to."""
    # Ray Data's bars count blocks of a stream of unknown length ("Total Progress: 0/?" every
    # few seconds in a log); zoomin's own line counts images. --verbose shows Ray's too.
    ray.data.DataContext.get_current().enable_progress_bars = rc.progress and rc.verbose
    node_cpus = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=None)
    return make_plan(ray.cluster_resources(), actors=rc.actors, actor_cpus=rc.actor_cpus,
                     gpus_per_actor=rc.gpus_per_actor, batch_size=rc.batch_size, split=rc.split_stages,
                     node_cpus=node_cpus, cascade=cfg.second is not None, decode=rc.decode,
                     light=all(t.backend == "compact" for t in cfg.tiers()))


def job_identity(src: Optional[str], manifest: Optional[str], cfg: JobConfig) -> dict:
    """What this run's output is the results of, and every setting that changes a row
    (runs.IDENTITY and runs.SETTINGS): written to the run record, compared on resume."""
    prompts, vlm, classifier = None, None, None
    if cfg.backend == "classifier":
        classifier = {k: (list(v) if isinstance(v, tuple) else v) for k, v in sorted(cfg.backend_options.items())
                      if k not in ("max_boxes", "threshold")}
    if cfg.backend == "vlm":
        from zoomin_core.backends.vlm import load_prompts
        prompts = load_prompts(cfg.backend_options.get("prompts"))["version"]
        vlm = {k: v for k, v in sorted(cfg.backend_options.items()) if k not in ("prompts", "max_boxes", "threshold")}
    ex = cfg.examine
    return {"src": f"manifest:{manifest}" if manifest else src, "input_format": cfg.source.input_format,
            "image_column": cfg.source.image_column,
            "backend": cfg.backend, "model": cfg.model or "default", "model_sha256": model_digest(cfg),
            "prompt_version": prompts, "prior": cfg.backend_options.get("prior"),
            "threshold": cfg.backend_options.get("threshold"), "stages": ex.stages,
            "view_size": ex.decode.view_max_side, "max_boxes": ex.max_boxes, "margin": ex.margin,
            "min_crop_side": ex.min_crop_side, "max_pixels": ex.decode.max_pixels,
            "max_bytes": cfg.source.max_bytes, "vlm": vlm, "classifier": classifier, "examine_all": ex.examine_all,
            "c2pa_trust": hashlib_sha256(ex.decode.c2pa_trust), "cascade": _second_tier(cfg)}


def backends_text(cfg: JobConfig) -> str:
    if cfg.second is None:
        return cfg.backend
    return f"{cfg.backend}, then {cfg.second.backend} on first-tier scores in {cfg.second.band}"


def _second_tier(cfg: JobConfig) -> Optional[dict]:
    """What a row of the second tier depends on (runs.SETTINGS "cascade")."""
    if cfg.second is None:
        return None
    tier = cfg.tier2()
    return {"backend": tier.backend, "model": tier.model or "default", "model_sha256": model_digest(tier),
            "options": {k: v for k, v in sorted(tier.backend_options.items())}, "band": str(cfg.second.band)}


def hashlib_sha256(text: Optional[str]) -> Optional[str]:
    import hashlib
    return hashlib.sha256(text.encode()).hexdigest() if text else None


def model_digest(cfg: JobConfig) -> Optional[str]:
    """sha256 of a compact weights file read from this machine (the bundled one by default), so a
    new file under the same path counts as another model; for classifier checkpoints (local or
    in object storage) `models.checkpoint_digest`; None for compact weights in object storage
    and vlm checkpoints (their path stands for them)."""
    import hashlib
    from pathlib import Path
    if cfg.backend == "classifier" and cfg.model:
        from .models import checkpoint_digest
        return checkpoint_digest(cfg.model, cfg.source.storage)
    if cfg.backend != "compact" or (cfg.model and "://" in cfg.model):
        return None
    from zoomin_core.backends import DEFAULT_WEIGHTS
    path = Path(cfg.model) if cfg.model else DEFAULT_WEIGHTS
    if not path.is_file():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_scan(src: Optional[str], out: str, cfg: JobConfig, rc: RayConfig = RayConfig(),
             overwrite: bool = False, rows_per_file: Optional[int] = None,
             manifest: Optional[str] = None, incremental: bool = False, rescan: bool = False) -> Summary:
    """Plan SRC (or the manifest), run what is not done yet, write, and return the summary.
    Raises on an unusable SRC / manifest / --out / --model / plan, before any image is read."""
    storage = cfg.source.storage
    t_plan = time.perf_counter()
    units = plan_units(src, manifest, cfg, exclude=out)
    for tier in cfg.tiers():
        found = check_model(tier.model, storage, tier.backend, tier.backend_options.get("generated_labels", ()))
        if found.get("labels"):   # how the classifier's classes were read: worth seeing before hours of scanning
            print(f"zoomin: {tier.backend} {tier.model}: {found['labels']}", flush=True)
    output = open_output(out, storage)
    decision = runs.decide(output, job_identity(src, manifest, cfg), overwrite, incremental, rescan)
    if decision.mode == "incremental":
        # Read once: `begin` keeps what is read here (the last run is complete, nothing to wait for).
        decision.done = runs.read_done(output)
        if not runs.remaining(units, decision.done).num_rows:
            return _nothing_new(units, output, decision.done, cfg, manifest or src or "")
    # Plan the resources before the run is recorded: a plan that cannot run leaves --out as it was.
    plan = plan_on_cluster(_init_ray(rc), rc, cfg)
    run = runs.begin(output, decision)
    kinds = units.column("kind").to_pylist()
    uris = units.column("uri").to_pylist()
    shards = _shard_uris(uris, kinds)
    todo = runs.remaining(units, run.done)
    unlisted = unlisted_folders(units)
    if unlisted:  # their files are unknown, so no row can stand for them: say so instead
        run.notes.append(f"{len(unlisted)} folder(s) under SRC could not be listed, so their files are not in "
                         f"this run (e.g. {unlisted[0]})")
    run.notes += _moved_note(units, run.done)
    for note in run.notes:
        print(f"zoomin: note: {note}", flush=True)
    if run.done:
        print(f"zoomin: {run.mode}: {len(run.done)} row(s) already in {output.uri}; "
              f"{todo.num_rows} of {units.num_rows} input(s) left to scan", flush=True)
    what = f"{len(uris)} object(s)" + (f" ({len(shards)} shard(s))" if shards else "")
    if run.done and not shards:
        what = f"the {todo.num_rows} left of {what}"
    print(f"zoomin: scanning {what} from {manifest or src} (planned in {time.perf_counter() - t_plan:.1f}s) "
          f"with backend {backends_text(cfg)} ({cfg.examine.stages}); {plan.describe()}", flush=True)
    total = None if shards else todo.num_rows   # a shard holds an unknown number of images
    with runs.Heartbeat(output, run.record), _progress(rc, RowCounter(output, run.run_id), total):
        _execute(units, todo, output, run, cfg, plan, rc, rows_per_file)
    del units, todo  # the plan's blocks now live in the object store
    summary = Summary(src=manifest or src or "", out=output.uri, inputs=len(uris),
                      seconds=time.perf_counter() - t_plan, plan=plan.describe(), backend=backends_text(cfg),
                      stages=cfg.examine.stages, mode=run.mode,
                      notes=run.notes)
    summary = summarise(output, summary, uris, shards)
    summary.new_rows = summary.rows - len(run.done)
    runs.write_record(output, {**run.record, "state": "complete" if summary.complete else "incomplete",
                               "ended": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               **summary_record(summary)})
    return summary


def _shard_uris(uris: list, kinds: list) -> set:
    return {u for u, k in zip(uris, kinds) if k in (KIND_TAR, KIND_PARQUET)}


def _moved_note(units, done: dict) -> list[str]:
    """The note on objects whose size changed since their row was made: not rescanned, since a
    second row for the same uri would duplicate it."""
    moved = runs.changed(units, done)
    return [f"{len(moved)} object(s) changed size since their row was made (e.g. {moved[0]}); "
            "their rows are kept - pass --rescan to redo them"] if moved else []


def _nothing_new(units, output, done: dict, cfg: JobConfig, src: str) -> Summary:
    """--incremental with every input already in the output: say so, start no cluster, write
    nothing (the run record stays the last real run's)."""
    uris, kinds = units.column("uri").to_pylist(), units.column("kind").to_pylist()
    notes = _moved_note(units, done)
    for note in notes:
        print(f"zoomin: note: {note}", flush=True)
    print(f"zoomin: incremental: all {units.num_rows} input(s) already have their row in {output.uri}; "
          "nothing to scan", flush=True)
    summary = Summary(src=src, out=output.uri, inputs=units.num_rows, backend=cfg.backend,
                      stages=cfg.examine.stages, mode="incremental", notes=notes)
    summary = summarise(output, summary, uris, _shard_uris(uris, kinds))
    summary.new_rows = 0
    return summary


def _progress(rc: RayConfig, counter, total):
    import contextlib
    if not rc.progress or total == 0:
        return contextlib.nullcontext()
    return Progress(counter, total, every=rc.progress_every)


class ScanStalled(RuntimeError):
    """The pipeline stalled after losing nodes, --max-restarts times in a row."""


def _execute(units, todo, output, run: runs.RunStart, cfg: JobConfig, plan, rc: RayConfig,
             rows_per_file: Optional[int]) -> None:
    """Runs the pipeline on `todo`; when it stalls after a lost node (see watchdog.py), runs what
    is still missing again, like a resume, at most rc.max_restarts times."""
    import ray
    registry = dedupe.start(run.run_id) if todo.num_rows else None
    try:
        _attempts(units, todo, output, run, cfg, plan, rc, rows_per_file, registry)
    except KeyboardInterrupt:
        # The model actors still running would each report the registry's death; Ray ends them,
        # and the registry with them, when this driver exits.
        ray.shutdown()
        raise
    if registry is not None:
        ray.kill(registry)


def _attempts(units, todo, output, run, cfg, plan, rc, rows_per_file, registry) -> None:
    from .watchdog import alive_nodes
    # Nodes lost at any time in the run count: a restarted attempt can stall too (seen once, on a
    # cluster that had just lost a node), and is then restarted again.
    attempt, nodes = 0, alive_nodes() if rc.stall_s else set()
    while todo.num_rows:
        # Each attempt names its files apart: a write task of an abandoned attempt that still
        # commits cannot overwrite (or be overwritten by) the next one's.
        sink = make_parquet_sink(output, rows_per_file, run.run_id if not attempt else f"{run.run_id}-r{attempt}")
        try:
            # Write tasks take no CPU slot: they are light, and one waiting for a CPU held by a
            # decode task that waits for the writes to drain its output deadlocked a small cluster
            # that had just lost a node (seen in the three-node test).
            with Watchdog(lambda: result_files(output), rc.stall_s, start_nodes=nodes) as dog:
                build(todo, cfg, plan, registry=registry).write_datasink(sink, ray_remote_args={"num_cpus": 0},
                                                                           concurrency=plan.writers)
            return
        except Stalled:
            attempt += 1
            lost = len(dog.lost)
            if attempt > rc.max_restarts:
                raise ScanStalled(f"the scan stalled {attempt} times after losing {lost} node(s); what was "
                                  f"committed is kept - run the same command again to resume") from None
            runs.wait_until_quiet(output)  # abandoned write tasks may still be committing
            dedupe.Client(registry).abandon_attempt()  # its model actors may still hold CPUs/GPUs
            done = {**run.done, **runs.read_done(output)}
            todo = runs.remaining(units, done)
            msg = (f"no results for {rc.stall_s:.0f}s after losing {lost} node(s) (Ray Data can leave a task of a "
                   f"dead node unfinished); restarting the {todo.num_rows} input(s) still missing "
                   f"(restart {attempt} of at most {rc.max_restarts})")
            print(f"zoomin: note: {msg}", flush=True)
            run.notes.append(msg)
        # The abandoned attempt's executor sits in reference cycles with the traceback. Until they
        # are collected its references to blocks lost with the node stay alive, and Ray keeps
        # re-running the read tasks that made them, on the CPUs the next attempt waits for.
        gc.collect()
