"""`zoomin relabel RESULTS --labels L --out REVIEW`: where a scan and the existing labels disagree.

For teams re-labelling a corpus: every scanned image whose label and verdict differ, the most
confident disagreements first (a 'real' label the model scores 0.99 generated before one it
scores 0.61), with the boxes and rationale that make the model's case. REVIEW gets
`disagreements.parquet` (the scan's rows plus `label` and `confidence`, in that order) and
`review.html` (the report page of those rows, the first 500 in that order when there are more,
sorted on the page by score; each rationale opened by what the label said).
"""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .evaluate import EvaluateError, matched, read_labels
from .sinks import read_results
from .storage import StorageConfig


def disagreements(results: list[dict], labels: list[dict]) -> list[dict]:
    """Rows whose verdict contradicts their label, with `label` and `confidence` (the score's
    distance from 0.5 towards the verdict, 0..0.5), most confident first."""
    out = []
    for lab, row in matched(results, labels):
        if row is None or row["status"] != "ok" or row["verdict"] == lab["label"]:
            continue
        out.append({**row, "label": lab["label"], "confidence": abs(float(row["score"]) - 0.5)})
    return sorted(out, key=lambda r: (-r["confidence"], r["uri"]))


def relabel(results: str, labels_path: str, out: str, storage: StorageConfig = StorageConfig()) -> dict:
    from .report import write_report
    rows = read_results(results, storage=storage, require=True)
    try:
        labels = read_labels(labels_path)
    except EvaluateError as e:
        raise ValueError(str(e)) from None
    folder = Path(out)
    own = {"disagreements.parquet", "review.html", "rows"}
    if folder.exists() and (not folder.is_dir() or any(not p.name.startswith(tuple(own)) for p in folder.iterdir())):
        raise ValueError(f"--out {out}: a folder with other files in it; give a new folder (an earlier "
                         "`zoomin relabel` output is replaced)")
    found = disagreements(rows.to_pylist(), labels)
    folder.mkdir(parents=True, exist_ok=True)
    schema = rows.schema.append(pa.field("label", pa.string())).append(pa.field("confidence", pa.float64()))
    pq.write_table(pa.Table.from_pylist(found, schema=schema), folder / "disagreements.parquet")
    # the page: the same rows, each rationale opened by the label it contradicts
    page_rows = [{k: v for k, v in r.items() if k not in ("label", "confidence")} for r in found]
    for r, f in zip(page_rows, found):
        r["rationale"] = (f"Labelled {f['label']}; the model says {f['verdict']} (score {f['score']:.3f}). "
                          f"{r.get('rationale') or ''}")
    pages = folder / "rows"
    pages.mkdir(exist_ok=True)
    pq.write_table(pa.Table.from_pylist(page_rows, schema=rows.schema), pages / "part-0.parquet")
    write_report(str(pages), str(folder / "review.html"), storage=storage, order=[r["uri"] for r in found],
                 settings_from=results)
    judged = sum(1 for lab, row in matched(rows.to_pylist(), labels) if row is not None and row["status"] == "ok")
    return {"labels": len(labels), "scanned": rows.num_rows, "judged": judged, "disagreements": len(found),
            "labelled_real_called_generated": sum(r["label"] == "real" for r in found),
            "labelled_generated_called_real": sum(r["label"] == "generated" for r in found)}
