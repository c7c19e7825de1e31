"""`zoomin evaluate RESULTS --labels LABELS`: join a scan's rows with labels and report metrics.

Labels: JSONL (one object per line) or CSV, with `file` (a path relative to the labels file) or
`uri` (as written in the results), `label` (`real` / `generated`), and optionally `kind`,
`source`, `split` and `boxes` ([[x1, y1, x2, y2], ...] in original pixels; a JSON string in CSV).
Rows join on the full path; where that finds nothing, on the file name if it is unique.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Optional

from zoomin_core.evaluate import Item, report

from .sinks import read_results
from .storage import StorageConfig, is_remote


class EvaluateError(Exception):
    pass


def read_labels(path: str) -> list[dict]:
    p = Path(path)
    if not p.exists():
        raise EvaluateError(f"{path}: no such labels file")
    text = p.read_text()
    if p.suffix.lower() == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        for r in rows:
            if isinstance(r.get("boxes"), str) and r["boxes"].strip():
                r["boxes"] = json.loads(r["boxes"])
    else:
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    for r in rows:
        if "uri" not in r and "file" not in r:
            raise EvaluateError(f"{path}: every label needs 'file' or 'uri': {r}")
        if r.get("label") not in ("real", "generated"):
            raise EvaluateError(f"{path}: label must be 'real' or 'generated': {r}")
        r["uri"] = r.get("uri") or str((p.parent / r["file"]).resolve())
    return rows


def join(results: list[dict], labels: list[dict]) -> tuple[list[Item], int]:
    """Items for every label that has a result row; and how many labels had none."""
    by_uri = {r["uri"]: r for r in results}
    by_name: dict[str, list[dict]] = {}
    for r in results:
        by_name.setdefault(Path(r["uri"]).name, []).append(r)
    items, missing = [], 0
    for lab in labels:
        row = by_uri.get(lab["uri"])
        if row is None:
            same = by_name.get(Path(lab["uri"]).name, [])
            row = same[0] if len(same) == 1 else None
        if row is None:
            missing += 1
            continue
        items.append(Item(
            label=int(lab["label"] == "generated"), status=row["status"], score=row["score"],
            verdict=row["verdict"], initial_verdict=row["initial_verdict"],
            boxes=tuple((b["x1"], b["y1"], b["x2"], b["y2"]) for b in row["boxes"] or []),
            ref_boxes=tuple(tuple(b[:4]) for b in lab.get("boxes") or []),
            kind=lab.get("kind") or "", source=lab.get("source") or "",
            width=row["width"] or 0, height=row["height"] or 0))
    return items, missing


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


COLUMNS = ("images", "errors", "accuracy", "first_accuracy", "precision", "recall", "f1", "roc_auc",
           "ece", "ece_floor", "mean_iou", "region_recall", "flip_rate")


def format_report(rep: dict) -> str:
    lines = ["group".ljust(22) + "".join(c.rjust(15) for c in COLUMNS)]
    rows = [("overall", rep["overall"])]
    for g in ("kind", "source"):
        rows += [(f"{g}={k}", m) for k, m in rep.get(g, {}).items()]
    for name, m in rows:
        lines.append(name[:22].ljust(22) + "".join(_fmt(m.get(c)).rjust(15) for c in COLUMNS))
    return "\n".join(lines)


def run_evaluate(results: str, labels: str, split: Optional[str] = None, json_out: Optional[str] = None,
                 storage: StorageConfig = StorageConfig()) -> str:
    if not is_remote(results) and not Path(results).is_dir():
        raise EvaluateError(f"{results}: no such results folder")
    rows = read_results(results, storage=storage).to_pylist()
    labs = read_labels(labels)
    if split:
        labs = [r for r in labs if r.get("split") == split]
    items, missing = join(rows, labs)
    if not items:
        raise EvaluateError(f"no label matched a result row ({len(labs)} labels, {len(rows)} rows)")
    rep = report(items)
    rep["unmatched_labels"] = missing
    if json_out:
        Path(json_out).write_text(json.dumps(rep, indent=2))
    text = format_report(rep)
    if missing:
        text += f"\n{missing} label(s) had no result row"
    return text
