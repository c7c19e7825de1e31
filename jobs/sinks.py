"""Sinks: the output folder, the Parquet results, and the run record written beside them."""
from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow.dataset as pads

from zoomin_core.schema import RESULT_SCHEMA

RUN_RECORD = "_run.json"   # leading underscore: Parquet readers skip it


class OutputError(Exception):
    pass


def prepare_output(out: str, overwrite: bool) -> Path:
    """Refuse to mix a new run into an old one's files (that would duplicate rows)."""
    if "://" in out and not out.startswith("file://"):
        raise OutputError(f"{out}: only local output folders are supported by this version")
    path = Path(out.removeprefix("file://"))
    if path.exists() and not path.is_dir():
        raise OutputError(f"{out} exists and is not a folder")
    if path.exists() and any(path.iterdir()):
        if not overwrite:
            raise OutputError(f"{out} is not empty; choose a new --out or pass --overwrite to replace it")
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def read_results(path: str | Path, columns: list[str] | None = None):
    """All result rows under `path` as one Arrow table with the declared schema."""
    files = sorted(str(p) for p in Path(path).rglob("*.parquet"))
    if not files:
        return RESULT_SCHEMA.empty_table().select(columns) if columns else RESULT_SCHEMA.empty_table()
    return pads.dataset(files, schema=RESULT_SCHEMA, format="parquet").to_table(columns=columns)


@dataclass
class Summary:
    src: str
    out: str
    inputs: int
    rows: int = 0
    unique_uris: int = 0
    by_status: dict = field(default_factory=dict)
    by_verdict: dict = field(default_factory=dict)
    flipped: int = 0
    seconds: float = 0.0
    plan: str = ""
    backend: str = ""
    model: str = ""
    stages: str = ""

    @property
    def images_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    @property
    def complete(self) -> bool:
        """Exactly one row per input: nothing lost, nothing duplicated."""
        return self.rows == self.inputs == self.unique_uris

    def text(self) -> str:
        status = ", ".join(f"{k} {v}" for k, v in sorted(self.by_status.items())) or "-"
        verdict = ", ".join(f"{k} {v}" for k, v in sorted(self.by_verdict.items())) or "-"
        lines = [
            f"zoomin: {self.rows} row(s) for {self.inputs} input(s) in {self.seconds:.1f}s "
            f"({self.images_per_s:.2f} images/s)",
            f"  verdicts: {verdict}",
            f"  status:   {status}",
            f"  first look overturned by zooming in: {self.flipped}",
            f"  model:    {self.model} ({self.stages})",
            f"  results:  {self.out}",
        ]
        if not self.complete:
            lines.append(f"  WARNING: expected exactly one row per input; got {self.rows} rows, "
                         f"{self.unique_uris} distinct uris for {self.inputs} inputs")
        return "\n".join(lines)


def summarise(out: Path, summary: Summary) -> Summary:
    t = read_results(out, ["uri", "status", "verdict", "initial_verdict", "model"])
    summary.rows = t.num_rows
    summary.unique_uris = len(set(t.column("uri").to_pylist()))
    summary.by_status = dict(Counter(t.column("status").to_pylist()))
    summary.by_verdict = dict(Counter(v for v in t.column("verdict").to_pylist() if v))
    summary.flipped = sum(1 for a, b in zip(t.column("initial_verdict").to_pylist(),
                                            t.column("verdict").to_pylist()) if a and b and a != b)
    models = {m for m in t.column("model").to_pylist() if m}
    summary.model = ", ".join(sorted(models)) or summary.model
    (out / RUN_RECORD).write_text(json.dumps(
        {**asdict(summary), "images_per_s": round(summary.images_per_s, 3), "complete": summary.complete},
        indent=2))
    return summary
