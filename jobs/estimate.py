"""`zoomin scan SRC --estimate`: time the job on a sample of SRC, on the cluster it would run on,
before committing to a long run; nothing is written.

The sample (objects spread evenly over the listing, so that sizes and folders mix as in the
whole) runs through the same pipeline as the real job (`pipeline.build`, the same plan), but its
rows come back to this process instead of Parquet. From their arrival times:
  - start-up: from launch to the time the first row would have come at the steady rate (actor
    start, model load, the first batch); Ray's own start is timed apart;
  - steady rate: the least-squares slope of the rows after the first tenth of the sample (never
    above what the model actors' busy time allows), which is what a long job sees once its
    actors are up;
  - the whole source at that rate, and the nodes a --deadline needs, assuming the rate grows with
    the number of nodes like those of this cluster (each node adds its own actors, and decode
    tasks where they are used; the driver and object storage must keep up, which a sample on one
    cluster cannot show).
With --cascade, the first tier is timed alone too, so that each tier's cost reads apart: the
second tier's seconds per escalated image and the share of the sample it took.
"""
from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Optional

import pyarrow as pa

from .pipeline import Escalator, Examiner, JobConfig, ReadingExaminer, Scanner, Zoomer, build
from .plan import Plan
from .sources import has_shards

# Units (objects or shards) timed by default: enough blocks for a steady rate on a small machine,
# and a few batches per model actor on a large cluster.
MIN_SAMPLE = 256
PER_ACTOR = 32
# Ray Data stages run by the model actors (their names in its statistics)
ACTOR_STAGES = {c.__name__ for c in (Examiner, ReadingExaminer, Scanner, Zoomer, Escalator)}
# ... and in a user's words
STAGE_WORDS = {ReadingExaminer.__name__: "model actors (read, decode, scan, zoom)",
               Examiner.__name__: "model actors (scan, zoom)", Scanner.__name__: "scan actors",
               Zoomer.__name__: "zoom actors", Escalator.__name__: "second tier", "read_and_prepare": "decode tasks",
               "cut_crops": "crop tasks"}


@dataclass
class Timing:
    images: int
    startup_s: float
    rate: float                    # images/s once up
    seconds: float                 # the sample's whole run
    statuses: Counter = field(default_factory=Counter)
    escalated: int = 0             # --cascade: images the second tier judged
    # per stage (Ray Data operator): (busy seconds, CPU seconds) of its tasks or actor calls
    stages: dict = field(default_factory=dict)
    steady: bool = True            # False: too few blocks came back; rate is the whole run's
    blocks: int = 0
    capped: bool = False           # the rate the rows' arrivals gave was above what the actors' busy time allows

    def stage_text(self) -> str:
        return ", ".join(f"{STAGE_WORDS.get(name, name)} {busy / self.images * 1000:.1f} ms busy "
                         f"({cpu / self.images * 1000:.1f} ms CPU)" for name, (busy, cpu) in self.stages.items())


@dataclass
class Estimate:
    src: str
    units: int                     # objects (or shards) in the source
    sampled: int                   # of them timed
    images: int                    # images in the source (shards: projected from the sample)
    nodes: int                     # nodes of the cluster that ran the sample
    plan: str
    ray_start_s: float
    job: Timing
    tier1: Optional[Timing] = None  # --cascade: the first tier alone
    deadline_s: Optional[float] = None
    shards: bool = False

    @property
    def meets_deadline(self) -> bool:
        need = self.nodes_for(self.deadline_s) if self.deadline_s else self.nodes
        return need is not None and need <= self.nodes

    @property
    def whole_s(self) -> float:
        return self.ray_start_s + self.job.startup_s + self.images / self.job.rate

    def nodes_for(self, deadline_s: float) -> Optional[int]:
        """Nodes like these that finish the source within deadline_s (None: start-up alone is longer)."""
        left = deadline_s - self.ray_start_s - self.job.startup_s
        if left <= 0:
            return None
        return max(1, math.ceil(self.images / (self.job.rate / self.nodes * left)))

    def text(self) -> str:
        j = self.job
        per = "shard" if self.shards else "object"
        lines = [f"zoomin: estimate for {self.src}: timed {self.sampled} of {self.units} {per}(s) "
                 f"({j.images} image(s)) on this cluster ({self.nodes} node(s); {self.plan})",
                 f"  start-up:     {self.ray_start_s:.1f} s Ray, then {j.startup_s:.1f} s to the first results "
                 "(actors, model load)",
                 f"  steady rate:  {j.rate:.1f} images/s ({j.rate / self.nodes:.1f} per node)"
                 + (" - the model actors' busy time allows no more (rows reached this process faster, "
                    "in bursts)" if j.capped else "")]
        if not j.steady:
            lines[1:3] = [f"  start-up:     {self.ray_start_s:.1f} s Ray; the rest not measurable",
                          f"  rate:         {j.rate:.1f} images/s over the whole sample, start-up included (the "
                          f"sample came back in {j.blocks} block(s), too few for a steady rate: give a larger "
                          "--estimate-sample)"]
        if self.tier1 is not None:
            t1 = self.tier1
            share = j.escalated / max(1, j.images)
            lines.append(f"  first tier alone: {t1.rate:.1f} images/s; the second tier took {share:.0%} of the "
                         f"sample ({j.escalated} image(s))")
            if j.escalated and 1 / j.rate > 1 / t1.rate:
                per_image = (1 / j.rate - 1 / t1.rate) / share
                lines.append(f"  second tier:  {per_image:.3f} s of the cluster per escalated image "
                             f"({1 / per_image:.1f} escalated images/s)")
        if j.stages:
            lines.append(f"  per image:    {j.stage_text()}")
        bad = {k: v for k, v in j.statuses.items() if k != "ok"}
        if bad:
            lines.append("  not ok in the sample: " + ", ".join(f"{k} {v}" for k, v in sorted(bad.items())))
        about = "about " if self.shards else ""
        lines.append(f"  whole source: {about}{self.images} image(s) in about {_duration(self.whole_s)} "
                     f"at this rate")
        if self.deadline_s:
            need = self.nodes_for(self.deadline_s)
            lines.append(f"  --deadline {_duration(self.deadline_s)}: " + (
                f"{need} node(s) like these" if need else "start-up alone takes longer"))
        lines.append("  (nodes scale the rate as long as the source's storage and the driver keep up; the "
                     "Parquet write and copies of the same image are left out: on 2 cores the real scan's "
                     "steady rate ran 15-30% under the estimate's)")
        return "\n".join(lines)


