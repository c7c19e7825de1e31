"""A deterministic fake backend: no weights, no torch. For tests and dry runs of the engine.

Its answers are a pure function of the pixels, so the same image always gets the same row:
the box is the brightest quarter of the view, the score is the mean brightness of the crops.
Setting `fail_on_mean_above` makes it raise on matching images, to exercise error rows;
`crash_once_marker` makes the process holding it die (as an out-of-memory kill would) at its
first scan if that file does not exist yet, creating it, to exercise actor replacement;
`crash_on_mean_above` makes it die on every batch holding a matching image (a poison image);
`hang_once_marker` makes its first scan never return if that file does not exist yet (creating
it), as a task lost with its node looks to the driver; `crash_decoding` makes an actor that
decodes its own images die before decoding any input whose uri contains that text (an image
that crashes the decoder).
"""
from __future__ import annotations

import os
import time
from typing import Optional, Sequence

import numpy as np

from ..records import GENERATED, REAL, Box, Crop, ScanResult, Verdict, View


class FakeBackend:
    name = "fake"

    def __init__(self, model: Optional[str] = None, fail_on_mean_above: Optional[float] = None,
                 crash_once_marker: Optional[str] = None, crash_on_mean_above: Optional[float] = None,
                 hang_once_marker: Optional[str] = None, threshold: float = 0.5,
                 crash_decoding: Optional[str] = None):
        self.threshold = threshold
        self.crash_decoding = crash_decoding
        self.fail_on_mean_above = fail_on_mean_above
        self.crash_once_marker = crash_once_marker
        self.crash_on_mean_above = crash_on_mean_above
        self.hang_once_marker = hang_once_marker

    @property
    def model_id(self) -> str:
        return "fake-1"

    def before_decode(self, uri: str) -> None:
        """Called by jobs.pipeline.ReadingExaminer before it decodes an input."""
        if self.crash_decoding and self.crash_decoding in uri:
            os._exit(139)

    def _check(self, pixels: np.ndarray) -> None:
        if self.fail_on_mean_above is not None and pixels.mean() / 255 > self.fail_on_mean_above:
            raise RuntimeError("fake backend: refusing a bright image")

    def scan(self, views: Sequence[View]) -> list[ScanResult]:
        if self.crash_once_marker and not os.path.exists(self.crash_once_marker):
            open(self.crash_once_marker, "w").close()
            os._exit(137)  # no cleanup, no exception: the process is simply gone
        if self.hang_once_marker and not os.path.exists(self.hang_once_marker):
            open(self.hang_once_marker, "w").close()
            while True:
                time.sleep(1)
        if self.crash_on_mean_above is not None and any(
                v.pixels.mean() / 255 > self.crash_on_mean_above for v in views):
            os._exit(139)  # as a segfault in native code would, every time
        out = []
        for v in views:
            self._check(v.pixels)
            h, w = v.pixels.shape[:2]
            quads = [(0, 0), (w // 2, 0), (0, h // 2), (w // 2, h // 2)]
            means = [v.pixels[y:y + h // 2, x:x + w // 2].mean() for x, y in quads]
            x, y = quads[int(np.argmax(means))]
            score = float(np.mean(v.pixels) / 255)
            verdict = GENERATED if score >= self.threshold else REAL
            out.append(ScanResult((Box(x, y, x + w // 2, y + h // 2, score),), verdict, score,
                                  f"brightest quadrant at ({x}, {y}) in the view"))
        return out

    def zoom(self, items: Sequence[tuple[View, Sequence[Crop], ScanResult]]) -> list[Verdict]:
        out = []
        for view, crops, scan in items:
            scores = tuple(float(c.pixels.mean() / 255) if c.pixels.size else 0.0 for c in crops)
            score = max(scores, default=scan.initial_score)
            verdict = GENERATED if score >= self.threshold else REAL
            out.append(Verdict(verdict, score, f"fake backend: crop brightness {score:.2f}", scores))
        return out
