"""Typed records passed between the method's steps.

The chain is: ImageInput (bytes) -> Prepared (decoded view + full image on demand)
-> ScanResult (regions, first verdict) -> Verdict (final) -> ResultRow (one output row).
Ray and Parquet only ever see ResultRow (through `schema.py`); the method works on these.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Optional

import numpy as np

REAL = "real"
GENERATED = "generated"

# Status values of an output row. "ok" means scored; every other value names what failed.
STATUS_OK = "ok"
STATUS_READ_ERROR = "read_error"        # the bytes could not be fetched
STATUS_DECODE_ERROR = "decode_error"    # bytes are not an image Pillow can decode (or truncated)
STATUS_TOO_LARGE = "too_large"          # over the pixel limit (decompression-bomb guard)
STATUS_UNSUPPORTED = "unsupported"      # an image, but one we refuse (e.g. too small, odd mode)
STATUS_MODEL_ERROR = "model_error"      # the backend raised on this image
STATUS_UNPARSEABLE = "unparseable"      # the backend's output could not be read (VLM backends)
ERROR_STATUSES = (STATUS_READ_ERROR, STATUS_DECODE_ERROR, STATUS_TOO_LARGE, STATUS_UNSUPPORTED,
                  STATUS_MODEL_ERROR, STATUS_UNPARSEABLE)


def content_id(data: bytes) -> str:
    """Stable image id: sha256 of the file's bytes (identical bytes -> identical id)."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class ImageInput:
    """One input image as it comes from a source: where it is and its bytes."""
    uri: str
    data: Optional[bytes]            # None when the read failed
    read_error: Optional[str] = None
    read_status: str = "read_error"  # status of the row when data is None (e.g. too_large)

    @property
    def image_id(self) -> str:
        if self.data is None:
            # No bytes to hash: fall back to the uri so the row still has a stable key.
            return "uri:" + hashlib.sha256(self.uri.encode()).hexdigest()
        return content_id(self.data)


@dataclass(frozen=True)
class Box:
    """Axis-aligned box in pixels of some frame (x2/y2 exclusive). Output boxes are original pixels."""
    x1: float
    y1: float
    x2: float
    y2: float
    score: float = 0.0

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)


@dataclass(frozen=True)
class View:
    """The reduced scan view of an image and how it maps to original pixels.

    pixels: uint8 array (h, w, 3). scale = original / view along each axis.
    """
    pixels: np.ndarray
    scale_x: float
    scale_y: float

    @property
    def size(self) -> tuple[int, int]:
        return self.pixels.shape[1], self.pixels.shape[0]


@dataclass(frozen=True)
class Prepared:
    """An image after decoding: either a usable view (status ok) or a failure to report.

    `data` is kept so the zoom step can decode the full-resolution original only when needed
    (a scan-only run never pays for it).
    """
    image_id: str
    uri: str
    status: str
    error: Optional[str] = None
    width: int = 0                   # original size, after EXIF orientation
    height: int = 0
    view: Optional[View] = None
    data: Optional[bytes] = None
    decode_s: float = 0.0
    nbytes: int = 0                  # size of the input's bytes (0 when they could not be read)
    provenance: tuple = ()           # provenance.Signal marks read from its metadata


@dataclass(frozen=True)
class ScanResult:
    """Stage 1 output: regions worth a closer look (view pixels) and a first verdict."""
    boxes: tuple[Box, ...]
    initial_verdict: str
    initial_score: float
    explanation: str
    raw: str = ""                    # the model's own text, when the backend keeps it (--keep-raw)


@dataclass(frozen=True)
class Crop:
    """A region cut from the full-resolution original, in original pixels: `box` is the area cut
    (the region with its margin and minimum side), `region` the region itself (the frame of the
    `boxes` column, which rationales quote)."""
    box: Box
    pixels: np.ndarray               # uint8 (h, w, 3) at native resolution (or resized by backend)
    region: Optional[Box] = None


@dataclass(frozen=True)
class Verdict:
    """Stage 2 output: the final judgement, grounded in the crops."""
    verdict: str
    score: float                     # probability of "generated", 0..1
    rationale: str
    region_scores: tuple[float, ...] = ()       # the zoom's score of each crop, in crop order
    raw: str = ""                                # the model's own text (--keep-raw)


@dataclass(frozen=True)
class Tier:
    """One cascade tier's judgement of an image (--cascade; the `tiers` column)."""
    model: str                 # the tier's model id, e.g. compact/v9
    status: str                # ok, or the error status of its row
    verdict: Optional[str]
    score: Optional[float]
    error: Optional[str] = None


@dataclass(frozen=True)
class ResultRow:
    """Exactly one per input image. Field order and types follow schema.RESULT_SCHEMA."""
    image_id: str
    uri: str
    status: str
    error: Optional[str]
    width: Optional[int]
    height: Optional[int]
    verdict: Optional[str]
    score: Optional[float]
    initial_verdict: Optional[str]
    initial_score: Optional[float]
    boxes: tuple[Box, ...] = ()
    explanation: Optional[str] = None
    rationale: Optional[str] = None
    model: Optional[str] = None
    stages: str = "scan,zoom"
    decode_s: float = 0.0
    scan_s: float = 0.0
    zoom_s: float = 0.0
    nbytes: int = 0                        # size of the input's bytes (0 when unreadable)
    prompt_version: Optional[str] = None   # the prompt templates' version (vlm backends)
    raw: Optional[str] = None              # the model's own text as JSON, with --keep-raw
    prior: Optional[float] = None          # the share of generated images the score assumes
    threshold: Optional[float] = None      # verdict generated at a score of this or more
    provenance: tuple = ()                 # provenance.Signal marks read from the file's metadata
    decided_by: Optional[str] = None       # "provenance", or the backend whose score decided
    tiers: tuple = ()                      # Tier per cascade tier that judged the image (--cascade)

    @staticmethod
    def failed(prepared: Prepared, status: str, error: str, model: Optional[str] = None,
               stages: str = "scan,zoom", prompt_version: Optional[str] = None,
               raw: Optional[str] = None, prior: Optional[float] = None) -> "ResultRow":
        return ResultRow(
            image_id=prepared.image_id, uri=prepared.uri, status=status, error=error,
            width=prepared.width or None, height=prepared.height or None, verdict=None,
            score=None, initial_verdict=None, initial_score=None, model=model, stages=stages,
            decode_s=prepared.decode_s, nbytes=prepared.nbytes, prompt_version=prompt_version, raw=raw,
            prior=prior, provenance=prepared.provenance)
