"""The stall watchdog: it interrupts the pipeline's thread only when a node was lost and
nothing was committed for the stall time."""
from __future__ import annotations

import time

import pytest

from jobs.watchdog import Stalled, Watchdog


def _wait(seconds: float) -> float:
    """Stands in for Ray Data's output loop: a Python loop that polls."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        time.sleep(0.01)
    return time.monotonic() - t0


def test_a_lost_node_and_no_commits_interrupt_the_pipeline_thread():
    nodes = [{"a", "b", "c"}]
    calls = {"n": 0}

    def alive():
        calls["n"] += 1
        return nodes[0] if calls["n"] < 3 else {"a", "b"}   # node c dies

    t0 = time.monotonic()
    with pytest.raises(Stalled):
        with Watchdog(lambda: ["part-0"], stall_s=0.5, poll_s=0.05, nodes=alive) as dog:
            _wait(10)
    assert dog.fired and dog.lost == {"c"}
    assert time.monotonic() - t0 < 5


def test_no_lost_node_means_slow_not_stalled():
    with Watchdog(lambda: ["part-0"], stall_s=0.2, poll_s=0.05, nodes=lambda: {"a", "b"}) as dog:
        _wait(1.0)
    assert not dog.fired


def test_commits_after_a_lost_node_keep_it_running():
    files: list = []

    def progress():
        files.append(len(files))   # a new results file at every look
        return list(files)

    alive = iter([{"a", "b"}] + [{"a"}] * 1000)
    with Watchdog(progress, stall_s=0.3, poll_s=0.05, nodes=lambda: next(alive)) as dog:
        _wait(1.0)
    assert dog.lost == {"b"} and not dog.fired


def test_zero_turns_it_off():
    with Watchdog(lambda: [], stall_s=0, poll_s=0.01, nodes=lambda: set()) as dog:
        _wait(0.2)
    assert not dog._thread.is_alive() and not dog.fired
