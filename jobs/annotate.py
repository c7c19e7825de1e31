"""`zoomin annotate SRC --labels L --out DATASET`: labelled images -> training examples for the two
queries (`zoomin_core.annotate`), as a Ray Data job.

The labels (the format `zoomin evaluate` reads: file or uri, label, optional true boxes) are cut
into chunks of --chunk images; each Ray task reads its images (local or object storage), decodes
their headers and writes one Parquet file for its chunk, named by the chunk's index and content,
through a temporary name. Run again after a kill, the job skips the chunks whose file is there.
Then the driver writes `messages.jsonl` (the chat-messages format TRL's SFT trainer reads) and
`summary.json` (examples kept, images that failed, and why).

This version writes the answers from the labels and true boxes (templates); a teacher model
(`--teacher`) is not implemented yet.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Optional

import pyarrow as pa
import pyarrow.parquet as pq

from .storage import StorageConfig, filesystem, retrying

SCHEMA = pa.schema([
    ("uri", pa.string()), ("image_id", pa.string()), ("status", pa.string()), ("error", pa.string()),
    ("label", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
    ("true_boxes", pa.list_(pa.list_(pa.float64()))), ("boxes", pa.list_(pa.list_(pa.float64()))),
    ("explanation", pa.string()), ("rationale", pa.string()), ("annotator", pa.string()), ("source", pa.string()),
    ("scan_prompt", pa.string()), ("scan_target", pa.string()), ("zoom_prompt", pa.string()),
    ("zoom_target", pa.string()),
])


class AnnotateError(Exception):
    pass


def _chunk_name(index: int, labels: list[dict]) -> str:
    h = hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).hexdigest()[:10]
    return f"part-{index:05d}-{h}.parquet"


def _annotate_chunk(item: dict, out: str, storage: StorageConfig) -> dict:
    """One chunk: read, decode headers, write the chunk's Parquet file (skipped when there)."""
    from zoomin_core.annotate import scan_target, template, zoom_target
    from zoomin_core.backends.vlm import load_prompts, zoom_prompt
    from zoomin_core.decode import DecodeConfig, prepare
    from zoomin_core.records import STATUS_OK, ImageInput

    from .sinks import write_whole
    fs, root = filesystem(out, storage)
    path = f"{root.rstrip('/')}/{item['name']}"
    if fs.exists(path):
        return {"name": item["name"], "skipped": True}
    prompts = load_prompts()
    rows = []
    for lab in item["labels"]:
        base = {"uri": lab["uri"], "label": lab["label"], "source": lab.get("source") or "",
                "true_boxes": [list(map(float, b[:4])) for b in lab.get("boxes") or []]}
        try:
            sfs, spath = filesystem(lab["uri"], storage)
            data = retrying(lambda: sfs.cat_file(spath), storage)
        except (OSError, ValueError) as e:
            rows.append({**base, "status": "read_error", "error": f"{type(e).__name__}: {e}"})
            continue
        p = prepare(ImageInput(lab["uri"], data), DecodeConfig(view_max_side=64))
        if p.status != STATUS_OK:
            rows.append({**base, "image_id": p.image_id, "status": p.status, "error": p.error})
            continue
        ex = template(lab["uri"], p.image_id, lab["label"], p.width, p.height, base["true_boxes"], base["source"])
        frame = f"pixel coordinates of this {p.width}x{p.height} image"
        rows.append({**base, "image_id": p.image_id, "status": "ok", "width": p.width, "height": p.height,
                     "boxes": [list(b) for b in ex.boxes], "explanation": ex.explanation, "rationale": ex.rationale,
                     "annotator": ex.annotator, "scan_prompt": prompts["scan"].format(frame=frame),
                     "scan_target": scan_target(ex, lambda b: b),
                     "zoom_prompt": zoom_prompt(prompts, ex.boxes, ex.label, ex.explanation),
                     "zoom_target": zoom_target(ex)})
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    write_whole(fs, path, lambda f: pq.write_table(table, f))
    return {"name": item["name"], "skipped": False}