def _duration(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def sample_units(units: pa.Table, k: int) -> pa.Table:
    """k units spread evenly over the listing (all of them when there are no more)."""
    n = units.num_rows
    if k >= n:
        return units
    return units.take([i * n // k for i in range(k)])


def sample_size(units: int, plan: Plan, asked: Optional[int]) -> int:
    # Actors that decode their own images return a block a call: four calls each, for a steady rate.
    per_actor = max(PER_ACTOR, 4 * plan.batch_size) if plan.decode_in_actors else PER_ACTOR
    return min(units, asked or max(MIN_SAMPLE, per_actor * plan.actors))


def time_sample(units: pa.Table, cfg: JobConfig, plan: Plan, every: Optional[float] = None) -> Timing:
    """Run the pipeline on `units` and time the rows as they come back (a line every `every` s)."""
    # Rows come back a block at a time (one per decode task's input, or per actor call where the
    # actors decode): at least 16 blocks where the sample allows, so that a steady rate can be read
    # (the job itself cuts 16 objects a block).
    if plan.decode_in_actors:   # there a block comes back per actor call: at least four calls each
        plan = replace(plan, batch_size=max(1, min(plan.batch_size, units.num_rows // (4 * plan.actors))))
    ds = build(units, cfg, plan, read_batch=max(1, min(16, units.num_rows // 16)))
    t0 = shown = time.perf_counter()
    arrivals: list[tuple[float, int]] = []
    statuses: Counter = Counter()
    escalated, total = 0, 0
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        if not batch.num_rows:
            continue
        total += batch.num_rows
        arrivals.append((time.perf_counter() - t0, total))
        statuses.update(batch.column("status").to_pylist())
        if cfg.second is not None:
            escalated += sum(1 for t in batch.column("tiers").to_pylist() if t and len(t) > 1)
        if every and time.perf_counter() - shown >= every:   # a slow model on a big sample
            shown = time.perf_counter()
            print(f"zoomin: estimate: {total} image(s) timed in {shown - t0:.0f}s", flush=True)
    seconds = time.perf_counter() - t0
    if not total:
        raise ValueError("the sample gave no rows to time")
    rate, startup, measured = steady(arrivals, seconds)
    stages = stage_times(ds)
    # Rows reach the driver in bursts (blocks wait in the actors' output queues), and a short
    # sample's arrivals can read faster than the actors can work: 126-146 images/s from two
    # actors whose calls took 18 ms an image (at most 110). No stage of actors runs faster than
    # its actors' busy time allows.
    cap = actor_bound(stages, plan.actors, total)
    capped = bool(measured and cap and rate > cap)
    if capped:
        # start-up: where a line at that rate through the last arrival meets zero rows
        startup, rate = max(0.0, arrivals[-1][0] - total / cap), cap
    return Timing(total, startup, rate, seconds, statuses, escalated, stages, measured, len(arrivals), capped)


def actor_bound(stages: dict, actors: int, images: int) -> Optional[float]:
    """The most images/s the busiest stage of model actors allows: its actors over its busy
    seconds per image (None when no such stage was timed)."""
    return min((actors * images / busy for name, (busy, _) in stages.items() if name in ACTOR_STAGES and busy > 0),
               default=None)


def stage_times(ds) -> dict:
    """{stage: (busy s, CPU s)} summed over its tasks / actor calls, in pipeline order, from Ray
    Data's own statistics (a private API: where it is missing, no breakdown is printed). A decode
    task's busy time includes waiting for room downstream; its CPU time does not."""
    try:
        summary, ops = ds._get_stats_summary(), []
        while summary is not None:
            ops = list(summary.operators_stats) + ops
            summary = summary.parents[0] if summary.parents else None
        return {op.operator_name.removeprefix("MapBatches(").rstrip(")"): (op.wall_time.sum, op.cpu_time.sum)
                for op in ops if op.wall_time is not None and op.cpu_time is not None
                and op.operator_name.startswith("MapBatches(")}
    except Exception:  # noqa: BLE001 - only the breakdown is lost
        return {}


# Blocks that must come back after the first tenth of the rows for a steady rate: two blocks
# arriving together made a sample of 20 read as 1,600 images/s where the job ran at 20.
MIN_BLOCKS = 6


def steady(arrivals: list[tuple[float, int]], seconds: float) -> tuple[float, float, bool]:
    """(rows/s after the first tenth, start-up s, whether that was measurable) from (time since
    launch, cumulative rows) per block; when too few blocks came, the whole run's rate and no
    start-up (the caller says so)."""
    n = arrivals[-1][1]
    k = next(i for i, (_, rows) in enumerate(arrivals) if rows >= n / 10)
    points = arrivals[k:]
    if len(points) - 1 < MIN_BLOCKS or points[-1][0] <= points[0][0]:
        return n / max(seconds, 1e-9), 0.0, False
    # The least-squares slope of rows over time: blocks of several actors come in waves, and a
    # rate counted from one block to the last would count the rest of its wave, made mostly
    # before it, as made after it (two actors, blocks of 32 arriving in pairs: 162 images/s for
    # a job that ran at 113); the fitted line goes through the middle of each wave.
    tm = sum(t for t, _ in points) / len(points)
    rm = sum(r for _, r in points) / len(points)
    var = sum((t - tm) ** 2 for t, _ in points)
    rate = sum((t - tm) * (r - rm) for t, r in points) / var
    if rate <= 0:
        return n / max(seconds, 1e-9), 0.0, False
    return rate, max(0.0, tm - rm / rate), True


def estimate(src: str, units: pa.Table, cfg: JobConfig, plan: Plan, ray_start_s: float, nodes: int,
             k: int, deadline_s: Optional[float] = None, every: Optional[float] = None) -> Estimate:
    """Time k units of `units` (sample_size) and project the whole."""
    part = sample_units(units, k)
    job = time_sample(part, cfg, plan, every)
    tier1 = (time_sample(part, replace(cfg, second=None), replace(plan, cascade=False), every)
             if cfg.second else None)
    shards = has_shards(units)
    images = round(job.images * units.num_rows / part.num_rows) if shards else units.num_rows
    return Estimate(src, units.num_rows, part.num_rows, images, nodes, plan.describe(), ray_start_s, job,
                    tier1, deadline_s, shards)


_MODES = {"new": "start a new run there", "resume": "resume the run there"}


def run_estimate(src: Optional[str], cfg: JobConfig, rc, manifest: Optional[str] = None,
                 sample: Optional[int] = None, deadline_s: Optional[float] = None,
                 out: Optional[str] = None) -> Estimate:
    """Plan SRC (or the manifest) and the resources as `zoomin scan` would, then time a sample."""
    from .scan import _init_ray, backends_text, plan_on_cluster, plan_units
    units = plan_units(src, manifest, cfg)
    if out:   # the checks the scan makes of --out, before anything runs (reads only)
        from . import runs
        from .scan import job_identity
        from .sinks import open_output
        output = open_output(out, cfg.source.storage)
        mode = runs.decide(output, job_identity(src, manifest, cfg), False, False, False).mode
        print(f"zoomin: estimate: --out {output.uri} is usable: the scan would {_MODES.get(mode, mode)}", flush=True)
    t0 = time.perf_counter()
    ray = _init_ray(rc)
    ray_start_s = time.perf_counter() - t0
    plan = plan_on_cluster(ray, rc, cfg)
    nodes = sum(1 for n in ray.nodes() if n.get("Alive") and n["Resources"].get("CPU", 0) > 0)
    k = sample_size(units.num_rows, plan, sample)
    print(f"zoomin: estimate: timing {k} of {units.num_rows} input(s) of {manifest or src} with backend "
          f"{backends_text(cfg)}; {plan.describe()}; nothing is written", flush=True)
    return estimate(manifest or src or "", units, cfg, plan, ray_start_s, max(1, nodes), k, deadline_s,
                    rc.progress_every if rc.progress else None)
