"""Keep Ray's own noise off a user's terminal and log (unless --verbose).

Ray's core prints, from C++ straight to the driver's stderr, an error-level line for every
actor pool Ray Data starts ("... has constructor arguments in the object store and
max_restarts > 0 ...", ray-project/ray#57733): harmless, but it reads like a failure. No Python
logger or setting silences it without also changing what Ray writes to its own log files, so
the driver's stderr (file descriptor 2) is passed through a pipe that drops lines of that one
kind and forwards everything else unchanged, as it comes (a progress line without a newline
too).
"""
from __future__ import annotations

import atexit
import fcntl
import os
import re
import struct
import sys
import termios
import threading
import time

# Ray core's known-harmless lines: "[<date> <time> E <pid> <tid>] core_worker.cc:NNN: Actor ... "
NOISE = re.compile(rb"^\[[\d\- :,]+ [IWE] \d+ \d+\] core_worker\.cc:\d+: Actor with class name: .* has constructor "
                   rb"arguments in the object store and max_restarts > 0")

_state: dict = {}


def stderr_is_tty() -> bool:
    """Whether stderr was a terminal before `install` put a pipe in its place."""
    return _state.get("tty", sys.stderr.isatty())


def install() -> None:
    """Filter fd 2 through a pipe for the rest of this process (idempotent)."""
    if _state:
        return
    sys.stderr.flush()
    _state["tty"] = sys.stderr.isatty()
    real = os.dup(2)
    r, w = os.pipe()
    os.dup2(w, 2)
    os.close(w)
    _state.update(real=real, read=r)
    threading.Thread(target=_forward, args=(r, real), name="zoomin-stderr", daemon=True).start()
    atexit.register(_drain)


def _drain(timeout: float = 1.0) -> None:
    """At exit: put the real stderr back and let the thread forward what is still in the pipe
    (Ray's processes may hold its other end, so no end-of-file will come)."""
    sys.stderr.flush()
    os.dup2(_state["real"], 2)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        waiting = struct.unpack("i", fcntl.ioctl(_state["read"], termios.FIONREAD, b"\0\0\0\0"))[0]
        if not waiting:
            break
        time.sleep(0.01)
    time.sleep(0.02)   # the last chunk read is being written


def _forward(r: int, real: int) -> None:
    pending = b""
    while True:
        try:
            chunk = os.read(r, 65536)
        except OSError:
            return
        if not chunk:
            if pending:
                os.write(real, pending)
            return
        pending += chunk
        lines = pending.split(b"\n")
        pending = lines.pop()
        out = b"".join(line + b"\n" for line in lines if not NOISE.match(line))
        # A partial line that cannot be Ray's (a progress line redrawn with \r) goes out now.
        if pending and not pending.startswith(b"["):
            out, pending = out + pending, b""
        if out:
            os.write(real, out)


class _NoFreeCpuWarning:
    """Drops Ray Data's warning that a cluster with no free CPUs "will hang": a plan whose model
    actors decode their own images takes every CPU by design, and none of its tasks needs one."""

    def filter(self, record) -> bool:
        return "does not have any available CPUs" not in record.getMessage()


def drop_no_free_cpu_warning() -> None:
    """Install the filter once (it is logged by ray.data.dataset at each execution, --verbose only)."""
    import logging
    log = logging.getLogger("ray.data.dataset")
    if not any(isinstance(f, _NoFreeCpuWarning) for f in log.filters):
        log.addFilter(_NoFreeCpuWarning())

