"""Identical bytes under different keys are examined once per run, across all model actors.

`image_id` is the sha256 of an image's bytes. One small registry actor per run (on the
driver's node, no CPU) holds the finished rows by image_id and the ids being examined right
now. Before examining a batch, a model actor claims its ids: ids already finished come back as
rows, ids claimed by another actor come back as pending, the rest are its own to examine.
After examining, it publishes its rows (or releases ids whose row is an error). A pending copy
waits for its original's row a bounded time, then is examined after all: the registry saves
work, it never holds a row back.

The registry also lists the run's model actors: when the driver abandons a stalled attempt
(watchdog.py) it stops them, so that a model call hung on a live node cannot keep its CPUs or
GPUs from the next attempt.

The registry keeps the most recent `max_rows` rows (about a kilobyte each): copies further
apart in the archive than that are examined again. If the registry is lost (its node died),
actors carry on without it.
"""
from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, replace

from zoomin_core.records import Prepared

log = logging.getLogger(__name__)

MAX_ROWS = 200_000
WAIT_S = 30.0     # longest a copy waits for its original's row before being examined itself


class ContentRegistry:
    """The Ray actor (created by `start`). Calls are small and in-memory."""

    def __init__(self, max_rows: int = MAX_ROWS):
        self.rows: OrderedDict = OrderedDict()   # image_id -> finished ResultRow, oldest first
        self.claims: dict = {}                   # image_id -> claiming actor
        self.max_rows = max_rows
        self.actors: list = []                   # handles of the model actors enrolled so far

    def enroll(self, actor) -> None:
        self.actors.append(actor)

    def take_actors(self) -> list:
        actors, self.actors = self.actors, []
        return actors

    def claim(self, ids: list, who: str) -> tuple[dict, list]:
        rows, pending = {}, []
        for i in ids:
            if i in self.rows:
                rows[i] = self.rows[i]
            elif self.claims.get(i, who) != who:
                pending.append(i)
            else:
                self.claims[i] = who
        return rows, pending

    def lookup(self, ids: list) -> tuple[dict, list]:
        """Finished rows among `ids`, and the ids still claimed (worth waiting for)."""
        rows = {i: self.rows[i] for i in ids if i in self.rows}
        return rows, [i for i in ids if i not in rows and i in self.claims]

    def publish(self, rows: dict, released: list) -> None:
        for i, r in rows.items():
            self.rows[i] = r
            self.rows.move_to_end(i)
            self.claims.pop(i, None)
        for i in released:
            self.claims.pop(i, None)
        while len(self.rows) > self.max_rows:
            self.rows.popitem(last=False)

    def drop_claims(self) -> None:
        """After an abandoned attempt: its claims will never be published."""
        self.claims.clear()


def start(run_id: str, max_rows: int = MAX_ROWS):
    """The registry of one run, on this (the driver's) node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    # Pinned (not soft): a soft affinity let the raylet spill it to a worker node (seen in the
    # three-node kill test). Lost with that node, it could no longer name the model actors to
    # stop, and the next attempt waited behind them for CPUs. It needs no resources, so it always
    # fits here, and this node lives as long as the driver does.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return ray.remote(ContentRegistry).options(name=f"zoomin-registry-{run_id}", num_cpus=0,
                                               scheduling_strategy=here).remote(max_rows)


@dataclass
class Pending:
    """A copy handed from the scan stage to the zoom stage: its bytes equal an image another
    actor claimed. The zoom stage takes that image's row, or examines this one itself."""
    prepared: Prepared


class Client:
    """A model actor's side. Every call tolerates a lost registry (it then examines everything)."""

    def __init__(self, handle, enroll: bool = False):
        self.handle = handle
        self.who = f"{os.getpid()}-{id(self)}"
        if handle is not None:
            import ray
            # Claims are made in the model actor's name, which Ray keeps when it restarts a dead
            # actor: the batch retried there finds its own claims. Made in the process's name,
            # they were another's, and the retried batch waited WAIT_S (30 s) for rows the dead
            # process would never publish.
            self.who = ray.get_runtime_context().get_actor_id() or self.who
            if enroll:
                handle.enroll.remote(ray.get_runtime_context().current_actor)

    def _call(self, method: str, *args):
        if self.handle is None:
            return None
        import ray
        try:
            return ray.get(getattr(self.handle, method).remote(*args), timeout=60)
        except Exception as e:  # noqa: BLE001 - RayActorError, timeouts: carry on without it
            log.warning("zoomin: content registry unavailable (%s); examining every copy", e)
            self.handle = None
            return None

    def claim(self, ids: list) -> tuple[dict, set]:
        r = self._call("claim", ids, self.who)
        return (r[0], set(r[1])) if r else ({}, set())

    def publish(self, rows: dict, released: list) -> None:
        if rows or released:
            self._call("publish", rows, released)

    def abandon_attempt(self) -> int:
        """Stops the model actors enrolled so far and forgets their claims; returns how many."""
        import ray
        actors = self._call("take_actors") or []
        for a in actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self._call("drop_claims")
        return len(actors)

    def wait_for(self, ids: list, wait_s: float = WAIT_S) -> dict:
        """Rows of `ids` as they are published; gives up on an id once nobody holds its claim
        or after `wait_s`."""
        found: dict = {}
        left, t_end, pause = list(ids), time.monotonic() + wait_s, 0.05
        while left:
            r = self._call("lookup", left)
            if r is None:
                break
            found.update(r[0])
            left = r[1]
            if not left or time.monotonic() > t_end:
                break
            time.sleep(pause)
            pause = min(1.0, pause * 2)
        return found


def share(row, p: Prepared):
    """`row` (the original's) under the copy's own uri, extras and timings."""
    return replace(row, uri=p.uri, decode_s=p.decode_s, scan_s=0.0, zoom_s=0.0)


def split_batch(prepared: list[Prepared], shared: dict, pending: set) -> tuple[list, dict]:
    """The images of a batch to examine here (error statuses included, one per image_id), and
    for the rest the index of the item their row comes from: `("batch", first)` or
    `("registry", id)` / `("pending", id)`."""
    from zoomin_core.records import STATUS_OK
    fresh, source, first = [], {}, {}
    for k, p in enumerate(prepared):
        if p.status != STATUS_OK:
            fresh.append(k)
        elif p.image_id in shared:
            source[k] = ("registry", p.image_id)
        elif p.image_id in pending:
            source[k] = ("pending", p.image_id)
        elif p.image_id in first:
            source[k] = ("batch", first[p.image_id])
        else:
            first[p.image_id] = k
            fresh.append(k)
    return fresh, source

