"""The method, in order: decode -> scan -> map boxes -> crop at full resolution -> zoom -> rows.

`run_chain` is the whole chain in one function; the Ray job (`jobs/pipeline.py`) runs the same
two halves, `prepare` (CPU tasks) and `examine` (model actors). One row in, one row out: every
Prepared that enters `examine` leaves as exactly one ResultRow, checked before returning.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence, TypeVar

from . import geometry, provenance
from .backends import Backend
from .decode import DecodeConfig, DecodeError, decode_full, prepare
from .records import (GENERATED, STATUS_MODEL_ERROR, STATUS_OK, STATUS_UNPARSEABLE, Box, ImageInput, Prepared,
                      ResultRow, ScanResult, Verdict)
from .vlm_parse import Unparseable

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

STAGE_CHOICES = ("scan", "scan,zoom")


@dataclass(frozen=True)
class ExamineConfig:
    # "scan,zoom" (the method) or "scan" (first look only: cheaper, less accurate).
    stages: str = "scan,zoom"
    # Context added around each region before cutting, as a fraction of the region's size.
    margin: float = 0.15
    # Crops are at least this many original pixels per side, so tiny boxes still show texture.
    min_crop_side: int = 64
    # At most this many regions per image go to the zoom stage (highest scan score first).
    max_boxes: int = 4
    # Regions overlapping more than this IoU are merged into one before zooming.
    merge_iou: float = 0.3
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    # Images whose metadata says they were generated (provenance.py) are decided without the
    # models; True examines them too, for their boxes (the verdict stays the mark's).
    examine_all: bool = False

    def __post_init__(self):
        if self.stages not in STAGE_CHOICES:
            raise ValueError(f"stages must be one of {STAGE_CHOICES}, got {self.stages!r}")
        if self.max_boxes < 1:
            raise ValueError(f"--max-boxes must be at least 1, got {self.max_boxes}")
        if self.min_crop_side < 1:
            raise ValueError(f"--min-crop-side must be at least 1, got {self.min_crop_side}")
        if not 0 <= self.margin <= 10:
            raise ValueError(f"--margin is a fraction of a region's size: give 0 to 10, got {self.margin}")

    @property
    def zoom(self) -> bool:
        return self.stages == "scan,zoom"


def _guarded(fn: Callable[[list[T]], list[R]], items: list[T]) -> list[R | Exception]:
    """Call a batched backend method; if the batch raises, retry one by one so a single bad
    image costs its own row, not its batch's."""
    if not items:
        return []
    try:
        out = fn(items)
        if len(out) != len(items):
            raise RuntimeError(f"backend returned {len(out)} results for {len(items)} inputs")
        return list(out)
    except Exception:  # noqa: BLE001 - isolate below
        if len(items) == 1:
            import traceback
            return [RuntimeError(traceback.format_exc(limit=3).strip().splitlines()[-1])]
    results: list[R | Exception] = []
    for it in items:
        try:
            results.extend(fn([it]))
        except Exception as e:  # noqa: BLE001 - the error becomes this image's row
            results.append(e)
    return results


def scan_boxes(p: Prepared, scan: ScanResult, cfg: ExamineConfig) -> list[Box]:
    """Scan boxes (view pixels) -> clamped, merged boxes in original pixels, best first."""
    v = p.view
    boxes = [geometry.clamp(geometry.to_original(b, v.scale_x, v.scale_y), p.width, p.height)
             for b in scan.boxes]
    boxes = [b for b in boxes if b.area > 0]
    return _best_first(geometry.merge_overlapping(boxes, cfg.merge_iou))[: cfg.max_boxes]


def _best_first(boxes: Sequence[Box]) -> list[Box]:
    """Highest score first (stable: equal scores keep the backend's order), the `boxes` column's
    order and the order in which the compact rationale numbers its regions."""
    return sorted(boxes, key=lambda b: -b.score)


@dataclass
class Scanned:
    """An image between the stages: scanned, its boxes in original pixels, then its crops."""
    prepared: Prepared
    scan: ScanResult
    boxes: list[Box]
    model: str
    prompts: str | None
    scan_s: float
    crops: list | None = None        # Crop list once cut (crop_stage)
    crop_s: float = 0.0
    prior: float | None = None       # the share of generated images the backend's scores assume
    threshold: float | None = None   # the score at which the backend's verdict turns generated

    @property
    def image_id(self) -> str:
        return self.prepared.image_id


