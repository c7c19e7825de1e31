"""Rationales built from measurements, never invented prose.

Every sentence states a number the compact detector computed: where a region is, what the scan
and the zoom classifier scored it, and two simple statistics of its pixels compared with their
level in the real photos the weights were trained on:
- fine-detail energy: mean squared residual after removing the 3x3 local mean (generators that
  decode through an up-sampler tend to lose or smear fine detail);
- 2-pixel periodicity: energy of the 2x2 checkerboard component relative to fine detail
  (transposed convolutions and pixel-shuffle decoders leave a period-2 pattern).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .records import GENERATED, Box


@dataclass(frozen=True)
class Cues:
    detail: float        # mean squared 3x3 residual of the grey crop (0..255 units)
    periodicity: float   # checkerboard energy / detail energy


def measure(pixels: np.ndarray) -> Cues:
    """pixels: uint8 (h, w, 3) at native resolution."""
    g = pixels.astype(np.float32).mean(axis=2)
    h, w = g.shape
    if h < 4 or w < 4:
        return Cues(0.0, 0.0)
    p = np.pad(g, 1, mode="edge")
    local_mean = sum(p[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)) / 9.0
    detail = float(np.mean((g - local_mean) ** 2))
    g2 = g[: h // 2 * 2, : w // 2 * 2]
    checker = (g2[0::2, 0::2] - g2[0::2, 1::2] - g2[1::2, 0::2] + g2[1::2, 1::2]) / 4.0
    return Cues(detail, float(np.mean(checker ** 2)) / (detail + 1e-6))


def _ratio(value: float, reference: float | None) -> float | None:
    return value / reference if reference else None


def describe_cue(c: Cues, reference: dict) -> str:
    """The statistic that deviates most from real photos, stated with its measured ratio."""
    d = _ratio(c.detail, reference.get("detail"))
    p = _ratio(c.periodicity, reference.get("periodicity"))
    parts = []
    if d is not None:
        parts.append(f"fine-detail energy {d:.2f}x")
    if p is not None:
        parts.append(f"2-px periodicity {p:.2f}x")
    if not parts:
        return f"fine-detail energy {c.detail:.1f}, 2-px periodicity {c.periodicity:.3f}"
    text = " and ".join(parts) + " the level of real training photos"
    if p is not None and p >= 1.5:
        text += " (a periodic up-sampling trace)"
    elif d is not None and d <= 0.6:
        text += " (smoothed texture)"
    return text


def scan_explanation(boxes: Sequence[Box], score: float, verdict: str) -> str:
    """Stage-1 text: what the reduced view showed."""
    if not boxes:
        return f"First look at the reduced image: {verdict} ({score:.2f}); no region stands out."
    best = boxes[0]
    return (f"First look at the reduced image: {verdict} ({score:.2f}); "
            f"{len(boxes)} region(s) proposed for a closer look, the most suspicious scoring "
            f"{best.score:.2f}.")


def zoom_rationale(regions: Sequence[tuple[Box, float, Cues]], verdict: str, score: float,
                   initial_verdict: str, initial_score: float, reference: dict) -> str:
    """Stage-2 text: the final verdict grounded in the examined regions (original pixels)."""
    lines = []
    for n, (b, s, c) in enumerate(regions, 1):
        lines.append(f"Region {n} ({int(b.x1)},{int(b.y1)})-({int(b.x2)},{int(b.y2)}), "
                     f"{int(b.width)}x{int(b.height)} px at full resolution: zoom score {s:.2f}; "
                     f"{describe_cue(c, reference)}.")
    if regions:
        best = int(np.argmax([s for _, s, _ in regions])) + 1
        head = f"Final: {verdict} ({score:.2f}), decided by region {best}."
    else:
        head = f"Final: {verdict} ({score:.2f}); no region could be examined."
    if verdict != initial_verdict:
        head += (f" The first look said {initial_verdict} ({initial_score:.2f}); zooming in "
                 f"overturned it.")
    elif verdict == GENERATED:
        head += " Zooming in confirmed the first look."
    return " ".join([head] + lines)
