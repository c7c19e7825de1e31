"""Rationales of the compact backend, built from what it measured, never invented prose.

The final text says, in this order: the verdict and its score; how that score follows from the
two looks it names (the first look at the whole image and the zoom into the most suspicious
region, combined by `compact_model.fuse`); then every examined region, most suspicious first,
in the `boxes` column's frame (original pixels, without the crop's margin) and order.

A pixel statistic of a region is named only where it carries signal: `zoomin train` measures,
on the calib split, how well each statistic alone tells real crops from generated ones
(`meta["cue_auc"]`); one that does no better than chance there (ROC-AUC within 0.35-0.65) is
never quoted, and one that does is quoted only for a region whose zoom score and statistic
point the same way.
- fine detail: mean squared residual after removing the 3x3 local mean (generators that decode
  through an up-sampler tend to lose or smear fine detail);
- 2-pixel pattern: energy of the 2x2 checkerboard component relative to fine detail
  (transposed convolutions and pixel-shuffle decoders leave a period-2 pattern).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from .records import Box

# |ROC-AUC - 0.5| below this on the calib split: the statistic is not quoted.
CUE_SIGNAL = 0.15
# A quoted statistic must be at least this far from real photos' level (as a ratio, either way).
CUE_RATIO = 1.5


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


_CUE_WORDS = {"detail": ("fine detail", "smoothed texture"),
              "periodicity": ("a 2-pixel pattern", "an up-sampling trace")}


def cue_phrase(c: Cues, reference: dict, cue_auc: dict, generated: bool) -> Optional[str]:
    """A plain-words statement of the one statistic that carries signal and points the way the
    region's score does, or None. `cue_auc[name]` > 0.5 means higher values go with generated."""
    best = None
    for name in ("periodicity", "detail"):
        auc, ref = cue_auc.get(name), reference.get(name)
        if auc is None or not ref or abs(auc - 0.5) < CUE_SIGNAL:
            continue
        ratio = getattr(c, name) / ref
        says_generated = ratio >= CUE_RATIO if auc > 0.5 else ratio <= 1 / CUE_RATIO
        says_real = 1 / CUE_RATIO < ratio < CUE_RATIO
        if (generated and says_generated) or (not generated and says_real):
            strength = abs(np.log(max(ratio, 1e-6)))
            if best is None or strength > best[0]:
                best = (strength, name, ratio)
    if best is None:
        return None
    _, name, ratio = best
    what, meaning = _CUE_WORDS[name]
    if generated:
        return f"{what} at {ratio:.1f}x the level of real photos ({meaning})"
    return f"{what} at the level of real photos ({ratio:.1f}x)"


def scan_explanation(boxes: Sequence[Box], score: float, verdict: str) -> str:
    """Stage-1 text: what the reduced view showed."""
    if not boxes:
        return f"First look at the whole image (reduced): {verdict} ({score:.2f}); no region stands out."
    # No count: overlapping proposals are merged and cut to --max-boxes after this text is made.
    return f"First look at the whole image (reduced): {verdict} ({score:.2f}); its most suspicious regions go to the zoom."


def _where(b: Box) -> str:
    return f"({int(b.x1)},{int(b.y1)})-({int(b.x2)},{int(b.y2)})"


def decimals(score: float, threshold: float) -> int:
    """Fewest decimals (2 to 6) at which a score and the threshold read the way the verdict goes:
    a score just under the threshold never prints equal to it."""
    for d in range(2, 7):
        if (round(score, d) >= round(threshold, d)) == (score >= threshold):
            return d
    return 6


def _pair(score: float, threshold: float) -> tuple[str, str]:
    d = decimals(score, threshold)
    return f"{score:.{d}f}", f"{threshold:.{d}f}"


def region_words(score: float, threshold: float) -> str:
    """How a region's score reads: generated from the threshold, leaning generated from even odds."""
    if score >= threshold:
        return "looks generated"
    return "leans generated, under the threshold" if score >= 0.5 else "looks like a camera photo"


