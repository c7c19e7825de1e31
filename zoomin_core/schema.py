"""The one output schema. Every writer uses it; nothing is inferred from a first batch."""
from __future__ import annotations

from typing import Optional, Sequence

import pyarrow as pa

from .records import ResultRow

# 4: - consistency, + prior. 5: + provenance, decided_by. 6: + threshold, tiers. Older results read with the declared
# schema: a missing column reads as null, a column no longer declared is not read.
SCHEMA_VERSION = "6"

BOX_TYPE = pa.struct([
    ("x1", pa.int32()), ("y1", pa.int32()), ("x2", pa.int32()), ("y2", pa.int32()),
    ("score", pa.float32()),
])

SIGNAL_TYPE = pa.struct([("signal", pa.string()), ("detail", pa.string()), ("says", pa.string())])

TIER_TYPE = pa.struct([("model", pa.string()), ("status", pa.string()), ("verdict", pa.string()),
                       ("score", pa.float32()), ("error", pa.string())])

RESULT_SCHEMA = pa.schema([
    pa.field("image_id", pa.string(), nullable=False),   # sha256 of the bytes ("uri:<sha256>" if unreadable)
    pa.field("uri", pa.string(), nullable=False),        # where the image came from
    pa.field("status", pa.string(), nullable=False),     # "ok" or an error kind (records.ERROR_STATUSES)
    pa.field("error", pa.string()),                      # message when status != ok
    pa.field("width", pa.int32()),                       # original size after EXIF orientation
    pa.field("height", pa.int32()),
    pa.field("verdict", pa.string()),                    # "real" / "generated" / null on error
    pa.field("score", pa.float32()),                     # P(generated), 0..1, final
    pa.field("initial_verdict", pa.string()),            # the scan's first verdict
    pa.field("initial_score", pa.float32()),
    pa.field("boxes", pa.list_(BOX_TYPE)),               # regions, original pixels, highest score first
    pa.field("explanation", pa.string()),                # the scan's first explanation
    pa.field("rationale", pa.string()),                  # the final, region-grounded rationale
    pa.field("model", pa.string()),                      # backend model name and version
    pa.field("stages", pa.string()),                     # "scan" or "scan,zoom"
    pa.field("decode_s", pa.float32()),                  # seconds per image in each stage
    pa.field("scan_s", pa.float32()),
    pa.field("zoom_s", pa.float32()),
    pa.field("nbytes", pa.int64()),                      # size of the image's bytes (0 if unreadable)
    pa.field("prompt_version", pa.string()),             # prompt templates' version (vlm backends)
    pa.field("raw", pa.string()),                        # the model's own text as JSON (--keep-raw; always when unparseable)
    pa.field("prior", pa.float32()),                     # share of generated images the score assumes (compact)
    pa.field("threshold", pa.float32()),                 # verdict generated at this score or more
    pa.field("provenance", pa.list_(SIGNAL_TYPE)),       # marks in the file's metadata (provenance.py)
    pa.field("decided_by", pa.string()),                 # "provenance" or the backend that decided; null on error
    pa.field("tiers", pa.list_(TIER_TYPE)),              # each cascade tier's judgement (--cascade); else empty
    pa.field("extra", pa.string()),                      # JSON of columns carried from a manifest/shard
], metadata={"zoomin.schema_version": SCHEMA_VERSION})


def rows_to_table(rows: Sequence[ResultRow], extras: Optional[Sequence[Optional[str]]] = None) -> pa.Table:
    """Result rows as a table; `extras` (one JSON string or None per row) fill the `extra` column."""
    cols: dict[str, list] = {f.name: [] for f in RESULT_SCHEMA}
    cols["extra"] = list(extras) if extras is not None else [None] * len(rows)
    for r in rows:
        for name in cols:
            if name == "extra":
                continue
            if name == "provenance":
                cols[name].append([{"signal": s.signal, "detail": s.detail, "says": s.says} for s in r.provenance])
            elif name == "tiers":
                cols[name].append([{"model": t.model, "status": t.status, "verdict": t.verdict, "score": t.score,
                                    "error": t.error} for t in r.tiers])
            elif name == "boxes":
                cols[name].append([{"x1": int(b.x1), "y1": int(b.y1), "x2": int(b.x2),
                                    "y2": int(b.y2), "score": float(b.score)} for b in r.boxes])
            else:
                cols[name].append(getattr(r, name))
    return pa.Table.from_pydict(cols, schema=RESULT_SCHEMA)
