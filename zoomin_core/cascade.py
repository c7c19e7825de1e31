"""A two-tier cascade: a cheap first tier judges every image; only images whose first-tier score
falls in the escalation band [low, high) go to the second tier (e.g. the vision-language model),
whose verdict then stands. Below the band the first tier's `real` stands, at or above it its
`generated`; provenance decides before either.

Every row records each tier that judged it in `tiers` (model, status, verdict, score), and in
`decided_by` the one whose verdict stands. A second tier that fails on an image (an error, output
it cannot read) costs the image nothing: the first tier's verdict stands and `tiers` says why.
Engine-agnostic: the Ray job calls `escalates` and `merge`; `run_cascade` is the same in one
process (tests, benchmarks).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

from .decode import prepare
from .rationale import decimals
from .records import STATUS_OK, ImageInput, Prepared, ResultRow, Tier
from .stages import Backend, ExamineConfig, examine


@dataclass(frozen=True)
class Band:
    low: float
    high: float

    def __post_init__(self):
        if not 0.0 <= self.low < self.high <= 1.0:
            raise ValueError(f"the escalation band needs 0 <= LOW < HIGH <= 1, got {self.low}:{self.high}")

    def __str__(self) -> str:
        return f"{self.low:g}:{self.high:g}"


def tier_of(row: ResultRow) -> Tier:
    return Tier(row.model or "", row.status, row.verdict, row.score, row.error)


def escalates(row: ResultRow, band: Band) -> bool:
    """Whether the first tier's row goes on to the second tier."""
    return (row.status == STATUS_OK and row.decided_by != "provenance" and row.score is not None
            and band.low <= row.score < band.high)


def first_only(row: ResultRow) -> ResultRow:
    """A row the first tier alone decides (provenance, or an error, leaves no tier's judgement)."""
    judged = row.status == STATUS_OK and row.decided_by != "provenance"
    return replace(row, tiers=(tier_of(row),)) if judged else row


def merge(first: ResultRow, second: ResultRow, band: Band) -> ResultRow:
    """The row of an escalated image: the second tier's when it judged the image, else the
    first tier's, saying what the second tier could not do."""
    tiers = (tier_of(first), tier_of(second))
    d = max(decimals(first.score, band.low), decimals(first.score, band.high))
    lead = (f"Escalated: the first tier ({first.model}) scored {first.score:.{d}f}, inside the band {band}, "
            f"so the second tier ({second.model}) judged it.")
    if second.status == STATUS_OK:
        # seconds per stage: both tiers' (the second decoded the image again)
        return replace(second, tiers=tiers, rationale=f"{lead} {second.rationale or ''}".strip(),
                       decode_s=first.decode_s + second.decode_s, scan_s=first.scan_s + second.scan_s,
                       zoom_s=first.zoom_s + second.zoom_s)
    return replace(first, tiers=tiers,
                   rationale=f"{lead} It could not ({second.status}: {second.error}); the first tier's verdict "
                             f"stands. {first.rationale or ''}".strip())


def run_cascade(first: Backend, second: Backend, inputs: Sequence[ImageInput], band: Band,
                cfg: ExamineConfig = ExamineConfig()) -> list[ResultRow]:
    """The cascade for a list of inputs, in one process."""
    prepared = [prepare(item, cfg.decode) for item in inputs]
    rows = examine(first, prepared, cfg)
    up = [k for k, r in enumerate(rows) if escalates(r, band)]
    again = examine(second, [prepared[k] for k in up], cfg)
    out = [first_only(r) for r in rows]
    for k, r in zip(up, again):
        out[k] = merge(rows[k], r, band)
    return out


def reprepare(row: ResultRow, data: bytes, cfg: ExamineConfig) -> Prepared:
    """The second tier's input, decoded again from the bytes the first tier carried on."""
    return prepare(ImageInput(row.uri, data), cfg.decode)
