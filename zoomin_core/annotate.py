"""Training examples for a ZoomIn vision-language model: what each of the two queries should answer.

An Example is one labelled image's answers to the method's two queries, in original pixels:
query 1 (scan): an explanation, the regions worth a closer look, a first verdict; query 2
(zoom): a rationale grounded in the crops of those regions, and the final verdict. They come
written from templates: the label and, where known, the true regions (`zoomin synth` sets and
other sets with true boxes).

The texts a model is trained on are rendered from an Example for a given box frame
(`scan_target`, `zoom_target`), because each model family writes boxes in its own frame.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

from .records import GENERATED

Quad = tuple[float, float, float, float]

@dataclass(frozen=True)
class Example:
    uri: str
    image_id: str
    label: str                      # real | generated: the label the user gave
    width: int
    height: int
    true_boxes: tuple[Quad, ...]    # the label's regions, original pixels (may be empty)
    boxes: tuple[Quad, ...]         # query 1's regions, original pixels
    explanation: str                # query 1's text
    rationale: str                  # query 2's text
    annotator: str                  # "template", or "teacher:<model id>"
    source: str = ""

    @property
    def verdict(self) -> str:
        return self.label

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def _where(b: Quad) -> str:
    return f"x {int(b[0])}-{int(b[2])}, y {int(b[1])}-{int(b[3])}"


def template(uri: str, image_id: str, label: str, width: int, height: int, true_boxes: Sequence[Quad] = (),
             source: str = "") -> Example:
    """Answers written from the label: a generated image's regions are its true boxes (the whole
    image when none are known); a real image gets the most central quarter as the region the
    zoom checks, so the model learns to look and then clear it."""
    true = tuple(tuple(float(v) for v in b[:4]) for b in true_boxes)
    # The two labels' texts differ from their first word: what the model must decide comes first.
    if label == GENERATED:
        boxes = true or ((0.0, 0.0, float(width), float(height)),)
        where = "; ".join(_where(b) for b in boxes)
        explanation = ("Synthesised texture in the marked region(s): it does not match the rest of the picture."
                       if true else "Synthesised texture and noise across the whole picture.")
        rationale = f"Synthesised detail in the close-up(s) ({where}), smoother than a camera records it."
    else:
        boxes = ((width / 4, height / 4, 3 * width / 4, 3 * height / 4),)
        explanation = "Camera-like lighting, noise and edges throughout the picture."
        rationale = "Natural sensor noise and consistent detail in the close-up: nothing points to generation."
    return Example(uri, image_id, label, int(width), int(height), true, boxes, explanation, rationale,
                   "template", source)


def scan_target(ex: Example, to_frame: Callable[[Quad], Quad], fractional: bool = False) -> str:
    """Query 1's answer, boxes in the model's frame (`to_frame`: original pixels -> frame;
    `fractional`: a 0..1 frame, written with 3 decimals, else whole numbers)."""
    boxes = [[round(v, 3) if fractional else round(v) for v in to_frame(b)] for b in ex.boxes]
    return f"{ex.explanation} <boxes>{json.dumps(boxes)}</boxes> <verdict>{ex.verdict}</verdict>"


def zoom_target(ex: Example) -> str:
    """Query 2's answer."""
    return f"{ex.rationale} <verdict>{ex.verdict}</verdict>"
