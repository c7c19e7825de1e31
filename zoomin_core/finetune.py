"""Fine-tuning data for a ZoomIn vision-language model: Examples -> the two queries, tokenised
exactly as the `vlm` backend asks them at scan time, with only the answer turns learned.

The inputs are built by the backend itself (`VLMBackend.scan_conversation`, `zoom_conversation`,
`chat_text`), from the image decoded as a scan decodes it, so a fine-tuned model sees at
training time what it will see in `zoomin scan`. Query 2 is taught with the annotation's own
first look (its regions, verdict and explanation), as the paper does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from . import geometry
from .annotate import Example, Quad, scan_target, zoom_target
from .decode import decode_full, prepare
from .records import STATUS_OK, ImageInput
from .stages import ExamineConfig, scan_boxes
from .vlm_parse import Unparseable

IGNORE = -100   # label of the tokens not learned (the prompt, the images, padding)


@dataclass
class Query:
    """One query's training input: tokens, pixel inputs and labels (prompt masked)."""
    inputs: dict          # the processor's tensors (input_ids, attention_mask, pixel_values, ...)
    labels: object        # torch tensor, same shape as input_ids
    query: str            # scan | zoom
    uri: str


class ExampleError(ValueError):
    """An example that cannot be turned into training inputs (its image does not decode, ...)."""


def _to_frame(shaped, sx: float, sy: float):
    """original pixels -> the model's box frame (the inverse of Shaped.to_input after the view scale)."""
    def f(b: Quad) -> Quad:
        vx1, vy1, vx2, vy2 = b[0] / sx, b[1] / sy, b[2] / sx, b[3] / sy
        return ((vx1 + shaped.off_x) / shaped.scale_x, (vy1 + shaped.off_y) / shaped.scale_y,
                (vx2 + shaped.off_x) / shaped.scale_x, (vy2 + shaped.off_y) / shaped.scale_y)
    return f


def texts(backend, ex: Example, data: bytes, cfg: ExamineConfig = ExamineConfig()) -> list[tuple[str, list, str]]:
    """(prompt, images, answer) of the two queries of one example."""
    p = prepare(ImageInput(ex.uri, data), cfg.decode)
    if p.status != STATUS_OK:
        raise ExampleError(f"{ex.uri}: {p.status}: {p.error}")
    prompt, images, shaped = backend.scan_conversation(p.view)
    answer1 = scan_target(ex, _to_frame(shaped, p.view.scale_x, p.view.scale_y), fractional=shaped.frame_w <= 1)
    # Query 2's prompt is built from answer 1 as a scan reads it back (the parser tidies the text,
    # boxes return through the frame's rounding and are merged and clamped): the very prompt the
    # model meets after a right first answer. Built from the Example's own values, it differed by a
    # full stop and a pixel here and there, and a small model learnt a prompt it never met again.
    try:
        first = backend.read_scan(answer1, shaped, p.view)
    except Unparseable as e:
        raise ExampleError(f"{ex.uri}: its query-1 target does not parse: {e}") from None
    boxes = scan_boxes(p, first, cfg)
    full = decode_full(data, cfg.decode)
    crops = [geometry.crop(full, geometry.region_box(b, p.width, p.height, cfg.margin, cfg.min_crop_side))
             for b in boxes]
    prompt2, images2 = backend.zoom_conversation(p.view, crops, first.initial_verdict, first.explanation)
    return [(prompt, images, answer1), (prompt2, images2, zoom_target(ex))]


def tokenise(backend, prompt: str, images: list, answer: str, query: str, uri: str,
             max_tokens: Optional[int] = None) -> Query:
    """The processor's inputs for prompt + answer, labels masking everything before the answer."""
    prefix = backend.processor(text=[backend.chat_text(prompt, len(images))], images=images, return_tensors="pt")
    full = backend.processor(text=[backend.chat_text(prompt, len(images), answer)], images=images,
                             return_tensors="pt")
    n = prefix["input_ids"].shape[1]
    ids = full["input_ids"]
    if not (ids[0, :n] == prefix["input_ids"][0]).all():
        raise ExampleError(f"{uri}: the chat template does not extend the prompt with the answer")
    if max_tokens and ids.shape[1] > max_tokens:
        raise ExampleError(f"{uri}: {query} query is {ids.shape[1]} tokens, over --max-tokens {max_tokens}")
    labels = ids.clone()
    labels[:, :n] = IGNORE
    return Query(dict(full), labels, query, uri)


def queries(backend, ex: Example, data: bytes, cfg: ExamineConfig = ExamineConfig(),
            max_tokens: Optional[int] = None) -> list[Query]:
    return [tokenise(backend, p, ims, a, q, ex.uri, max_tokens)
            for (p, ims, a), q in zip(texts(backend, ex, data, cfg), ("scan", "zoom"))]


