"""Runs over one output: start, resume after a kill, incremental nightly runs.

The unit of commit is one results file. Each appears whole or not at all (a rename locally, a
completed PUT on object stores), and holds complete rows only, so every uri found in the
output's files is done. `_run.json` is written when a run starts (state "running", with the
job's identity) and again when it ends ("complete", with its summary); each run also leaves
`_runs/<run id>.json`, the history of a nightly job.

Same command again on the same --out:
  - the last run is still going           -> refused (its driver's heartbeat is fresh; see
                                             `live_run`): two drivers would scan the same images
  - the last run did not finish (killed)  -> resume: plan minus the uris already in the output
  - the last run finished                 -> refused, unless --incremental (only new uris) or
                                             --rescan (clear the results, scan everything)
  - another job wrote it (SRC or input    -> refused, unless --overwrite
    format differ)
  - a setting that changes a row differs  -> resume and --incremental are refused, naming the
    (backend, model, prior, threshold,       setting: rows made under two settings would be mixed
    stages, view size, boxes, margin,        in one output; --rescan (redo every row under the
    limits, vlm options: `SETTINGS`)         new settings) or --overwrite
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Optional

import pyarrow as pa

from .sinks import RUN_RECORD, Output, OutputError, read_results, result_files, write_whole
from .sources import KIND_FILE
from .storage import is_local_fs

log = logging.getLogger(__name__)

RUNS_DIR = "_runs"
# A running scan rewrites its record with a fresh heartbeat this often; a record whose heartbeat
# is older than STALE_S is taken for a driver that died (nightly schedulers start the next run
# whether or not the last one ended; a crashed driver must not block its resume for long).
HEARTBEAT_S = 30.0
STALE_S = 120.0
# What an output is the results of: another SRC is another job.
IDENTITY = ("src", "input_format", "image_column")
# Every setting that changes what a row says (jobs/scan.py `job_identity` fills them): a resumed
# or incremental run must use the same, or the output would mix rows made two ways.
SETTINGS = ("backend", "model", "model_sha256", "prompt_version", "prior", "threshold", "stages", "view_size",
            "max_boxes", "margin", "min_crop_side", "max_pixels", "max_bytes", "vlm", "classifier", "examine_all",
            "c2pa_trust", "cascade")


@dataclass
class RunStart:
    run_id: str
    mode: str                                   # new | resume | incremental | rescan | overwrite
    job: dict
    done: dict = field(default_factory=dict)    # uri -> nbytes of the rows already in the output
    notes: list = field(default_factory=list)   # what the user should know (model changed, ...)
    record: dict = field(default_factory=dict)  # the run record as written at the start
    clear: bool = False                         # --overwrite / --rescan: remove what --out holds first


def read_record(out: Output) -> Optional[dict]:
    fs = out.fs
    path = out.join(RUN_RECORD)
    try:
        if not fs.exists(path):
            return None
        with fs.open(path, "r") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write_json(out: Output, name: str, record: dict) -> None:
    """Whole or not at all: a driver killed mid-write must not leave a record that reads as
    none (the output would then be refused as someone else's)."""
    path, text = out.join(name), json.dumps(record, indent=2, default=str)
    tmp = f"{path}.tmp-{os.getpid()}" if is_local_fs(out.fs) else None
    write_whole(out.fs, path, lambda f: f.write(text), tmp, mode="w")


def write_record(out: Output, record: dict) -> None:
    out.fs.makedirs(out.join(RUNS_DIR), exist_ok=True)  # a no-op on object stores
    _write_json(out, f"{RUNS_DIR}/{record['run_id']}.json", record)
    _write_json(out, RUN_RECORD, record)


def write_current(out: Output, record: dict) -> None:
    """Rewrite only `_run.json` (the heartbeat; the run's history file keeps its start record)."""
    _write_json(out, RUN_RECORD, record)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True   # someone else's process
    try:  # a killed driver not yet reaped by its parent is a zombie: dead for our purpose
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def live_run(record: Optional[dict], now: Optional[float] = None) -> Optional[str]:
    """If the run in `record` still looks alive, a description of it; None if it ended or died.
    Alive: state "running" with a heartbeat younger than STALE_S, and, when it was started on
    this machine, its driver process still there (a driver killed here is seen at once)."""
    if not record or record.get("state") != "running" or record.get("heartbeat") is None:
        return None   # ended, or written before heartbeats were recorded
    age = (time.time() if now is None else now) - float(record["heartbeat"])
    if age > STALE_S:
        return None
    host, pid = record.get("host"), record.get("pid")
    if host == socket.gethostname() and pid and (int(pid) == os.getpid() or not _pid_alive(int(pid))):
        return None   # its driver is gone (or is this process, whose earlier scan failed)
    return (f"run {record.get('run_id')} started {record.get('started')} by process {pid} on {host}, "
            f"last heartbeat {max(0.0, age):.0f}s ago")


class Heartbeat:
    """While a run goes on, rewrite its record with the time every `every` seconds (a daemon
    thread on the driver), so that another run on the same output can tell it is alive."""

    def __init__(self, out: Output, record: dict, every: float = HEARTBEAT_S):
        self.out, self.record, self.every = out, record, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="zoomin-heartbeat", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            try:
                write_current(self.out, {**self.record, "heartbeat": time.time()})
            except Exception as e:  # noqa: BLE001 - a missed beat must not stop the scan
                log.warning("could not refresh the run record: %s", e)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()   # no beat may land after the final record


def decide(out: Output, job: dict, overwrite: bool, incremental: bool, rescan: bool) -> RunStart:
    """How this run relates to what the output holds. Reads only: the job calls it before it
    starts Ray, so that a refused --out costs the user no cluster start-up."""
    fs = out.fs
    run = RunStart(uuid.uuid4().hex[:8], "new", job)
    try:
        if fs.exists(out.path) and fs.isfile(out.path):
            raise OutputError(f"{out.uri} exists and is not a folder")
        files = fs.find(out.path, withdirs=False) if fs.exists(out.path) else []
    except OSError as e:
        raise OutputError(f"{out.uri}: cannot use it as output: {e}") from None
    if is_local_fs(fs):
        _check_writable(out)
    last = read_record(out)
    alive = live_run(last) if files else None
    if alive:  # even --overwrite: clearing an output another driver is writing loses its rows
        raise OutputError(f"{out.uri} is being written by another run ({alive}); two runs at once would scan "
                          f"the same images twice. Wait for it to end; if its driver died on another machine, "
                          f"run again once its heartbeat is {STALE_S:.0f}s old")
    if files and not overwrite:
        if last is None:
            raise OutputError(f"{out.uri} is not empty ({len(files)} file(s)) and holds no zoomin run record; "
                              "choose a new --out or pass --overwrite to replace it")
        before = last.get("job", {})
        differs = [k for k in IDENTITY if before.get(k) != job.get(k)]
        if differs:
            was = ", ".join(f"{k} was {before.get(k)!r}" for k in differs)
            raise OutputError(f"{out.uri} holds the results of another job ({was}); "
                              "choose a new --out or pass --overwrite to replace them")
        if rescan:
            run.mode = "rescan"
        elif last.get("state") != "complete":
            run.mode = "resume"
        elif incremental:
            run.mode = "incremental"
        changed = [k for k in SETTINGS if before.get(k) != job.get(k)]
        if run.mode == "new" and changed:   # --incremental would be refused for the settings: say so now
            raise OutputError(f"{out.uri} already holds a complete run of this job, made with other settings "
                              f"({', '.join(changed)}); pass --rescan to scan everything again with these "
                              "settings, or choose a new --out")
        if run.mode == "new":
            raise OutputError(f"{out.uri} already holds a complete run of this job; pass --incremental to "
                              "scan only images added since, --rescan to scan everything again, or choose a new --out")
        if changed and run.mode != "rescan":
            said = lambda v: "not set" if v is None else repr(v)  # noqa: E731
            was = "; ".join(f"{k} was {said(before[k])}, now {said(job.get(k))}" if k in before else
                            f"{k} is {said(job.get(k))} now and was not recorded (an earlier version wrote it)"
                            for k in changed)
            raise OutputError(f"{out.uri} was made with other settings ({was}); its rows and this run's would "
                              f"differ in how they were made. Pass --rescan to scan everything again with these "
                              f"settings, use the earlier settings, or choose a new --out")
        for k in changed:
            run.notes.append(f"{k} changed since the last run ({before.get(k)!r} -> {job.get(k)!r}); "
                             "--rescan redoes every row with the new setting")
    if files and (overwrite or rescan):
        run.mode = "overwrite" if overwrite else "rescan"
        run.clear = True
    return run


def _check_writable(out: Output) -> None:
    """A local --out must be, or be creatable under, a writable folder (checked before any
    cluster starts; object stores say so only when written to, which `begin` reports)."""
    path = out.path
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    if not os.path.isdir(path):
        raise OutputError(f"{out.uri}: cannot create it: {path} is not a folder")
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"{out.uri}: cannot write there: {path} is not writable")


