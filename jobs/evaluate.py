"""`zoomin evaluate RESULTS --labels LABELS`: join a scan's rows with labels and report metrics.

Labels: JSONL (one object per line) or CSV/TSV, with `file` (a path relative to the labels file)
or `uri` (as written in the results), `label` (`real` / `generated`; also 0/1, fake, ai,
synthetic, authentic, any case), and optionally `kind`,
`source`, `split` and `boxes` ([[x1, y1, x2, y2], ...] in original pixels; a JSON string in CSV).
Rows join on the full path; where that finds nothing, on the file name if it is unique.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Optional

import numpy as np

from zoomin_core.evaluate import GROUPS, Item, escalation_band, report, threshold_at_fpr

from .sinks import OutputError, read_results
from .storage import StorageConfig, is_remote


class EvaluateError(Exception):
    pass


# Label spellings accepted (case-insensitive): what re-labelling teams' own files tend to say.
LABEL_WORDS = {"real": "real", "0": "real", "authentic": "real",
               "generated": "generated", "1": "generated", "fake": "generated", "ai": "generated",
               "synthetic": "generated"}


def read_labels(path: str) -> list[dict]:
    p = Path(path)
    if not p.is_file():
        raise EvaluateError(f"{path}: no such labels file")
    try:
        text = p.read_text(encoding="utf-8-sig")  # a BOM is what spreadsheet exports add
    except UnicodeDecodeError as e:
        raise EvaluateError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    if p.suffix.lower() in (".csv", ".tsv"):
        rows = list(csv.DictReader(text.splitlines(), delimiter="\t" if p.suffix.lower() == ".tsv" else ","))
        where = [f"row {i + 2}" for i in range(len(rows))]  # row 1 is the header
        for r, at in zip(rows, where):
            if isinstance(r.get("boxes"), str) and r["boxes"].strip():
                try:
                    r["boxes"] = json.loads(r["boxes"])
                except ValueError:
                    raise EvaluateError(f"{path} {at}: 'boxes' is not JSON ([[x1,y1,x2,y2], ...]): "
                                        f"{r['boxes'][:80]!r}") from None
    else:
        rows, where = [], []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                raise EvaluateError(f"{path} line {n}: not JSON ({e.msg}); labels are JSON lines, or CSV/TSV "
                                    "named .csv/.tsv") from None
            if not isinstance(row, dict):
                raise EvaluateError(f"{path} line {n}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
            where.append(f"line {n}")
    for r, at in zip(rows, where):
        if not (r.get("uri") or r.get("file")):
            raise EvaluateError(f"{path} {at}: every label needs 'file' or 'uri': {r}")
        label = LABEL_WORDS.get(str(r.get("label", "")).strip().lower())
        if label is None:
            raise EvaluateError(f"{path} {at}: label must be 'real' or 'generated' (or 0/1, fake, ai, "
                                f"synthetic, authentic), got {r.get('label')!r}")
        r["label"] = label
        boxes = r.get("boxes") or []
        if not (isinstance(boxes, list) and all(isinstance(b, (list, tuple)) and len(b) >= 4 and
                                                all(isinstance(v, (int, float)) for v in b[:4]) for b in boxes)):
            raise EvaluateError(f"{path} {at}: 'boxes' must be [[x1, y1, x2, y2], ...] in pixels, got {boxes!r:.80}")
        r["uri"] = r.get("uri") or str((p.parent / r["file"]).resolve())
    if not rows:
        raise EvaluateError(f"{path}: no labels in it")
    return rows


def matched(results: list[dict], labels: list[dict]) -> list[tuple[dict, Optional[dict]]]:
    """(label, its result row or None) per label: rows match by uri, or by file name when only
    one row has that name (labels written on another machine, or before the data moved)."""
    by_uri = {r["uri"]: r for r in results}
    by_name: dict[str, list[dict]] = {}
    for r in results:
        by_name.setdefault(Path(r["uri"]).name, []).append(r)
    out = []
    for lab in labels:
        row = by_uri.get(lab["uri"])
        if row is None:
            same = by_name.get(Path(lab["uri"]).name, [])
            row = same[0] if len(same) == 1 else None
        out.append((lab, row))
    return out


def join(results: list[dict], labels: list[dict]) -> tuple[list[Item], int]:
    """Items for every label that has a result row; and how many labels had none."""
    items, missing = [], 0
    for lab, row in matched(results, labels):
        if row is None:
            missing += 1
            continue
        items.append(Item(
            label=int(lab["label"] == "generated"), status=row["status"], score=row["score"],
            verdict=row["verdict"], initial_verdict=row["initial_verdict"],
            boxes=tuple((b["x1"], b["y1"], b["x2"], b["y2"]) for b in row["boxes"] or []),
            ref_boxes=tuple(tuple(b[:4]) for b in lab.get("boxes") or []),
            kind=lab.get("kind") or "", source=lab.get("source") or "", split=lab.get("split") or "",
            width=row["width"] or 0, height=row["height"] or 0))
    return items, missing


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


COLUMNS = ("images", "errors", "accuracy", "first_accuracy", "precision", "recall", "f1", "roc_auc",
           "ece", "ece_floor", "mean_iou", "region_recall", "flip_rate")


def format_report(rep: dict) -> str:
    columns = COLUMNS
    lines = ["group".ljust(22) + "".join(c.rjust(15) for c in columns)]
    rows = [("overall", rep["overall"])]
    for g in GROUPS:
        rows += [(f"{g}={k}", m) for k, m in rep.get(g, {}).items()]
    for name, m in rows:
        lines.append(name[:22].ljust(22) + "".join(_fmt(m.get(c)).rjust(15) for c in columns))
    return "\n".join(lines)


def operating_point(items: list[Item], fpr: float, recall: float) -> dict:
    ok = [it for it in items if it.status == "ok" and it.score is not None]
    y = np.array([it.label for it in ok])
    s = np.array([it.score for it in ok], dtype=np.float64)
    return {"target_fpr": fpr, "target_recall": recall, **threshold_at_fpr(y, s, fpr),
            "band": escalation_band(y, s, fpr, recall)}


def format_operating_point(op: dict) -> str:
    fpr = op["target_fpr"]
    if op["threshold"] is None:
        return f"operating point: no real image among the labelled rows, so no threshold for a {fpr:g} false-positive rate"
    t = op["threshold"]
    lines = [f"operating point for a false-positive rate of {fpr:g}, on {op['reals']} real and {op['generated']} "
             f"generated images:",
             f"  threshold {t:.4f}: {op['fpr']:.3f} of the real images flagged, recall "
             f"{_fmt(op['recall'])} -> zoomin scan --threshold {t:.4f}"]
    if not op["reliable"]:
        lines.append(f"  (only {op['reals']} real images: a rate of {fpr:g} rests on fewer than 5 of them; "
                     f"label at least {int(np.ceil(5 / fpr))} for a usable estimate)")
    b = op["band"]
    if b["low"] is not None:
        if b["low"] >= b["high"]:
            lines.append(f"  recall {op['target_recall']:g} is kept at that threshold alone: no band to escalate")
        else:
            lines.append(f"  cascade keeping recall {op['target_recall']:g}: --escalate {b['low']:.4f}:{b['high']:.4f} "
                         f"sends {b['escalated']:.3f} of these images to the second tier; recall at most "
                         f"{b['recall_ceiling']:.3f} (if the second tier judged every escalated image right)")
    return "\n".join(lines)


def run_evaluate(results: str, labels: str, split: Optional[str] = None, json_out: Optional[str] = None,
                 storage: StorageConfig = StorageConfig(), target_fpr: Optional[float] = None,
                 target_recall: float = 0.9) -> str:
    if not is_remote(results) and not Path(results).is_dir():
        raise EvaluateError(f"{results}: no such results folder")
    try:
        rows = read_results(results, storage=storage, require=True).to_pylist()
    except OutputError as e:
        raise EvaluateError(str(e)) from None
    labs = read_labels(labels)
    if split:
        labs = [r for r in labs if r.get("split") == split]
    items, missing = join(rows, labs)
    if not items:
        raise EvaluateError(f"no label matched a result row ({len(labs)} labels, {len(rows)} rows)")
    rep = report(items)
    rep["unmatched_labels"] = missing
    if target_fpr is not None:
        rep["operating_point"] = operating_point(items, target_fpr, target_recall)
    if json_out:
        Path(json_out).write_text(json.dumps(rep, indent=2))
    text = format_report(rep)
    if target_fpr is not None:
        text += "\n\n" + format_operating_point(rep["operating_point"])
    if missing:
        text += f"\n{missing} label(s) had no result row"
    return text
