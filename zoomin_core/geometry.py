"""Box geometry: map between frames, clamp, pad, enforce a minimum side, merge, crop, IoU.

Boxes are (x1, y1, x2, y2) with x2/y2 exclusive. All boxes in output rows are in pixels of the
original image (after EXIF orientation); the scan works in view pixels and maps back here.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from .records import Box, Crop


def normalise(b: Box) -> Box:
    """Fix inverted corners (x2 < x1 etc.) by swapping."""
    x1, x2 = sorted((b.x1, b.x2))
    y1, y2 = sorted((b.y1, b.y2))
    return replace(b, x1=x1, y1=y1, x2=x2, y2=y2)


def clamp(b: Box, width: float, height: float) -> Box:
    b = normalise(b)
    return replace(b, x1=min(max(b.x1, 0.0), width), y1=min(max(b.y1, 0.0), height),
                   x2=min(max(b.x2, 0.0), width), y2=min(max(b.y2, 0.0), height))


def to_original(b: Box, scale_x: float, scale_y: float) -> Box:
    """View pixels -> original pixels."""
    return replace(b, x1=b.x1 * scale_x, y1=b.y1 * scale_y, x2=b.x2 * scale_x, y2=b.y2 * scale_y)


def to_view(b: Box, scale_x: float, scale_y: float) -> Box:
    """Original pixels -> view pixels."""
    return replace(b, x1=b.x1 / scale_x, y1=b.y1 / scale_y, x2=b.x2 / scale_x, y2=b.y2 / scale_y)


def pad(b: Box, margin: float) -> Box:
    """Grow each side by `margin` times the box's own width/height (context around a region)."""
    dx, dy = b.width * margin, b.height * margin
    return replace(b, x1=b.x1 - dx, y1=b.y1 - dy, x2=b.x2 + dx, y2=b.y2 + dy)


def ensure_min_side(b: Box, min_side: float, width: float, height: float) -> Box:
    """Grow a box about its centre to at least min_side per side, shifted to stay in the image.

    The image may itself be smaller than min_side; then the box is the whole side.
    """
    def grow(lo: float, hi: float, limit: float) -> tuple[float, float]:
        side = min(max(hi - lo, min_side), limit)
        c = (lo + hi) / 2
        lo = min(max(c - side / 2, 0.0), limit - side)
        return lo, lo + side

    x1, x2 = grow(b.x1, b.x2, width)
    y1, y2 = grow(b.y1, b.y2, height)
    return replace(b, x1=x1, y1=y1, x2=x2, y2=y2)


def iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a.x2, b.x2) - max(a.x1, b.x1))
    iy = max(0.0, min(a.y2, b.y2) - max(a.y1, b.y1))
    inter = ix * iy
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


def merge_overlapping(boxes: list[Box], threshold: float = 0.3) -> list[Box]:
    """Union boxes whose IoU exceeds `threshold` (or where one contains the other), repeatedly.

    The merged box keeps the highest score. Result is ordered by score, highest first.
    """
    out = [normalise(b) for b in boxes]
    changed = True
    while changed:
        changed = False
        for i in range(len(out)):
            for j in range(i + 1, len(out)):
                a, b = out[i], out[j]
                inter = max(0.0, min(a.x2, b.x2) - max(a.x1, b.x1)) * max(0.0, min(a.y2, b.y2) - max(a.y1, b.y1))
                contained = inter > 0 and inter >= 0.9 * min(a.area, b.area)
                if iou(a, b) > threshold or contained:
                    out[i] = Box(min(a.x1, b.x1), min(a.y1, b.y1), max(a.x2, b.x2), max(a.y2, b.y2),
                                 max(a.score, b.score))
                    del out[j]
                    changed = True
                    break
            if changed:
                break
    return sorted(out, key=lambda b: -b.score)


def to_int(b: Box) -> Box:
    """Round outward to whole pixels."""
    return replace(b, x1=float(np.floor(b.x1)), y1=float(np.floor(b.y1)),
                   x2=float(np.ceil(b.x2)), y2=float(np.ceil(b.y2)))


def region_box(b: Box, width: int, height: int, margin: float, min_side: int) -> Box:
    """The box actually cut for zooming: padded, at least min_side, inside the image, whole pixels."""
    b = clamp(pad(normalise(b), margin), width, height)
    b = ensure_min_side(b, min_side, width, height)
    return clamp(to_int(b), width, height)


def crop(pixels: np.ndarray, b: Box) -> Crop:
    """Cut b (original pixels, whole-pixel box) from the full-resolution image (h, w, 3)."""
    x1, y1, x2, y2 = int(b.x1), int(b.y1), int(b.x2), int(b.y2)
    return Crop(box=b, pixels=pixels[y1:y2, x1:x2])
