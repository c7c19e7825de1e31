"""The page to look through a sample of `zoomin annotate`'s output: the report page of scans
(jobs/report.py), fed with annotations written as result rows. Each shown example has its image,
its regions drawn and cropped, the label as its verdict, query 1's explanation and query 2's
rationale; every dropped or failed image is listed with its reason."""
from __future__ import annotations

import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .storage import StorageConfig


def _as_result(r: dict, annotator: str) -> dict:
    ok = r["status"] == "ok"
    # a box takes its label's colour: a real image's region is the one the zoom clears
    mark = 1.0 if r["label"] == "generated" else 0.0
    boxes = [{"x1": int(b[0]), "y1": int(b[1]), "x2": int(b[2]), "y2": int(b[3]), "score": mark}
             for b in (r.get("boxes") or [])] if ok else []
    return {"uri": r["uri"], "image_id": r.get("image_id") or r["uri"], "status": r["status"], "error": r.get("error"),
            "width": r.get("width"), "height": r.get("height"), "verdict": r["label"] if ok else None,
            "score": (1.0 if r["label"] == "generated" else 0.0) if ok else None,
            "initial_verdict": r["label"] if ok else None, "boxes": boxes, "explanation": r.get("explanation"),
            "rationale": (f"Labelled {r['label']}. {r.get('rationale') or ''}" if ok else None),
            "model": annotator}


def sample(rows: list[dict], n: int) -> list[dict]:
    """Up to n examples spread evenly over the dataset (uri order), and every image left out."""
    ok = sorted((r for r in rows if r["status"] == "ok"), key=lambda r: r["uri"])
    step = max(1, len(ok) / max(1, n))
    picked = [ok[int(i * step)] for i in range(min(n, len(ok)))]
    return picked + [r for r in rows if r["status"] != "ok"]


def write_review(rows: list[dict], out: str, n: int, annotator: str,
                 storage: StorageConfig = StorageConfig()) -> str:
    """Write the page of a sample of `rows` (annotate's Parquet rows) to `out`; returns its path."""
    from zoomin_core.schema import RESULT_SCHEMA

    from .report import write_report
    shown = sample(rows, n)
    with tempfile.TemporaryDirectory(prefix="zoomin-review-") as tmp:
        table = pa.Table.from_pylist([_as_result(r, annotator) for r in shown], schema=RESULT_SCHEMA)
        pq.write_table(table, Path(tmp) / "part-0.parquet")
        write_report(tmp, out, limit=n, storage=storage)
    return out
