"""Resource planning: how many model actors, with how much CPU/GPU each, batch sizes, and where
images are read and decoded.

The plan is computed from the cluster's resources before anything runs, and refused with a clear
message when it cannot run. Two ways to feed the model:

- decode tasks (GPU plans, split plans, --decode tasks): CPU tasks read and decode, and hand the
  model actors views and bytes through the object store. The trap here: Ray's default of one CPU
  per actor lets a model actor pool take every CPU on a small machine, the decode tasks never get
  scheduled, and the job hangs forever. So CPUs for the tasks are always reserved.
- in the actors (CPU-only plans): each model actor reads and decodes its own images. On CPUs the
  model and the decoding compete for the same cores anyway, and a decode task's images cost more
  CPU moved between processes than decoding them (pipeline_vs_loop.py: 5.5 ms per image in decode
  tasks against about 1 inside the actor; the scan 1.25x faster on 2 cores).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional


class PlanError(ValueError):
    """The requested plan cannot run on this cluster."""


@dataclass(frozen=True)
class Plan:
    actors: int              # model actors (each holds one copy of the model)
    actor_cpus: float        # CPUs reserved per actor (also its torch thread count, rounded up)
    actor_gpus: float        # GPUs per actor; fractional shares one GPU between actors
    task_cpus: float         # CPUs per read/decode task
    batch_size: int          # images per model call
    cluster_cpus: float
    cluster_gpus: float
    # Two model pools (scan, then zoom) with a CPU crop task between them, each pool's actors
    # taking half of every actor slot's CPU and GPU; on GPUs this keeps the full-resolution
    # decode and the cropping off the GPU actors. One pool (scan and zoom in the same actor) when off.
    split: bool = False
    # --cascade: one more pool, the second tier's, sharing every actor slot the same way.
    cascade: bool = False
    # The first pool's actors read and decode their own images (no decode tasks).
    decode_in_actors: bool = False

    @property
    def pools(self) -> int:
        return (2 if self.split else 1) + (1 if self.cascade else 0)

    @property
    def pool_cpus(self) -> float:
        return self.actor_cpus / self.pools

    @property
    def pool_gpus(self) -> float:
        return self.actor_gpus / self.pools

    @property
    def device(self) -> str:
        return "cuda" if self.actor_gpus > 0 else "cpu"

    @property
    def writers(self) -> int:
        """Write tasks at once. They take no CPU slot, so uncapped Ray Data runs one for every
        block ready; each new one waiting on a worker process made 4-5 processes (1.3 s of CPU
        each) in a 2-core scan's first seconds, where 2 keep up (writing is ~5 ms an image)."""
        return max(2, int(self.cluster_cpus))

    @property
    def threads(self) -> int:
        """torch threads per actor: its CPU share, rounded half up (1.5 CPUs -> 2 threads)."""
        return max(1, int(self.pool_cpus + 0.5))

    def describe(self) -> str:
        gpu = f", {self.pool_gpus:g} GPU" if self.actor_gpus else ""
        pools = (f"{self.actors} scan + {self.actors} zoom actor(s) x ({self.pool_cpus:g} CPU{gpu}), crop tasks "
                 "between them" if self.split else f"{self.actors} model actor(s) x ({self.pool_cpus:g} CPU{gpu})")
        feed = ("each reading and decoding its own images" if self.decode_in_actors
                else f"decode tasks {self.task_cpus:g} CPU each")
        if self.cascade:
            pools += f", then {self.actors} second-tier actor(s) x ({self.pool_cpus:g} CPU{gpu})"
        return (f"{pools}, {feed}, batch {self.batch_size}; cluster "
                f"{self.cluster_cpus:g} CPU / {self.cluster_gpus:g} GPU")