def annotate(labels_path: str, out: str, storage: StorageConfig = StorageConfig(), chunk: int = 64,
             teacher: Optional[str] = None, address: Optional[str] = None) -> dict:
    import ray

    from .evaluate import EvaluateError, read_labels
    if teacher:
        raise AnnotateError("--teacher is not implemented in this version: the answers are written from the labels "
                            "and true boxes (leave --teacher out)")
    try:
        labels = read_labels(labels_path)
    except EvaluateError as e:
        raise AnnotateError(str(e)) from None
    labels = [{k: v for k, v in lab.items() if k in ("uri", "label", "boxes", "source")} for lab in labels]
    fs, root = filesystem(out, storage)
    fs.makedirs(root, exist_ok=True)
    items = [{"name": _chunk_name(i, labels[s:s + chunk]), "labels": labels[s:s + chunk]}
             for i, s in enumerate(range(0, len(labels), chunk))]
    expected = {it["name"] for it in items}
    stale = [p for p in fs.ls(root, detail=False) if p.endswith(".parquet") and p.rsplit("/", 1)[-1] not in expected]
    if stale:
        raise AnnotateError(f"{out} holds part files of other labels ({stale[0].rsplit('/', 1)[-1]}, ...): give a "
                            "new or empty folder")
    if not ray.is_initialized():
        ray.init(address=address or "local", include_dashboard=False)
    if not logging.getLogger().isEnabledFor(logging.INFO):   # Ray Data's plan and progress lines: --verbose
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        ray.data.DataContext.get_current().enable_progress_bars = False
    done = ray.data.from_items(items, override_num_blocks=len(items)).map(
        lambda it: _annotate_chunk(it, out, storage)).take_all()
    rows = _read_all(fs, root, sorted(expected)).to_pylist()
    summary = {"labels": len(labels), "examples": sum(r["status"] == "ok" for r in rows),
               "failed": {s: sum(r["status"] == s for r in rows) for s in sorted({r["status"] for r in rows}) if s != "ok"},
               "chunks": len(items), "chunks_resumed": sum(d["skipped"] for d in done), "annotator": "template"}
    _write_text(fs, f"{root.rstrip('/')}/messages.jsonl",
                "".join(json.dumps(m) + "\n" for r in rows if r["status"] == "ok" for m in _messages(r)))
    _write_text(fs, f"{root.rstrip('/')}/summary.json", json.dumps(summary, indent=1))
    return summary


def read_dataset(dataset: str, storage: StorageConfig = StorageConfig()) -> list[dict]:
    """Every example of an annotated dataset (its part files), as dicts."""
    fs, root = filesystem(dataset, storage)
    try:
        names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(root, detail=False) if p.endswith(".parquet"))
    except OSError as e:
        raise AnnotateError(f"{dataset}: not an annotated dataset (cannot list it: {e})") from None
    if not names:
        raise AnnotateError(f"{dataset}: no annotated examples there (run `zoomin annotate` first)")
    return _read_all(fs, root, names).to_pylist()


def _read_all(fs, root: str, names: list[str]) -> pa.Table:
    tables = []
    for n in names:
        with fs.open(f"{root.rstrip('/')}/{n}", "rb") as f:
            tables.append(pq.read_table(f))
    return pa.concat_tables(tables) if tables else SCHEMA.empty_table()


def _write_text(fs, path: str, text: str) -> None:
    from .sinks import write_whole
    write_whole(fs, path, lambda f: f.write(text.encode()))


def _messages(r: dict) -> list[dict]:
    """The two queries in the chat-messages format TRL reads ({"messages": [...], "images": [...]});
    crops are named by their boxes (TRL datasets hold image references; cut them when loading)."""
    user = lambda n, text: {"role": "user", "content": [{"type": "image"}] * n + [{"type": "text", "text": text}]}  # noqa: E731
    answer = lambda text: {"role": "assistant", "content": [{"type": "text", "text": text}]}  # noqa: E731
    return [{"messages": [user(1, r["scan_prompt"]), answer(r["scan_target"])], "images": [r["uri"]]},
            {"messages": [user(1 + len(r["boxes"]), r["zoom_prompt"]), answer(r["zoom_target"])],
             "images": [r["uri"]], "crops": r["boxes"]}]
