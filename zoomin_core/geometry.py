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


def _starts(length: int, side: int, step: float) -> list[int]:
    """Tile starts along one axis: evenly spaced, the first at 0 and the last ending at the edge."""
    if length <= side:
        return [0]
    n = 1 + int(np.ceil((length - side) / step - 1e-9))
    return [int(round(x)) for x in np.linspace(0, length - side, n)]


def tiles(width: int, height: int, side: int, overlap: float, max_tiles: int, grow: bool = True) -> list[Box]:
    """Square tiles of `side` pixels covering a width x height image, neighbours overlapping by
    `overlap` of a side, at most `max_tiles`. Over the cap, grow=True makes the tiles larger (every
    pixel stays covered, each tile then seen at a lower resolution) up to the image's shorter
    side; beyond that, and with grow=False, the tiles keep their side and fewer of them are
    spread evenly (each seen at full resolution, with gaps between: a long panorama).
    A side of the image shorter than `side` is covered by one tile as long as that side."""
    side = max(1, int(side))
    while True:
        step = max(1.0, side * (1.0 - overlap))
        xs, ys = _starts(width, side, step), _starts(height, side, step)
        if len(xs) * len(ys) <= max_tiles:
            break
        if grow and side < min(width, height):
            side = min(int(np.ceil(side * 1.1)), min(width, height))
            continue
        # the most tiles under the cap, split between the axes as the full grid is
        nx, ny = max(((a, b) for a in range(1, len(xs) + 1) for b in range(1, len(ys) + 1) if a * b <= max_tiles),
                     key=lambda t: (t[0] * t[1], -abs(np.log(t[0] * len(ys) / (t[1] * len(xs))))))
        xs = [int(round(x)) for x in np.linspace(0, max(0, width - side), nx)]
        ys = [int(round(y)) for y in np.linspace(0, max(0, height - side), ny)]
        break
    return [Box(x, y, min(width, x + side), min(height, y + side)) for y in ys for x in xs]