def begin(out: Output, run: RunStart) -> RunStart:
    """Act on the decision: clear the output if asked, read what a resumed or incremental run
    has done, and record that the run started."""
    fs = out.fs
    try:
        if run.clear:
            fs.rm(out.path, recursive=True)
        if run.mode == "resume":
            wait_until_quiet(out)
        if run.mode == "resume" or (run.mode == "incremental" and not run.done):
            run.done = read_done(out)
        fs.makedirs(out.path, exist_ok=True)
        run.record = {"run_id": run.run_id, "state": "running", "mode": run.mode, "job": run.job,
                      "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                      "already_done": len(run.done), "host": socket.gethostname(), "pid": os.getpid(),
                      "heartbeat": time.time()}
        write_record(out, run.record)
    except OSError as e:  # a read-only mount, a path under a file, a bucket we may not write to
        raise OutputError(f"{out.uri}: cannot write there: {type(e).__name__}: {e}") from None
    return run


def read_done(out: Output) -> dict:
    """uri -> nbytes of every row committed in the output."""
    t = read_results(out.uri, ["uri", "nbytes"], out.storage)
    return dict(zip(t.column("uri").to_pylist(), t.column("nbytes").to_pylist()))


def changed(units: pa.Table, done: dict) -> list[str]:
    """Objects whose listed size differs from the bytes their row was made from: content
    replaced under the same key since it was scanned (incremental runs report these)."""
    out = []
    for uri, size, kind in zip(units.column("uri").to_pylist(), units.column("size").to_pylist(),
                               units.column("kind").to_pylist()):
        if kind == KIND_FILE and size is not None and size >= 0 and done.get(uri) and done[uri] != size:
            out.append(uri)
    return out


