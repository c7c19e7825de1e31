"""Reading a vision-language model's answer: explanation, boxes, verdict - whatever it wrote.

The prompts ask for free-text explanation, boxes as JSON `[[x1, y1, x2, y2], ...]` inside
`<boxes>...</boxes>`, and `<verdict>real</verdict>` or `<verdict>generated</verdict>`. Models
do not always comply, so the parser accepts: missing or repeated tags (the last verdict wins),
prose or code fences around the JSON, Qwen's grounding objects (`{"bbox_2d": [...]}`), lists of
four numbers anywhere, boxes out of bounds (clamped), inverted corners (swapped), zero-area
boxes (dropped) and a truncated generation (a verdict without its closing tag still counts).
What it cannot read it reports as `Unparseable` with the reason - never a guess.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Optional

from .records import GENERATED, REAL

VERDICT_WORDS = {"real": REAL, "authentic": REAL, "genuine": REAL, "generated": GENERATED,
                 "fake": GENERATED, "ai-generated": GENERATED, "synthetic": GENERATED}
_WORDS = "|".join(sorted((re.escape(w) for w in VERDICT_WORDS), key=len, reverse=True))
_VERDICT = re.compile(rf"<\s*verdict\s*>\s*\**\s*({_WORDS})\b", re.I)
_BOXES_TAG = re.compile(r"<\s*boxes\s*>(.*?)(?:<\s*/\s*boxes\s*>|$)", re.I | re.S)
_BBOX_2D = re.compile(r'"bbox_2d"\s*:\s*\[([^\]]*)\]')
_QUAD = re.compile(r"\[\s*(-?[\d.eE+]+)\s*,\s*(-?[\d.eE+]+)\s*,\s*(-?[\d.eE+]+)\s*,\s*(-?[\d.eE+]+)\s*\]")
_TAGS = re.compile(r"<\s*/?\s*(verdict|boxes|explanation|answer|think)\s*>", re.I)
MAX_TEXT = 2000


class Unparseable(Exception):
    """The model's output could not be read. Becomes the image's `unparseable` row."""

    def __init__(self, reason: str, raw: str = ""):
        super().__init__(reason)
        self.reason, self.raw = reason, raw


@dataclass
class Answer:
    explanation: str
    verdict: str
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)    # what was repaired, for audit


def parse_verdict(text: str) -> Optional[str]:
    """The last verdict the text states in a <verdict> tag, or None."""
    found = _VERDICT.findall(text)
    return VERDICT_WORDS[found[-1].lower()] if found else None


def _numbers(chunk: str) -> list[list[float]]:
    """Candidate boxes in a chunk of text: JSON first, then Qwen objects, then any 4-number list."""
    chunk = chunk.strip().strip("`").removeprefix("json").strip()
    try:
        data = json.loads(chunk)
        if isinstance(data, dict):
            data = data.get("boxes") or data.get("bbox_2d") or []
        if isinstance(data, list) and data and all(isinstance(x, (int, float)) for x in data):
            data = [data]
        if isinstance(data, list):
            out = []
            for b in data:
                if isinstance(b, dict):
                    b = b.get("bbox_2d") or b.get("box") or b.get("bbox")
                if isinstance(b, list) and len(b) == 4 and all(isinstance(x, (int, float)) for x in b):
                    out.append([float(x) for x in b])
            if out:
                return out
    except (ValueError, TypeError):
        pass
    quads = [m.split(",") for m in _BBOX_2D.findall(chunk)]
    quads = [q for q in quads if len(q) == 4] or [list(m) for m in _QUAD.findall(chunk)]
    out = []
    for q in quads:
        try:
            out.append([float(x) for x in q])
        except ValueError:
            continue
    return out


def clean_boxes(raw: list[list[float]], width: float, height: float, notes: list[str]
                ) -> list[tuple[float, float, float, float]]:
    """Finite, corner-ordered, clamped to the frame, non-degenerate, without duplicates."""
    out: list[tuple[float, float, float, float]] = []
    # a box under one pixel (or, in a 0..1 frame such as LLaVA's, a thousandth) has no area
    least = 1.0 if max(width, height) > 10 else 1e-3
    for b in raw:
        if not all(math.isfinite(x) for x in b):
            notes.append("dropped a box with a non-finite coordinate")
            continue
        x1, y1, x2, y2 = b
        if x1 > x2 or y1 > y2:
            x1, x2, y1, y2 = min(x1, x2), max(x1, x2), min(y1, y2), max(y1, y2)
            notes.append("swapped inverted corners")
        c = (max(0.0, x1), max(0.0, y1), min(width, x2), min(height, y2))
        if c != (x1, y1, x2, y2):
            notes.append("clamped a box to the image")
        if c[2] - c[0] < least or c[3] - c[1] < least:
            notes.append("dropped a zero-area box")
            continue
        if c not in out:
            out.append(c)
    return out


def explanation_of(text: str) -> str:
    """The prose: the text without tags, box lists and code fences, whitespace collapsed."""
    t = _BOXES_TAG.sub(" ", text)
    t = _VERDICT.sub(" ", t)
    t = _TAGS.sub(" ", t)
    t = re.sub(r"```.*?(```|$)", " ", t, flags=re.S)
    t = _QUAD.sub(" ", t)
    t = re.sub(r"\s+", " ", t).strip(" .,;:")
    return t[:MAX_TEXT]


def parse_answer(text: str, width: float, height: float, want_boxes: bool, truncated: bool = False) -> Answer:
    """Parse one answer; boxes (when wanted) are in the frame of width x height."""
    if not text or not text.strip():
        raise Unparseable("empty output", text)
    verdict = parse_verdict(text)
    if verdict is None:
        why = "no <verdict>real|generated</verdict> in the output"
        raise Unparseable(why + (" (generation hit the token limit)" if truncated else ""), text)
    notes: list[str] = []
    boxes: list[tuple[float, float, float, float]] = []
    if want_boxes:
        tagged = _BOXES_TAG.findall(text)
        raw = _numbers(tagged[-1]) if tagged else []
        if not raw:
            raw = _numbers(text)
            if raw and tagged:
                notes.append("boxes found outside the <boxes> tag")
        boxes = clean_boxes(raw, width, height, notes)
    return Answer(explanation_of(text), verdict, boxes, notes)
