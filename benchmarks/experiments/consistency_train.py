"""Training the self-consistency check (`zoomin train-consistency`) on real photos only.

Each real photo gets 1-3 regions altered by one of `pseudo.py`'s operations (resample, blur,
noise, median, an earlier JPEG) and then one final JPEG save for the whole image, as every image
of a synthetic set or an archive gets. Pairs of 64 px patches of one image are "same" (both
outside the altered regions, or both inside one) or "different" (one in, one out). No generator
is involved, so no generator family is ever "seen".

A few altered images are kept aside to fit how the map becomes a box (the `relative` height
around the peak with the best recall of the altered regions at IoU 0.5) and to report how often
the map's peak lands in an altered region.
"""
from __future__ import annotations

import logging
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from zoomin_core.compact_model import to_batch
from consistency import PATCH, ConsistencyModel, peak_region
from zoomin_core.decode import decode_full
from zoomin_core.geometry import iou
from pseudo import make_pseudo
from zoomin_core.records import Box
from zoomin_core.synth import encode_jpeg
from zoomin_core.train import _fit

log = logging.getLogger(__name__)

BOX_GRID = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


def altered(reals: list[np.ndarray], n: int, rng: np.random.Generator, jpeg_quality: int = 92) -> list:
    """n (pixels, boxes) pairs: real photos with regions altered, then JPEG-saved whole. Regions
    narrower than a patch are dropped (no patch fits inside them)."""
    out = []
    for _ in range(n * 3):
        if len(out) >= n:
            break
        full = reals[rng.integers(len(reals))]
        if min(full.shape[:2]) < 2 * PATCH:
            continue
        pixels, boxes, _ = make_pseudo(full, rng)
        boxes = [b for b in boxes if b[2] - b[0] >= PATCH and b[3] - b[1] >= PATCH]
        if boxes:
            out.append((decode_full(encode_jpeg(pixels, jpeg_quality)), boxes))
    return out


def _patch(img: np.ndarray, boxes: list, inside: bool, rng: np.random.Generator, box=None):
    H, W = img.shape[:2]
    for _ in range(100):
        if inside:
            x1, y1, x2, y2 = box
            y, x = rng.integers(y1, y2 - PATCH + 1), rng.integers(x1, x2 - PATCH + 1)
        else:
            y, x = rng.integers(H - PATCH + 1), rng.integers(W - PATCH + 1)
            if any(x < b[2] and x + PATCH > b[0] and y < b[3] and y + PATCH > b[1] for b in boxes):
                continue
        return img[y:y + PATCH, x:x + PATCH]
    return None


def pairs(pool: list, rng: np.random.Generator, n: int):
    """n patch pairs: 35% both outside, 15% both inside one region (label 1), 50% one of each (0)."""
    a, b, y = [], [], []
    while len(y) < n:
        img, boxes = pool[rng.integers(len(pool))]
        box = boxes[rng.integers(len(boxes))]
        r = rng.random()
        first_in, second_in, same = (False, False, 1) if r < 0.35 else (True, True, 1) if r < 0.5 else (True, False, 0)
        p, q = _patch(img, boxes, first_in, rng, box), _patch(img, boxes, second_in, rng, box)
        if p is None or q is None:
            continue
        a.append(p)
        b.append(q)
        y.append(same)
    return to_batch(a), to_batch(b), torch.tensor(y, dtype=torch.float32)


class _PairNet(nn.Module):
    """The check's two nets as one module for `train._fit`: (n, 2, 3, h, w) patch pairs -> logits
    that each pair went through the same process."""

    def __init__(self, model: ConsistencyModel):
        super().__init__()
        self.embed, self.same = model.embed, model.same

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.same(self.embed(x[:, 0]), self.embed(x[:, 1]))


def fit_box(model: ConsistencyModel, pool: list) -> dict:
    """The map -> box setting with the best recall of altered regions at IoU 0.5 on `pool`, and how
    often the map's peak lies in an altered region."""
    maps = [(model.anomaly_map(img), boxes, img.shape) for img, boxes in pool]
    maps = [m for m in maps if m[0] is not None]
    hits_peak = 0
    for m, boxes, _ in maps:
        y, x = np.unravel_index(int(np.argmax(m)), m.shape)
        cx, cy = (x + 0.5) * PATCH, (y + 0.5) * PATCH
        hits_peak += any(b[0] <= cx < b[2] and b[1] <= cy < b[3] for b in boxes)
    best, best_recall = BOX_GRID[0], -1.0
    for rel in BOX_GRID:
        found = 0
        for m, boxes, shape in maps:
            box = peak_region(m, rel, shape)
            found += any(iou(box, Box(*b)) >= 0.5 for b in boxes)
        recall = found / max(1, len(maps))
        if recall > best_recall:
            best, best_recall = rel, recall
    return {"relative": best, "fit_images": len(maps), "region_recall_iou50": round(best_recall, 3),
            "peak_in_region": round(hits_peak / max(1, len(maps)), 3)}


def train_consistency(reals: list[np.ndarray], steps: int = 5000, images: int = 400, batch: int = 48,
                      seed: int = 0, device: str = "cpu", jpeg_quality: int = 92, fit_images: int = 60,
                      version: str = "consistency-unversioned", progress=None) -> ConsistencyModel:
    """Train on `reals` (uint8 RGB photos, at least 128 px a side). `progress(step, steps, loss,
    pair_accuracy)` is called every 250 steps."""
    if not reals:
        raise ValueError("no readable real photos to train on")
    if images < 10 or steps < 1:
        raise ValueError(f"--images must be at least 10 and --steps at least 1 (got {images} and {steps})")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    pool = altered(reals, images, rng, jpeg_quality)
    held = altered(reals, fit_images, rng, jpeg_quality)
    if len(pool) < 10:
        raise ValueError(f"only {len(pool)} altered images could be made from {len(reals)} photos: "
                         "the check needs photos of at least 128 px a side with room for regions")
    log.info("consistency: %d altered images to train on, %d to fit the box (%.0f s)", len(pool), len(held),
             time.perf_counter() - t0)
    model = ConsistencyModel()
    net = _PairNet(model).to(device)
    acc: list[float] = []

    def batch_of_pairs():
        x1, x2, y = pairs(pool, rng, batch)
        return torch.stack([x1, x2], 1), y

    def on_step(step, logit, y, loss):
        acc.append(float(((logit > 0).float() == y).float().mean()))
        if progress and (step % 250 == 0 or step == steps - 1):
            progress(step + 1, steps, loss.item(), float(np.mean(acc[-250:])))

    train_s = _fit(net, steps, 2e-3, batch_of_pairs, F.binary_cross_entropy_with_logits, "consistency",
                   on_step)["seconds"]
    net.cpu()
    model.eval()
    box = fit_box(model, held)
    model.meta = {"version": version, "steps": steps, "batch": batch, "seed": seed, "train_photos": len(reals),
                  "altered_images": len(pool), "jpeg_quality": jpeg_quality, "train_device": device,
                  "train_seconds": round(train_s, 1), "pair_accuracy_last_250": round(float(np.mean(acc[-250:])), 3),
                  "box": box}
    return model