Staged = ResultRow | Scanned


def _failed(p: Prepared, stage: str, err: Exception, model: str, prompts: str | None,
            cfg: ExamineConfig) -> ResultRow:
    # (No prior on an error row: it has no score that could assume one.)
    # A backend reports output it could not read as an Unparseable in its results list.
    if isinstance(err, Unparseable):
        return ResultRow.failed(p, STATUS_UNPARSEABLE, str(err), model, cfg.stages, prompts, err.raw or None)
    return ResultRow.failed(p, STATUS_MODEL_ERROR, f"{stage} failed: {err}", model, cfg.stages, prompts)


def scan_stage(backend: Backend, prepared: Sequence[Prepared], cfg: ExamineConfig = ExamineConfig()
               ) -> list[Staged]:
    """Stage 1: scan the reduced views. Failures (and, with `--stages scan`, everything) leave
    as final rows; the rest as Scanned, for the crop and zoom stages."""
    model, prompts = backend.model_id, getattr(backend, "prompt_version", None)
    prior, threshold = getattr(backend, "prior", None), getattr(backend, "threshold", None)
    out: list[Staged | None] = [None] * len(prepared)
    for i, p in enumerate(prepared):
        if p.status != STATUS_OK:
            out[i] = ResultRow.failed(p, p.status, p.error or p.status, model, cfg.stages, prompts)
        elif provenance.decides(p.provenance) and not cfg.examine_all:
            out[i] = _decided(p, model, cfg, prompts)
    todo = [i for i, p in enumerate(prepared) if p.status == STATUS_OK and out[i] is None]
    t0 = time.perf_counter()
    scans = _guarded(backend.scan, [prepared[i].view for i in todo])
    scan_s = (time.perf_counter() - t0) / max(1, len(todo))
    for i, s in zip(todo, scans):
        p = prepared[i]
        if isinstance(s, Exception):
            out[i] = _failed(p, "scan", s, model, prompts, cfg)
        elif not cfg.zoom:
            boxes = scan_boxes(p, s, cfg)
            out[i] = _row(p, s, boxes, Verdict(s.initial_verdict, s.initial_score, s.explanation),
                          model, cfg, scan_s, 0.0, prompts, prior, backend.name, threshold)
        else:
            out[i] = Scanned(p, s, scan_boxes(p, s, cfg), model, prompts, scan_s, prior=prior, threshold=threshold)
    return out  # type: ignore[return-value]


def crop_stage(items: Sequence[Staged], cfg: ExamineConfig = ExamineConfig()) -> list[Staged]:
    """Decode each scanned original at full resolution and cut its regions (CPU work only). The
    original's bytes are dropped afterwards: the zoom needs the view and the crops."""
    out: list[Staged] = []
    for it in items:
        if not isinstance(it, Scanned):
            out.append(it)
            continue
        p, t0 = it.prepared, time.perf_counter()
        try:
            full = decode_full(p.data, cfg.decode)
        except DecodeError as e:  # readable header and view, but the full decode failed
            out.append(ResultRow.failed(p, e.status, e.message, it.model, cfg.stages, it.prompts))
            continue
        crops = [replace(geometry.crop(full, geometry.region_box(b, p.width, p.height, cfg.margin,
                                                                   cfg.min_crop_side)), region=b)
                 for b in it.boxes]
        out.append(replace(it, prepared=replace(p, data=None), crops=crops, crop_s=time.perf_counter() - t0))
    return out


