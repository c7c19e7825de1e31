"""Sinks: the output location (local folder or object-store prefix), the Parquet results, and the
run record written beside them.

A reader of the output never sees a half-written file: locally each file is written under
`_tmp/` and renamed into place; on object stores a PUT (or a multipart upload) only becomes
visible when complete. File names are fixed by the write task's index, so a write task that Ray
retries overwrites its own files instead of adding duplicates.
"""
from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Optional

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from zoomin_core.schema import RESULT_SCHEMA

from .storage import StorageConfig, filesystem, full_uri, is_local_fs

RUN_RECORD = "_run.json"   # leading underscore: Parquet readers skip it
TMP_DIR = "_tmp"


class OutputError(Exception):
    pass


@dataclass(frozen=True)
class Output:
    uri: str                  # as the user gave it (normalised: no trailing slash)
    path: str                 # inside the filesystem
    storage: StorageConfig = field(default_factory=StorageConfig, repr=False)

    @property
    def fs(self):
        return filesystem(self.uri, self.storage)[0]

    def join(self, name: str) -> str:
        return f"{self.path}/{name}"


def open_output(out: str, storage: StorageConfig = StorageConfig()) -> Output:
    fs, path = filesystem(out.rstrip("/"), storage)
    return Output(full_uri(fs, path), path, storage)


def write_whole(fs, path: str, write: Callable, tmp: Optional[str] = None, mode: str = "wb") -> None:
    """write(f) into `path`, which appears whole or not at all: on an object store an object is
    visible only once its upload completes; on a local disk (give `tmp`, a path on the same
    filesystem) the file is written there first and renamed into place."""
    with fs.open(tmp or path, mode) as f:
        write(f)
    if tmp:
        fs.mv(tmp, path)  # rename: atomic on one filesystem


def _write_table(fs, path: str, table: pa.Table, local: bool, tmp_dir: str) -> None:
    tmp = None
    if local:
        tmp = f"{tmp_dir}/{path.rsplit('/', 1)[-1]}.{uuid.uuid4().hex[:8]}"
        fs.makedirs(tmp_dir, exist_ok=True)
    write_whole(fs, path, lambda f: pq.write_table(table, f), tmp)


def _datasink_base():
    from ray.data import Datasink
    return Datasink


def make_parquet_sink(out: Output, rows_per_file: Optional[int], run_id: str):
    """A Ray Data Datasink writing result blocks as Parquet files of at most `rows_per_file` rows."""

    class ParquetResults(_datasink_base()):
        def get_name(self) -> str:
            return "WriteResults"

        @property
        def min_rows_per_write(self) -> Optional[int]:
            return rows_per_file

        def write(self, blocks: Iterable, ctx) -> int:
            tables = [b if isinstance(b, pa.Table) else pa.Table.from_pandas(b) for b in blocks]
            tables = [t.select(RESULT_SCHEMA.names).cast(RESULT_SCHEMA) for t in tables if t.num_rows]
            if not tables:
                return 0
            table = pa.concat_tables(tables)
            step = rows_per_file or table.num_rows
            fs, local = out.fs, is_local_fs(out.fs)
            for i, start in enumerate(range(0, table.num_rows, step)):
                name = f"part-{run_id}-{ctx.task_idx:06d}-{i:04d}.parquet"
                _write_table(fs, out.join(name), table.slice(start, step), local, out.join(TMP_DIR))
            return table.num_rows

        def on_write_complete(self, write_result) -> None:
            fs = out.fs
            if is_local_fs(fs) and fs.exists(out.join(TMP_DIR)):
                fs.rm(out.join(TMP_DIR), recursive=True)

    return ParquetResults()


class RowCounter:
    """Rows committed under `out` in files whose name starts with part-<run_id> (this run's, and
    its restarts'), each file's count read once from its Parquet footer: callable, for progress."""

    def __init__(self, out: Output, run_id: str):
        self.out, self.prefix, self.rows = out, f"part-{run_id}", {}

    def __call__(self) -> int:
        fs = self.out.fs
        for path in result_files(self.out):
            if path not in self.rows and path.rsplit("/", 1)[-1].startswith(self.prefix):
                with fs.open(path, "rb") as f:
                    self.rows[path] = pq.ParquetFile(f).metadata.num_rows
        return sum(self.rows.values())


def result_files(out: Output) -> list[str]:
    fs = out.fs
    # What is there now: s3fs caches listings, and then even answers `info` (which the Parquet
    # reader calls) from a listing taken before the file was written.
    fs.invalidate_cache(out.path)
    if not fs.exists(out.path):
        return []
    return sorted(p for p in fs.find(out.path, withdirs=False)
                  if p.endswith(".parquet") and f"/{TMP_DIR}/" not in p)


def read_results(path: str, columns: list[str] | None = None, storage: StorageConfig = StorageConfig(),
                 require: bool = False):
    """All result rows under `path` (folder or prefix) as one Arrow table with the declared schema.
    `require`: a path with neither results nor a run record is an OutputError (a mistyped
    folder), not an empty table."""
    out = open_output(str(path), storage)
    files = result_files(out)
    if require and not files and not out.fs.exists(out.join(RUN_RECORD)):
        raise OutputError(f"{out.uri}: no zoomin results there (no Parquet files, no {RUN_RECORD}); "
                          "give the folder or prefix that `zoomin scan --out` wrote")
    return _read_files(out, files, columns)


