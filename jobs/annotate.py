"""`zoomin annotate SRC --labels L --out DATASET`: labelled images -> training examples for the two
queries (`zoomin_core.annotate`), as a Ray Data job.

The labels (the format `zoomin evaluate` reads: file or uri, label, optional true boxes) are cut
into chunks of --chunk images; each Ray task reads its images (local or object storage), decodes
their headers and writes one Parquet file for its chunk, named by the chunk's index and content,
through a temporary name. Run again after a kill, the job skips the chunks whose file is there.
Then the driver writes `messages.jsonl` (the chat-messages format TRL's SFT trainer reads) and
`summary.json` (examples kept, images that failed, and why).

Without --teacher the answers are written from the labels and true boxes (templates). With
--teacher, a pool of Ray actors each holds the teacher model and annotates whole chunks
(`zoomin_core.teacher`); images whose annotation does not hold up leave as `dropped` rows, the
reason counted in the summary.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Optional

import pyarrow as pa
import pyarrow.parquet as pq

from .storage import StorageConfig, filesystem, is_remote, retrying

SCHEMA = pa.schema([
    ("uri", pa.string()), ("image_id", pa.string()), ("status", pa.string()), ("error", pa.string()),
    ("label", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
    ("true_boxes", pa.list_(pa.list_(pa.float64()))), ("boxes", pa.list_(pa.list_(pa.float64()))),
    ("explanation", pa.string()), ("rationale", pa.string()), ("annotator", pa.string()), ("source", pa.string()),
    ("scan_prompt", pa.string()), ("scan_target", pa.string()), ("zoom_prompt", pa.string()),
    ("zoom_target", pa.string()), ("drop", pa.string()),
])


class AnnotateError(Exception):
    pass


def _chunk_name(index: int, labels: list[dict], annotator: str) -> str:
    h = hashlib.sha256(json.dumps([annotator, labels], sort_keys=True).encode()).hexdigest()[:10]
    return f"part-{index:05d}-{h}.parquet"


def _annotate_chunk(item: dict, out: str, storage: StorageConfig, teacher=None, min_iou: float = 0.5) -> dict:
    """One chunk: read, decode, annotate (templates, or the `teacher` backend), write the chunk's
    Parquet file (skipped when there)."""
    from zoomin_core.annotate import scan_target, template, zoom_target
    from zoomin_core.backends.vlm import load_prompts, zoom_prompt
    from zoomin_core.decode import DecodeConfig, prepare
    from zoomin_core.records import STATUS_OK, ImageInput
    from zoomin_core.teacher import Dropped, teach

    from .sinks import write_whole
    fs, root = filesystem(out, storage)
    path = f"{root.rstrip('/')}/{item['name']}"
    if fs.exists(path):
        return {"name": item["name"], "skipped": True}
    prompts = load_prompts()
    # templates need the header only; a teacher sees the view a scan makes
    decode = DecodeConfig() if teacher is not None else DecodeConfig(view_max_side=64)
    rows, ready = [], []
    for lab in item["labels"]:
        base = {"uri": lab["uri"], "label": lab["label"], "source": lab.get("source") or "",
                "true_boxes": [list(map(float, b[:4])) for b in lab.get("boxes") or []]}
        try:
            sfs, spath = filesystem(lab["uri"], storage)
            data = retrying(lambda: sfs.cat_file(spath), storage)
        except (OSError, ValueError) as e:
            rows.append({**base, "status": "read_error", "error": f"{type(e).__name__}: {e}"})
            continue
        p = prepare(ImageInput(lab["uri"], data), decode)
        if p.status != STATUS_OK:
            rows.append({**base, "image_id": p.image_id, "status": p.status, "error": p.error})
            continue
        ready.append((p, data, lab, base))
    if teacher is not None:
        made = teach(teacher, [(p, data, lab) for p, data, lab, _ in ready], min_iou)
    else:
        made = [template(lab["uri"], p.image_id, lab["label"], p.width, p.height, base["true_boxes"], base["source"])
                for p, _, lab, base in ready]
    for (p, _, lab, base), ex in zip(ready, made):
        known = {**base, "image_id": p.image_id, "width": p.width, "height": p.height}
        if isinstance(ex, Dropped):
            rows.append({**known, "status": "dropped", "error": ex.detail, "drop": ex.reason})
            continue
        frame = f"pixel coordinates of this {p.width}x{p.height} image"
        rows.append({**known, "status": "ok", "boxes": [list(b) for b in ex.boxes], "explanation": ex.explanation,
                     "rationale": ex.rationale, "annotator": ex.annotator,
                     "scan_prompt": prompts["scan"].format(frame=frame), "scan_target": scan_target(ex, lambda b: b),
                     "zoom_prompt": zoom_prompt(prompts, ex.boxes, ex.label, ex.explanation),
                     "zoom_target": zoom_target(ex)})
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    write_whole(fs, path, lambda f: pq.write_table(table, f))
    return {"name": item["name"], "skipped": False}


class _Teacher:
    """A Ray Data actor holding the teacher model; annotates one chunk per call."""

    def __init__(self, teacher: str, out: str, storage: StorageConfig, min_iou: float, gpu: bool,
                 max_new_tokens: int):
        from zoomin_core.backends.vlm import VLMBackend

        from .models import fetch_model
        self.out, self.storage, self.min_iou = out, storage, min_iou
        self.backend = VLMBackend(fetch_model(teacher, storage)[0], device="cuda" if gpu else "cpu",
                                  max_new_tokens=max_new_tokens, model_name=teacher.rstrip("/").rsplit("/", 1)[-1])

    def __call__(self, item: dict) -> dict:
        return _annotate_chunk(item, self.out, self.storage, self.backend, self.min_iou)


def annotate(labels_path: str, out: str, storage: StorageConfig = StorageConfig(), chunk: int = 64,
             teacher: Optional[str] = None, address: Optional[str] = None, min_iou: float = 0.5,
             teacher_actors: int = 1, gpus_per_actor: float = 0.0, max_new_tokens: int = 256,
             review: int = 100) -> dict:
    import ray

    from .evaluate import EvaluateError, read_labels
    from .models import check_model_for, checkpoint_digest
    try:
        labels = read_labels(labels_path)
    except EvaluateError as e:
        raise AnnotateError(str(e)) from None
    labels = [{k: v for k, v in lab.items() if k in ("uri", "label", "boxes", "source")} for lab in labels]
    annotator = "template"
    if teacher:
        check_model_for("--teacher", teacher, storage)   # one line before Ray, as a scan's --model
        annotator = f"teacher:{checkpoint_digest(teacher, storage)}:{min_iou:g}:{max_new_tokens}"
    fs, root = filesystem(out, storage)
    fs.makedirs(root, exist_ok=True)
    present = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False)]
    others = [n for n in present if not _own(n)]
    if others:
        raise AnnotateError(f"--out {out}: a folder with other files in it ({others[0]}, ...); "
                            "give a new folder (an earlier `zoomin annotate` dataset there is finished or checked)")
    items = [{"name": _chunk_name(i, labels[s:s + chunk], annotator), "labels": labels[s:s + chunk]}
             for i, s in enumerate(range(0, len(labels), chunk))]
    expected = {it["name"] for it in items}
    stale = [n for n in present if n.endswith(".parquet") and n not in expected]
    if stale:
        raise AnnotateError(f"{out} holds part files of other labels or another annotator "
                            f"({stale[0]}, ...): give a new or empty folder")
    if not ray.is_initialized():
        ray.init(address=address or "local", include_dashboard=False)
    if not logging.getLogger().isEnabledFor(logging.INFO):   # Ray Data's plan and progress lines: --verbose
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        ray.data.DataContext.get_current().enable_progress_bars = False
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    if teacher:
        ds = ds.map(_Teacher, fn_constructor_kwargs={"teacher": teacher, "out": out, "storage": storage,
                                                     "min_iou": min_iou, "gpu": gpus_per_actor > 0,
                                                     "max_new_tokens": max_new_tokens},
                    compute=ray.data.ActorPoolStrategy(size=teacher_actors), num_gpus=gpus_per_actor or None)
    else:
        ds = ds.map(lambda it: _annotate_chunk(it, out, storage))
    done = ds.take_all()
    rows = _read_all(fs, root, sorted(expected)).to_pylist()
    summary = {"labels": len(labels), "examples": sum(r["status"] == "ok" for r in rows),
               "dropped": dict(sorted(Counter(r["drop"] for r in rows if r["status"] == "dropped").items())),
               "failed": dict(sorted(Counter(r["status"] for r in rows if r["status"] not in ("ok", "dropped")).items())),
               "chunks": len(items), "chunks_resumed": sum(d["skipped"] for d in done),
               "annotator": f"teacher:{teacher}" if teacher else "template", "min_iou": min_iou if teacher else None}
    _write_text(fs, f"{root.rstrip('/')}/messages.jsonl",
                "".join(json.dumps(m) + "\n" for r in rows if r["status"] == "ok" for m in _messages(r)))
    _write_text(fs, f"{root.rstrip('/')}/summary.json", json.dumps(summary, indent=1))
    if review and not is_remote(out):
        from .annotate_review import write_review
        summary["review"] = write_review(rows, str(Path(root) / "review.html"), review, summary["annotator"], storage)
    return summary


def _own(name: str) -> bool:
    """A file `zoomin annotate` writes in its --out (a part file's temporary name included)."""
    return name.startswith(("part-", "review.html")) or name in ("messages.jsonl", "summary.json")


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
