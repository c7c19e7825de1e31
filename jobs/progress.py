"""Progress of a scan, as a user and a nightly job's log read it: images done of the total, the
rate and the time left.

The driver counts committed rows (results files are the unit of commit, see sinks.py): a thread
lists this run's files every `poll_s` and reads the row count of each new one from its Parquet
footer. On a terminal one line is redrawn in place; in a log (not a terminal) a line is printed
every `every` seconds, and once at the end. Rows, not tasks: Ray Data's own "Total Progress: 0/?"
counts blocks of a stream whose size it does not know.
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from typing import Callable, Optional, TextIO

log = logging.getLogger(__name__)

WINDOW_S = 60.0   # the rate (and so the ETA) is measured over the last minute: start-up is not steady


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def line(done: int, total: Optional[int], rate: Optional[float], elapsed: float) -> str:
    """'120/480 images (25%), 9.8 images/s, 0:37 left' (no total: shards hold an unknown number)."""
    text = f"{done}/{total} images ({100 * done / total:.0f}%)" if total else f"{done} images"
    if rate:
        text += f", {rate:.1f} images/s"
        if total and done < total:
            text += f", {_clock((total - done) / rate)} left"
    return f"{text}, {_clock(elapsed)} elapsed"


class Progress:
    """Context manager around the pipeline. `count()` returns the rows committed so far."""

    def __init__(self, count: Callable[[], int], total: Optional[int], every: float = 30.0,
                 stream: TextIO | None = None, tty: Optional[bool] = None, poll_s: Optional[float] = None):
        self.count, self.total, self.every = count, total, every
        self.stream = stream or sys.stderr
        if tty is None:   # stderr may be a pipe now that filters Ray's noise (quiet.py)
            from .quiet import stderr_is_tty
            tty = stderr_is_tty() if self.stream is sys.stderr else self.stream.isatty()
        self.tty = tty
        self.poll_s = poll_s or (1.0 if self.tty else min(5.0, every))
        self.done = 0
        self._t0 = time.monotonic()
        self._samples: deque = deque()   # (time, done) over the last WINDOW_S
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="zoomin-progress", daemon=True)

    def __enter__(self) -> "Progress":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._update()
        self._print(final=True)

    def rate(self) -> Optional[float]:
        if len(self._samples) < 2:
            return None
        (t0, d0), (t1, d1) = self._samples[0], self._samples[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 and d1 > d0 else None

    def _update(self) -> None:
        try:
            self.done = self.count()
        except Exception as e:  # noqa: BLE001 - a failed listing must not stop the scan
            log.debug("progress: cannot count rows: %s", e)
            return
        now = time.monotonic()
        self._samples.append((now, self.done))
        while self._samples and now - self._samples[0][0] > WINDOW_S:
            self._samples.popleft()

    def text(self) -> str:
        return line(self.done, self.total, self.rate(), time.monotonic() - self._t0)

    def _print(self, final: bool = False) -> None:
        if self.tty:
            self.stream.write(f"\r\033[Kzoomin: {self.text()}" + ("\n" if final else ""))
        else:
            self.stream.write(f"zoomin: progress: {self.text()}\n")
        self.stream.flush()

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(self.poll_s):
            self._update()
            if self.tty or time.monotonic() - last >= self.every:
                last = time.monotonic()
                self._print()