def _read_files(out: Output, files: list[str], columns: list[str] | None):
    if not files:
        return RESULT_SCHEMA.empty_table().select(columns) if columns else RESULT_SCHEMA.empty_table()
    return pads.dataset(files, schema=RESULT_SCHEMA, format="parquet",
                        filesystem=out.fs).to_table(columns=columns)


@dataclass
class Summary:
    src: str
    out: str
    inputs: int                # planned units (objects and shards)
    rows: int = 0
    unique_uris: int = 0
    files: int = 0
    by_status: dict = field(default_factory=dict)
    by_verdict: dict = field(default_factory=dict)
    flipped: int = 0
    seconds: float = 0.0
    plan: str = ""
    backend: str = ""
    model: str = ""
    stages: str = ""
    missing: list = field(default_factory=list)   # planned units without any row (first 20)
    shards: int = 0
    mode: str = "new"          # new | resume | incremental | rescan | overwrite
    new_rows: int = 0          # rows this run wrote (the others were there before)
    copies: int = 0            # scored rows whose bytes equal an earlier row's (they share its result)
    refused: int = 0           # manifest entries outside the allowed roots (read_error rows saying so)
    notes: list = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        return self.new_rows / self.seconds if self.seconds > 0 else 0.0

    @property
    def complete(self) -> bool:
        """Every planned unit has its row(s), and no uri appears twice: nothing lost, nothing duplicated."""
        return not self.missing and self.rows == self.unique_uris and self.rows >= self.inputs

    def text(self) -> str:
        status = ", ".join(f"{k} {v}" for k, v in sorted(self.by_status.items())) or "-"
        verdict = ", ".join(f"{k} {v}" for k, v in sorted(self.by_verdict.items())) or "-"
        what = f"{self.inputs} input(s)" + (f", {self.shards} of them shards" if self.shards else "")
        earlier = f", {self.rows - self.new_rows} from earlier runs ({self.mode})" if self.rows != self.new_rows else ""
        lines = [
            f"zoomin: {self.rows} row(s) for {what}; {self.new_rows} new in {self.seconds:.1f}s "
            f"({self.images_per_s:.2f} images/s, planning and Ray's start included){earlier}",
            f"  verdicts: {verdict}",
            f"  status:   {status}",
            f"  first look overturned by zooming in: {self.flipped}",
            *([f"  copies:   {self.copies} image(s) with the same bytes as another share its result"]
              if self.copies else []),
            f"  model:    {self.model} ({self.stages})",
            f"  results:  {self.out} ({self.files} Parquet file(s))",
        ]
        if self.refused:
            lines.append(f"  refused:  {self.refused} manifest entr{'y' if self.refused == 1 else 'ies'} outside the "
                         "allowed roots were not read (read_error rows say why; --allow-root allows more)")
        lines += [f"  note:     {n}" for n in self.notes]
        if not self.complete:
            lines.append(f"  WARNING: expected exactly one row per input; got {self.rows} rows, "
                         f"{self.unique_uris} distinct uris; inputs without a row: {self.missing[:5]}")
        return "\n".join(lines)


def summarise(out: Output, summary: Summary, planned: list[str], shard_uris: set[str]) -> Summary:
    files = result_files(out)  # listed once: on object stores a listing is a paged request
    t = _read_files(out, files, ["uri", "status", "error", "verdict", "initial_verdict", "model", "image_id",
                                 "decided_by"])
    uris = t.column("uri").to_pylist()
    summary.rows = t.num_rows
    summary.files = len(files)
    seen = set(uris)
    summary.unique_uris = len(seen)
    # A shard's rows carry "<shard>#<member>" (or the shard's own uri when it could not be read).
    seen_shards = {u.rsplit("#", 1)[0] for u in uris if "#" in u} | (seen & shard_uris)
    summary.missing = [u for u in planned if u not in (seen_shards if u in shard_uris else seen)][:20]
    summary.shards = len(shard_uris)
    summary.by_status = dict(Counter(t.column("status").to_pylist()))
    summary.refused = sum(1 for e in t.column("error").to_pylist() if e and e.startswith("refused"))
    ok_ids = [i for i, st in zip(t.column("image_id").to_pylist(), t.column("status").to_pylist()) if st == "ok"]
    summary.copies = len(ok_ids) - len(set(ok_ids))
    summary.by_verdict = dict(Counter(v for v in t.column("verdict").to_pylist() if v))
    # (a row provenance decided under --examine-all was not overturned by the zoom, but by its mark)
    summary.flipped = sum(1 for a, b, by in zip(t.column("initial_verdict").to_pylist(), t.column("verdict").to_pylist(),
                                                t.column("decided_by").to_pylist()) if a and b and a != b
                          and by != "provenance")
    models = {m for m in t.column("model").to_pylist() if m}
    summary.model = ", ".join(sorted(models)) or summary.model
    return summary


def summary_record(summary: Summary) -> dict:
    return {**asdict(summary), "images_per_s": round(summary.images_per_s, 3), "complete": summary.complete}