def zoom_stage(backend: Backend, items: Sequence[Staged], cfg: ExamineConfig = ExamineConfig()
               ) -> list[ResultRow]:
    """Stage 2: zoom into the crops; every item leaves as its final row, in order."""
    rows: list[ResultRow | None] = [it if isinstance(it, ResultRow) else None for it in items]
    todo = [(i, it) for i, it in enumerate(items) if isinstance(it, Scanned)]
    t0 = time.perf_counter()
    verdicts = _guarded(backend.zoom, [(it.prepared.view, it.crops, it.scan) for _, it in todo])
    zoom_s = (time.perf_counter() - t0) / max(1, len(todo))
    for (i, it), v in zip(todo, verdicts):
        if isinstance(v, Exception):   # the row keeps what the first look saw
            rows[i] = replace(_failed(it.prepared, "zoom", v, it.model, it.prompts, cfg),
                              initial_verdict=it.scan.initial_verdict, initial_score=float(it.scan.initial_score),
                              boxes=tuple(geometry.to_int(b) for b in it.boxes), explanation=it.scan.explanation,
                              scan_s=it.scan_s)
            continue
        boxes = it.boxes
        if len(v.region_scores) == len(it.boxes):  # report the zoom's judgement of each region
            boxes = _best_first([replace(b, score=sc) for b, sc in zip(boxes, v.region_scores)])
        rows[i] = _row(it.prepared, it.scan, boxes, v, it.model, cfg, it.scan_s, zoom_s + it.crop_s,
                       it.prompts, it.prior, backend.name, it.threshold)
    return rows  # type: ignore[return-value]


def examine(backend: Backend, prepared: Sequence[Prepared], cfg: ExamineConfig = ExamineConfig()
            ) -> list[ResultRow]:
    """Scan, cut crops and (optionally) zoom a batch of decoded images, in one process.
    Returns one row per input, in order."""
    staged = crop_stage(scan_stage(backend, prepared, cfg), cfg)
    return _checked(prepared, zoom_stage(backend, staged, cfg))


def _decided(p: Prepared, model: str, cfg: ExamineConfig, prompts: str | None) -> ResultRow:
    """The row of an image its own provenance decides: no model ran on it."""
    says = provenance.verdict(p.provenance)
    return ResultRow(
        image_id=p.image_id, uri=p.uri, status=STATUS_OK, error=None, width=p.width, height=p.height,
        verdict=says, score=1.0 if says == GENERATED else 0.0, initial_verdict=None, initial_score=None,
        rationale=provenance.sentence(p.provenance) + " Its pixels were not examined (--examine-all examines them).",
        model=model, stages=cfg.stages, decode_s=p.decode_s, nbytes=p.nbytes, prompt_version=prompts,
        provenance=p.provenance, decided_by="provenance")


def _row(p: Prepared, s: ScanResult, boxes: list[Box], v: Verdict, model: str,
         cfg: ExamineConfig, scan_s: float, zoom_s: float, prompts: str | None = None,
         prior: float | None = None, by: str | None = None, threshold: float | None = None) -> ResultRow:
    raw = None
    if s.raw or v.raw:
        raw = json.dumps({"scan": json.loads(s.raw) if s.raw else None,
                          "zoom": json.loads(v.raw) if v.raw and v.raw != s.raw else None})
    verdict, score, rationale, decided_by = v.verdict, float(v.score), v.rationale, by
    if provenance.decides(p.provenance):   # --examine-all: the pixels were judged too, the mark decides
        verdict = provenance.verdict(p.provenance)
        score, decided_by = (1.0 if verdict == GENERATED else 0.0), "provenance"
        rationale = f"{provenance.sentence(p.provenance)} The pixels, examined too: {v.rationale}"
    return ResultRow(
        image_id=p.image_id, uri=p.uri, status=STATUS_OK, error=None, width=p.width,
        height=p.height, verdict=verdict, score=score, initial_verdict=s.initial_verdict,
        initial_score=float(s.initial_score), boxes=tuple(geometry.to_int(b) for b in boxes),
        explanation=s.explanation, rationale=rationale, model=model, stages=cfg.stages,
        decode_s=p.decode_s, scan_s=scan_s, zoom_s=zoom_s, nbytes=p.nbytes, prompt_version=prompts, raw=raw,
        prior=prior, threshold=threshold, provenance=p.provenance, decided_by=decided_by)


def _checked(prepared: Sequence[Prepared], rows: list[ResultRow | None]) -> list[ResultRow]:
    """One row in, one row out, same ids, same order - or fail loudly (a bug, not bad data)."""
    for p, r in zip(prepared, rows):
        if r is None or r.image_id != p.image_id:
            raise AssertionError(f"examine lost or mixed up the row for {p.uri}")
    return rows  # type: ignore[return-value]


def run_chain(backend: Backend, inputs: Sequence[ImageInput], cfg: ExamineConfig = ExamineConfig()
              ) -> list[ResultRow]:
    """The whole method for a list of inputs, in one process: decode, scan, crop, zoom."""
    return examine(backend, [prepare(item, cfg.decode) for item in inputs], cfg)