def wait_until_quiet(out: Output, quiet_s: float = 3.0, limit_s: float = 60.0) -> None:
    """A killed run's workers may still be finishing a results file for a moment: wait until
    the output has not changed for `quiet_s` before reading what is done."""
    t_end, last, since = time.time() + limit_s, None, time.time()
    while time.time() < t_end:
        now = sorted(result_files(out))
        if now != last:
            last, since = now, time.time()
        elif time.time() - since >= quiet_s:
            return
        time.sleep(0.5)
        out.fs.invalidate_cache()


def remaining(units: pa.Table, done) -> pa.Table:
    """The plan minus what is done. Objects: dropped when their uri has a row. Shards: dropped
    when the shard has a row of its own (it could not be read); otherwise its finished members
    are listed in `skip`, and the reader passes over them."""
    if not done:
        return units
    members: dict = defaultdict(list)
    for u in done:
        if "#" in u:
            shard, member = u.rsplit("#", 1)
            members[shard].append(member)
    keep, skips = [], []
    for i, (uri, kind) in enumerate(zip(units.column("uri").to_pylist(), units.column("kind").to_pylist())):
        if uri in done:
            continue
        keep.append(i)
        skips.append(json.dumps(members[uri]) if kind != KIND_FILE and uri in members else None)
    t = units.take(pa.array(keep, pa.int64()))
    return t.set_column(t.schema.get_field_index("skip"), "skip", pa.array(skips, pa.string()))