def make_plan(resources: dict, *, actors: Optional[int] = None, actor_cpus: Optional[float] = None,
              gpus_per_actor: float = 0.0, batch_size: Optional[int] = None,
              split: Optional[bool] = None, node_cpus: Optional[float] = None, cascade: bool = False,
              light: bool = True, decode: str = "auto") -> Plan:
    """resources: Ray's cluster_resources() map ({"CPU": 8.0, "GPU": 1.0, ...}).
    node_cpus: CPUs of the largest node (an actor cannot span nodes); default: all of them.
    split: separate scan and zoom pools (default: on when the actors use GPUs).
    light: every model of the job is small (the compact detector): small machines may hold a copy
    per core. Others (a VLM, a classifier checkpoint) get one actor there, with all its threads.
    decode: "actors", "tasks" or "auto" (in the actors on CPU-only plans of one pool)."""
    cpus = float(resources.get("CPU", 0))
    gpus = float(resources.get("GPU", 0))
    node_cpus = float(node_cpus or cpus)
    if cpus <= 0:
        raise PlanError("the cluster reports no CPUs")
    if gpus_per_actor < 0 or gpus_per_actor > 1 and gpus_per_actor != int(gpus_per_actor):
        raise PlanError(f"--gpus-per-actor must be a fraction <= 1 or a whole number, got {gpus_per_actor}")
    if gpus_per_actor > 0 and gpus == 0:
        raise PlanError("GPU actors were requested (--gpus-per-actor > 0) but the cluster has no GPUs")
    if decode not in ("auto", "actors", "tasks"):
        raise PlanError(f"--decode must be auto, actors or tasks, got {decode}")
    split = gpus_per_actor > 0 if split is None else split
    if decode == "actors" and split:
        raise PlanError("--decode actors needs one model pool: the split scan and zoom pools (the default with "
                        "GPUs) are fed by decode tasks; add --split-stages off")
    in_actors = decode == "actors" or (decode == "auto" and not split and not gpus_per_actor)

    if in_actors:
        # Nothing to reserve for decode tasks; a CPU in eight is left to the driver, Ray's own
        # processes and the writes (on 2 cores they took about a fifth of the CPU time).
        reserve = float(math.floor(cpus / 8))
    else:
        # Keep a quarter of the CPUs (at least half a CPU) for reading and decoding.
        reserve = max(0.5, cpus / 4) if cpus < 4 else max(1.0, math.floor(cpus / 4))
    if actor_cpus is None:
        # 1 CPU (one torch thread) per actor. Fewer than 4 CPUs: what the reserve leaves, shared
        # by one actor per core (2 cores: two of 0.75 CPU, or of 1 when they decode), or by the
        # --actors asked for; with GPUs or a large model, one actor takes it. On 2 cores two
        # one-thread actors were never slower than one of two threads beyond the noise (with
        # decode tasks 1.1-1.3x faster in most runs; decoding in the actors 82.5 against 75.8
        # images/s; pipeline_vs_loop.py).
        free = cpus - reserve
        one = gpus_per_actor or not light
        actor_cpus = 1.0 if cpus >= 4 else free / (actors or (1 if one else math.ceil(free - 1e-9)))
        if not in_actors and node_cpus < cpus and actor_cpus > node_cpus - 0.5:
            # Several small nodes: an actor cannot span them, and some node must keep room for a
            # decode task (0.5 CPU). Two nodes of 1 CPU with an actor of 0.75 on each left 0.25 on
            # both: the decode tasks waited forever.
            actor_cpus = max(0.25, node_cpus / 2)
        actor_cpus = min(actor_cpus, node_cpus)
    if actors is None:
        if gpus_per_actor > 0:
            actors = int(gpus // gpus_per_actor)
        else:
            actors = max(1, int((cpus - reserve) // actor_cpus + 1e-9))
    if actors < 1:
        raise PlanError("the plan has no model actors: not enough GPUs for --gpus-per-actor")
    if actor_cpus > node_cpus + 1e-9:
        raise PlanError(f"an actor of {actor_cpus:g} CPUs fits on no node (the largest has {node_cpus:g}); "
                        "use a smaller --actor-cpus")
    if gpus_per_actor > 0 and actors * gpus_per_actor > gpus + 1e-9:
        raise PlanError(f"{actors} actors x {gpus_per_actor:g} GPU need more than the cluster's {gpus:g} GPUs")
    left = cpus - actors * actor_cpus
    if in_actors and left < -1e-9:
        raise PlanError(f"{actors} actors x {actor_cpus:g} CPU need more than the cluster's {cpus:g} CPUs; "
                        "the job would wait forever. Use fewer --actors or a smaller --actor-cpus.")
    if not in_actors and left < 0.5 - 1e-9:
        raise PlanError(
            f"{actors} actors x {actor_cpus:g} CPU leave {max(left, 0):g} of the cluster's {cpus:g} CPUs "
            "for reading and decoding; the job would stall. Use fewer --actors or a smaller --actor-cpus.")
    task_cpus = 0.0 if in_actors else min(1.0, left)
    if batch_size is None:
        # Actors that decode take 32 images a call: each call costs the actor a round of registry and
        # crash-guard bookkeeping and the driver a block to schedule and a file to write (8 a call
        # scanned 68 images/s on 2 cores, 32 a call 93). A large model keeps 8: its batch is its memory.
        batch_size = 16 if gpus_per_actor > 0 else 32 if in_actors and light else 8
    if batch_size < 1:
        raise PlanError("--batch-size must be at least 1")
    return Plan(actors, actor_cpus, gpus_per_actor, task_cpus, batch_size, cpus, gpus, split, cascade, in_actors)
