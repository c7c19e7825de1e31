"""Metrics of a labelled scan: verdicts, scores, calibration, boxes, flips. Pure functions.

Definitions (the ones `zoomin evaluate` prints):
- accuracy: share of scored images whose final verdict equals the label; `first_accuracy`
  the same for the scan's first verdict (in a `--stages scan` run the two are equal).
- precision / recall / F1 of the class `generated`.
- ROC-AUC of the final score (probability of generated), ties counted half.
- ECE: expected calibration error of the score in 10 equal-width bins:
  sum over bins of (bin share) * |mean score - share of generated|.
- mean_iou: over every predicted box of a regional fake, its best IoU with a reference box
  (as the paper's reward); region_recall: share of reference boxes matched by some predicted
  box at IoU >= 0.5. Box metrics use regional fakes only (reference boxes that are not the
  whole image).
- flip_rate: share of scored images whose final verdict differs from the first.
Images with an error status are counted (`errors`) but not scored.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional

import numpy as np

from .geometry import iou
from .records import GENERATED, Box


@dataclass(frozen=True)
class Item:
    label: int                               # 1 generated, 0 real
    status: str = "ok"
    score: Optional[float] = None
    verdict: Optional[str] = None
    initial_verdict: Optional[str] = None
    boxes: tuple = ()                        # predicted (x1, y1, x2, y2), original pixels
    ref_boxes: tuple = ()                    # reference boxes, original pixels
    kind: str = ""
    source: str = ""
    split: str = ""                          # the label's split (e.g. test / holdout), if it has one
    width: int = 0
    height: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def regional(self) -> bool:
        if not self.label or not self.ref_boxes or self.kind == "whole":
            return False
        if self.kind == "regional":
            return True
        area = self.width * self.height
        return not area or sum((b[2] - b[0]) * (b[3] - b[1]) for b in self.ref_boxes) < 0.9 * area


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> Optional[float]:
    """Mann-Whitney: mean rank of the positives (ties share their average rank); O(n log n)."""
    from scipy.stats import rankdata
    n_pos, n_neg = int((labels == 1).sum()), int((labels == 0).sum())
    if not n_pos or not n_neg:
        return None
    ranks = rankdata(scores)
    return float((ranks[labels == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def ece(labels: np.ndarray, scores: np.ndarray, bins: int = 10) -> Optional[float]:
    if not len(scores):
        return None
    idx = np.minimum((scores * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.mean() * abs(scores[m].mean() - labels[m].mean())
    return float(total)


def ece_floor(scores: np.ndarray, bins: int = 10, draws: int = 200, seed: int = 0,
              q: Optional[float] = None) -> Optional[float]:
    """The ECE a perfectly calibrated model with these scores would show on this many images:
    the mean (or the `q` quantile) of the ECE over label sets drawn from the scores themselves.
    Binned ECE is biased upwards on small sets (about 0.06 at 150 images), so an ECE is only
    meaningful next to this."""
    if not len(scores):
        return None
    rng = np.random.default_rng(seed)
    values = [ece((rng.random(len(scores)) < scores).astype(np.float64), scores, bins) for _ in range(draws)]
    return float(np.quantile(values, q) if q is not None else np.mean(values))


def box_metrics(items: Iterable[Item]) -> dict:
    ious, matched, refs = [], 0, 0
    for it in items:
        if not it.regional:
            continue
        ref = [Box(*b[:4]) for b in it.ref_boxes]
        pred = [Box(*b[:4]) for b in it.boxes]
        ious.extend(max((iou(p, r) for r in ref), default=0.0) for p in pred)
        refs += len(ref)
        matched += sum(1 for r in ref if any(iou(p, r) >= 0.5 for p in pred))
    return {"regional_images": sum(1 for it in items if it.regional),
            "mean_iou": float(np.mean(ious)) if ious else None,
            "region_recall": matched / refs if refs else None}


def metrics(items: list[Item]) -> dict:
    ok = [it for it in items if it.status == "ok" and it.score is not None]
    out: dict = {"images": len(items), "errors": len(items) - len(ok)}
    if not ok:
        return out
    y = np.array([it.label for it in ok])
    s = np.array([it.score for it in ok], dtype=np.float64)
    pred = np.array([it.verdict == GENERATED for it in ok])
    first = np.array([it.initial_verdict == GENERATED for it in ok])
    tp, fp, fn = int((pred & (y == 1)).sum()), int((pred & (y == 0)).sum()), int((~pred & (y == 1)).sum())
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
    out.update({
        "accuracy": float((pred == (y == 1)).mean()),
        "first_accuracy": float((first == (y == 1)).mean()),
        "precision": precision, "recall": recall, "f1": f1,
        "roc_auc": roc_auc(y, s), "ece": ece(y, s), "ece_floor": ece_floor(s),
        "flip_rate": float((pred != first).mean()),
    })
    out.update(box_metrics(ok))
    return out


GROUPS = ("kind", "source", "split")


def report(items: list[Item], groups: tuple[str, ...] = GROUPS) -> dict:
    """Overall metrics, and per value of each grouping attribute."""
    rep: dict = {"overall": metrics(items)}
    for g in groups:
        values = sorted({getattr(it, g) for it in items if getattr(it, g)})
        rep[g] = {v: metrics([it for it in items if getattr(it, g) == v]) for v in values}
    return rep


def threshold_at_fpr(labels: np.ndarray, scores: np.ndarray, fpr: float) -> dict:
    """The lowest threshold (verdict generated at score >= it) that flags at most `fpr` of the
    real images, and what it gives: the measured false-positive rate and the recall of the
    generated ones. `reliable` is False when fewer than 5 false positives are allowed (fewer than
    5/fpr real images): the rate then rests on a handful of images."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    real = np.sort(scores[labels == 0])[::-1]
    gen = scores[labels == 1]
    if not len(real):
        return {"threshold": None, "fpr": None, "recall": None, "reals": 0, "generated": len(gen), "reliable": False}
    allowed = int(np.floor(fpr * len(real) + 1e-9))
    # just above the (allowed+1)-th highest real score: that one and everything below it pass as real
    t = 0.0 if allowed >= len(real) else float(np.nextafter(real[allowed], np.inf))
    return {"threshold": t, "fpr": float((real >= t).mean()),
            "recall": float((gen >= t).mean()) if len(gen) else None,
            "reals": int(len(real)), "generated": int(len(gen)), "reliable": fpr * len(real) >= 5}


def escalation_band(labels: np.ndarray, scores: np.ndarray, fpr: float, recall: float) -> dict:
    """For a cascade whose first tier decides outside [low, high) and sends the images inside to a
    second tier: `high` flags at most `fpr` of the real images on tier 1's score alone
    (threshold_at_fpr); `low` keeps `recall` of the generated images at or above it, so that a
    second tier that judged the band perfectly would reach that recall (`recall_ceiling`).
    `escalated` is the share of all these images the band sends on."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    high = threshold_at_fpr(labels, scores, fpr)["threshold"]
    gen = np.sort(scores[labels == 1])
    if high is None or not len(gen):
        return {"low": None, "high": high, "escalated": None, "recall_ceiling": None}
    lost = int(np.floor((1 - recall) * len(gen) + 1e-9))   # generated images tier 1 may call real
    low = min(float(gen[min(lost, len(gen) - 1)]), high)
    return {"low": low, "high": high, "escalated": float(((scores >= low) & (scores < high)).mean()),
            "recall_ceiling": float((gen >= low).mean())}
