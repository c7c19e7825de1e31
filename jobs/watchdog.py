"""Restarting a scan that stalls after losing a node.

When a worker node dies, Ray retries its tasks, but a Ray Data read task that was running
there can vanish without ever ending its output stream; the executor then waits for it forever
(ray-project/ray#62535, #62537: seen here in 2 of 4 runs of the three-node kill test). Nothing
inside the pipeline can tell such a task from a slow one, so the driver watches from outside:
a thread lists the output's results files (the unit of commit) and the cluster's live nodes.
When a node has died since the run began and no results file has been committed for
`stall_s` (in this attempt), it raises `Stalled` in the thread running the pipeline. Ray Data's output loop
shuts its executor down on any exception (actors and tasks released), and `run_scan` runs
what is still missing again, as a resume would after a kill. Without a lost node a quiet
pipeline is only slow (a big model on a slow device), and is left alone.
"""
from __future__ import annotations

import ctypes
import logging
import threading
import time
from typing import Callable, Optional

log = logging.getLogger(__name__)


class Stalled(Exception):
    """Raised in the pipeline's thread: a node was lost and no results were committed since."""


def alive_nodes() -> set:
    import ray
    return {n["NodeID"] for n in ray.nodes() if n.get("Alive")}


class Watchdog:
    """Context manager around one attempt of the pipeline. `progress()` returns something that
    changes whenever results are committed (the sorted list of results files)."""

    def __init__(self, progress: Callable[[], object], stall_s: float, poll_s: float = 2.0,
                 nodes: Optional[Callable[[], set]] = None, start_nodes: Optional[set] = None):
        # On object stores each look is a LIST of the output: not more often than needed.
        self.progress, self.stall_s, self.poll_s = progress, stall_s, max(poll_s, (stall_s or 0) / 20)
        self.nodes = nodes or (lambda: alive_nodes())
        self.start_nodes = start_nodes    # the nodes when the run began (default: at __enter__)
        self.lost: set = set()          # nodes that died since start_nodes
        self.fired = False
        self._stop = threading.Event()
        self._target = threading.get_ident()
        self._thread = threading.Thread(target=self._watch, name="zoomin-watchdog", daemon=True)

    def __enter__(self) -> "Watchdog":
        if self.stall_s and self.stall_s > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _watch(self) -> None:
        start_nodes = self.start_nodes if self.start_nodes is not None else self.nodes()
        last, since = self.progress(), time.monotonic()
        while not self._stop.wait(self.poll_s):
            try:
                now = self.progress()
                self.lost |= start_nodes - self.nodes()
            except Exception as e:  # noqa: BLE001 - a failed listing is no reason to stop watching
                log.warning("zoomin: watchdog: cannot check progress: %s", e)
                continue
            if now != last:
                last, since = now, time.monotonic()
            elif self.lost and time.monotonic() - since >= self.stall_s:
                self.fired = True
                # The pipeline's thread waits in Ray Data's output loop (pure Python, polling), so
                # an exception set asynchronously is raised there within a few milliseconds.
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._target), ctypes.py_object(Stalled))
                return
