"""The paper's annotation pipeline: a vision-language teacher, told an image's known label, writes
the evidence for the two queries, and filters keep only the annotations that hold up.

The teacher is asked the method's own two queries (`VLMBackend.scan_conversation`,
`zoom_conversation`) with one sentence added: the known label. Its answers are read back as a
scan reads them (`read_scan`, `scan_boxes`), so what is kept is what a fine-tuned model will be
taught and then asked. An annotation is kept only if
  - both answers parse (`unparseable`),
  - a generated image's first answer names at least one valid region (`no_boxes`),
  - where true regions are known, the teacher's regions meet them: each true box's best IoU with
    the teacher's boxes, averaged, is at least `min_iou` (`boxes_miss`),
  - both verdicts agree with the label (`disagrees`).
Every other image leaves as a Dropped, its reason counted by `zoomin annotate`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from . import geometry
from .annotate import Example, Quad
from .decode import decode_full
from .records import GENERATED, Box, Prepared
from .stages import ExamineConfig, scan_boxes
from .vlm_parse import Unparseable, parse_answer

HINT = ("This image is known to be {label}. Give the visual evidence for that, in the answer format "
        "asked for.")
REASONS = ("unparseable", "no_boxes", "boxes_miss", "disagrees")


@dataclass(frozen=True)
class Dropped:
    uri: str
    reason: str      # one of REASONS
    detail: str      # the sentence for the row's error column


def match(true: Sequence[Quad], found: Sequence[Quad]) -> float:
    """Each true box's best IoU with the found boxes, averaged (0 when none is found)."""
    if not true:
        return 1.0
    return sum(max((geometry.iou(Box(*t), Box(*f)) for f in found), default=0.0) for t in true) / len(true)


def teach(backend, items: Sequence[tuple[Prepared, bytes, dict]], min_iou: float = 0.5,
          cfg: ExamineConfig = ExamineConfig()) -> list[Example | Dropped]:
    """Annotate decoded images (Prepared, their bytes, their label dict: label, boxes, source)
    with the teacher `backend` (a VLMBackend). One Example or Dropped per item, in order."""
    out: list = [None] * len(items)
    convs, shaped = [], []
    for p, _, lab in items:
        prompt, images, s = backend.scan_conversation(p.view)
        convs.append((f"{prompt} {HINT.format(label=lab['label'])}", images))
        shaped.append(s)
    firsts = {}
    for i, ((p, _, lab), s, (text, prob, truncated)) in enumerate(zip(items, shaped, backend.generate("scan", convs))):
        try:
            first = backend.read_scan(text, s, p.view, prob, truncated)
        except Unparseable as e:
            out[i] = Dropped(p.uri, "unparseable", f"dropped: query 1 {e.reason}")
            continue
        boxes = scan_boxes(p, first, cfg)
        quads = [(b.x1, b.y1, b.x2, b.y2) for b in boxes]
        true = [tuple(map(float, b[:4])) for b in lab.get("boxes") or []]
        met = match(true, quads)
        if lab["label"] == GENERATED and not boxes:
            out[i] = Dropped(p.uri, "no_boxes", "dropped: query 1 named no valid region of a generated image")
        elif lab["label"] == GENERATED and true and met < min_iou:
            out[i] = Dropped(p.uri, "boxes_miss", f"dropped: query 1's regions meet the true ones at IoU "
                             f"{met:.2f} (< {min_iou:g})")
        elif first.initial_verdict != lab["label"]:
            out[i] = Dropped(p.uri, "disagrees", f"dropped: query 1 says {first.initial_verdict}, the label "
                             f"{lab['label']}")
        else:
            firsts[i] = (first, boxes)
    todo = sorted(firsts)
    convs2 = []
    for i in todo:
        (p, data, lab), (first, boxes) = items[i], firsts[i]
        full = decode_full(data, cfg.decode)
        crops = [geometry.crop(full, geometry.region_box(b, p.width, p.height, cfg.margin, cfg.min_crop_side))
                 for b in boxes]
        prompt, images = backend.zoom_conversation(p.view, crops, first.initial_verdict, first.explanation)
        convs2.append((f"{prompt} {HINT.format(label=lab['label'])}", images))
    for i, (text, _, truncated) in zip(todo, backend.generate("zoom", convs2)):
        (p, _, lab), (first, boxes) = items[i], firsts[i]
        try:
            a = parse_answer(text, 1, 1, want_boxes=False, truncated=truncated)
        except Unparseable as e:
            out[i] = Dropped(p.uri, "unparseable", f"dropped: query 2 {e.reason}")
            continue
        if a.verdict != lab["label"]:
            out[i] = Dropped(p.uri, "disagrees", f"dropped: query 2 says {a.verdict}, the label {lab['label']}")
            continue
        out[i] = Example(p.uri, p.image_id, lab["label"], p.width, p.height,
                         tuple(tuple(map(float, b[:4])) for b in lab.get("boxes") or []),
                         tuple((b.x1, b.y1, b.x2, b.y2) for b in boxes), first.explanation, a.explanation,
                         f"teacher:{backend.model_id}", lab.get("source") or "")
    return out