def zoom_rationale(regions: Sequence[tuple[Box, float, Cues]], verdict: str, score: float,
                   initial_verdict: str, initial_score: float, zoom_weight: float, threshold: float,
                   reference: dict, cue_auc: dict, point: str = "") -> str:
    """Stage-2 text. `regions`: (region in original pixels, zoom score, cues), in any order; they
    are listed most suspicious first, the order of the `boxes` column. `point`: which operating
    point set the threshold, in a few words."""
    shown, at = _pair(score, threshold)
    head = f"{verdict.capitalize()}, score {shown} (generated at {at} or more{', ' + point if point else ''})."
    order = sorted(range(len(regions)), key=lambda k: -regions[k][1])
    if not regions:
        return (f"{head} No region could be examined at full resolution, so the first look at the whole "
                f"image decides: {initial_score:.2f}.")
    best = regions[order[0]][1]
    how = (f"The first look at the whole image scored {initial_score:.2f} and the zoom into the most "
           f"suspicious region (region 1) {best:.2f}; the final score weighs them {1 - zoom_weight:.0%} and "
           f"{zoom_weight:.0%} in log-odds, so it lies between them.")
    if verdict != initial_verdict:
        how += f" Zooming in overturned the first look ({initial_verdict})."
    parts = []
    for n, k in enumerate(order, 1):
        b, s, c = regions[k]
        text = (f"Region {n} {_where(b)}, {int(b.width)}x{int(b.height)} px: {_pair(s, threshold)[0]}, "
                f"{region_words(s, threshold)}")
        cue = cue_phrase(c, reference, cue_auc, s >= threshold)
        parts.append(text + (f"; {cue}." if cue else "."))
    return " ".join([head, how] + parts)


def classifier_scan_explanation(score: float, threshold: float, hot: int, tiles: int, side: int) -> str:
    """Stage-1 text of the classifier backend: the whole image, then its tile scan. `side`: a
    tile's side in original pixels."""
    shown, _ = _pair(score, threshold)
    verdict = "generated" if score >= threshold else "real"
    n = f"{tiles} tile{'s' if tiles != 1 else ''} ({side} px of the original each)"
    where = (f"{hot} of its {n} reach the threshold; they make the regions" if hot
             else f"none of its {n} reaches the threshold; the most suspicious one is the region")
    return f"The classifier scored the whole image {shown} ({verdict}); {where}."


def classifier_rationale(regions: Sequence[tuple[Box, float, int]], verdict: str, score: float,
                         whole: float, threshold: float, point: str = "", generator: Optional[str] = None) -> str:
    """Stage-2 text of the classifier backend. `regions`: (region in original pixels, zoom score,
    tiles scored), in any order; listed most suspicious first. The final score is the highest
    look (the whole image or a region), so the look that decided is named."""
    shown, at = _pair(score, threshold)
    head = f"{verdict.capitalize()}, score {shown} (generated at {at} or more{', ' + point if point else ''})."
    order = sorted(range(len(regions)), key=lambda k: -regions[k][1])
    if not regions:
        how = (f"No region could be examined at full resolution, so the whole image's score decides: "
               f"{_pair(whole, threshold)[0]}.")
    else:
        best = regions[order[0]][1]
        decider = "region 1" if best > whole else "the whole image"
        how = (f"The classifier scored the whole image {_pair(whole, threshold)[0]} and, zoomed in at full "
               f"resolution, the most suspicious region (region 1) {_pair(best, threshold)[0]}; the final score is "
               f"the higher of the looks ({decider}).")
    parts = [f"Region {n} {_where(regions[k][0])}, {int(regions[k][0].width)}x{int(regions[k][0].height)} px, "
             f"{regions[k][2]} tile(s): {_pair(regions[k][1], threshold)[0]}, {region_words(regions[k][1], threshold)}."
             for n, k in enumerate(order, 1)]
    tail = [f"Most likely generator: {generator}."] if generator and verdict != "real" else []
    return " ".join([head, how] + parts + tail)
