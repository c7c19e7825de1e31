"""`zoomin train`: fit the compact detector's two networks on a labelled set.

Labelled sets: the labels.jsonl written by `zoomin synth` (with region boxes), or two folders of
a user's own images (`--real DIR --generated DIR`; generated images count as generated
everywhere). Training reads every image through the same decoder the job uses, so the scan net
learns on exactly the reduced views it will see, and the zoom net on native-resolution pixels.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from .compact_model import SCAN_STRIDE, CompactModel, pool_logits
from .decode import DecodeConfig, decode_full, prepare
from .rationale import measure
from .records import ImageInput

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    file: str
    label: int              # 1 generated, 0 real
    kind: str
    split: str
    view: np.ndarray        # uint8 (h, w, 3): the scan view exactly as the job decodes it
    full: np.ndarray        # uint8 (H, W, 3)
    mask: np.ndarray        # bool (H, W): generated pixels
    data: bytes = b""       # the encoded file, for end-to-end evaluation through the chain


@dataclass(frozen=True)
class TrainConfig:
    scan_steps: int = 500
    zoom_steps: int = 700
    batch: int = 24
    lr: float = 2e-3
    seed: int = 0
    patch: int = 64           # zoom training patch side, native pixels
    view_crop: int = 128      # scan training crop side, view pixels (multiple of 8)


def load_labelled(labels: Optional[str] = None, real_dir: Optional[str] = None,
                  generated_dir: Optional[str] = None, decode: DecodeConfig = DecodeConfig()) -> list[Sample]:
    records = []
    if labels:
        root = Path(labels).parent
        for line in Path(labels).read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                records.append((root / r["file"], r["label"] == "generated", r.get("kind", ""),
                                r.get("split", "train"), r.get("boxes") or None))
    for folder, is_gen in ((real_dir, False), (generated_dir, True)):
        if folder:
            files = sorted(p for p in Path(folder).rglob("*") if p.is_file())
            for k, p in enumerate(files):  # every 10th file is held out for validation
                records.append((p, is_gen, "whole" if is_gen else "real",
                                "val" if k % 10 == 9 else "train", None))
    samples = []
    for path, is_gen, kind, split, boxes in records:
        data = path.read_bytes()
        p = prepare(ImageInput(str(path), data), decode)
        if p.view is None:
            log.warning("train: skipping %s (%s)", path, p.error)
            continue
        full = decode_full(data, decode)
        mask = np.zeros(full.shape[:2], bool)
        if is_gen:
            for x1, y1, x2, y2 in boxes or [[0, 0, full.shape[1], full.shape[0]]]:
                mask[y1:y2, x1:x2] = True
        samples.append(Sample(str(path), int(is_gen), kind, split, p.view.pixels, full, mask, data))
    if not samples:
        raise RuntimeError("no usable labelled images")
    return samples


def _batch(arrays: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255


def _view_crop(s: Sample, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random size x size crop of the view (edge-padded if smaller) and its mask fraction per cell."""
    vh, vw = s.view.shape[:2]
    m = F.interpolate(torch.from_numpy(s.mask[None, None].astype(np.float32)), size=(vh, vw), mode="area")[0, 0].numpy()
    ph, pw = max(0, size - vh), max(0, size - vw)
    view = np.pad(s.view, ((0, ph), (0, pw), (0, 0)), mode="edge")
    m = np.pad(m, ((0, ph), (0, pw)), mode="edge")
    y, x = rng.integers(view.shape[0] - size + 1), rng.integers(view.shape[1] - size + 1)
    y, x = y // SCAN_STRIDE * SCAN_STRIDE, x // SCAN_STRIDE * SCAN_STRIDE
    crop, mc = view[y:y + size, x:x + size], m[y:y + size, x:x + size]
    cells = mc.reshape(size // SCAN_STRIDE, SCAN_STRIDE, size // SCAN_STRIDE, SCAN_STRIDE).mean(axis=(1, 3))
    return crop, cells


def _patch(samples: list[Sample], positive: bool, size: int, rng: np.random.Generator) -> np.ndarray:
    """A native-resolution patch entirely inside (positive) or entirely outside generated pixels."""
    pool = [s for s in samples if s.label == 1] if positive else samples
    for _ in range(200):
        s = pool[rng.integers(len(pool))]
        H, W = s.full.shape[:2]
        if H < size or W < size:
            continue
        y, x = rng.integers(H - size + 1), rng.integers(W - size + 1)
        frac = s.mask[y:y + size, x:x + size].mean()
        if (positive and frac == 1.0) or (not positive and frac == 0.0):
            p = s.full[y:y + size, x:x + size]
            return p[:, ::-1] if rng.random() < 0.5 else p
    raise RuntimeError("could not sample a training patch; is the labelled set too small?")


def train(samples: list[Sample], cfg: TrainConfig = TrainConfig(), meta: Optional[dict] = None
          ) -> CompactModel:
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    train_set = [s for s in samples if s.split == "train"] or samples
    model = CompactModel.new(meta)
    t0 = time.perf_counter()

    # The scan net: per-cell probability that the cell is generated, on reduced views.
    opt = torch.optim.AdamW(model.scan.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.scan_steps)
    model.scan.train()
    for step in range(cfg.scan_steps):
        pairs = [_view_crop(train_set[rng.integers(len(train_set))], cfg.view_crop, rng) for _ in range(cfg.batch // 2)]
        x = _batch([p[0] for p in pairs])
        y = torch.from_numpy(np.stack([p[1] for p in pairs])).float()
        loss = F.binary_cross_entropy_with_logits(model.scan(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == cfg.scan_steps - 1:
            log.info("scan step %d/%d loss %.4f", step + 1, cfg.scan_steps, loss.item())

    # The zoom net: native patches, half inside generated regions, half outside any.
    opt = torch.optim.AdamW(model.zoom.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.zoom_steps)
    model.zoom.train()
    half = cfg.batch // 2
    y = torch.cat([torch.ones(half), torch.zeros(half)])
    for step in range(cfg.zoom_steps):
        x = _batch([_patch(train_set, True, cfg.patch, rng) for _ in range(half)]
                   + [_patch(train_set, False, cfg.patch, rng) for _ in range(half)])
        loss = F.binary_cross_entropy_with_logits(pool_logits(model.zoom(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == cfg.zoom_steps - 1:
            log.info("zoom step %d/%d loss %.4f", step + 1, cfg.zoom_steps, loss.item())
    model.scan.eval()
    model.zoom.eval()

    # Reference levels of the rationale's statistics in real pixels of the training set.
    cues = [measure(_patch(train_set, False, 128, rng)) for _ in range(200)]
    model.meta.update({
        "real_cues": {"detail": float(np.median([c.detail for c in cues])),
                      "periodicity": float(np.median([c.periodicity for c in cues]))},
        "train_seconds": round(time.perf_counter() - t0, 1),
        "train_config": cfg.__dict__,
        "train_images": len(train_set),
    })
    return model


def score_samples(model: CompactModel, samples: list[Sample], batch: int = 16
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scan score, best crop score, final score) per sample, through the chain the job runs."""
    from .backends.compact import CompactBackend
    from .stages import ExamineConfig, examine
    backend = CompactBackend(model=model)
    first, crop, final = [], [], []
    for i in range(0, len(samples), batch):
        chunk = [prepare(ImageInput(s.file, s.data)) for s in samples[i:i + batch]]
        for r in examine(backend, chunk, ExamineConfig()):
            first.append(r.initial_score if r.initial_score is not None else 0.5)
            crop.append(max((b.score for b in r.boxes), default=0.5))
            final.append(r.score if r.score is not None else 0.5)
    return np.array(first), np.array(crop), np.array(final)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-9, 1 - 1e-9)
    return np.log(p / (1 - p))


def fit_logistic(features: np.ndarray, labels: np.ndarray) -> list[float]:
    """Logistic regression of the label on the feature columns: [w_1, ..., w_k, bias]."""
    x = torch.tensor(features, dtype=torch.float64).reshape(len(labels), -1)
    y = torch.tensor(labels, dtype=torch.float64)
    w = torch.zeros(x.shape[1] + 1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=200)

    def closure():
        opt.zero_grad()
        z = x @ w[:-1] + w[-1]
        # a small L2 penalty keeps the weights finite when the training split is separable
        loss = F.binary_cross_entropy_with_logits(z, y) + 1e-2 * (w[:-1] ** 2).sum()
        loss.backward()
        return loss
    opt.step(closure)
    return [round(float(v), 4) for v in w.detach()]


def calibrate_and_validate(model: CompactModel, samples: list[Sample]) -> dict:
    """Fit the score calibrations on the training split; report accuracy on the held-out split
    (photos never seen in training), for the scan alone and for scan + zoom, per kind.

    scan:  P(generated) = sigmoid(a * max cell logit + b)
    final: P(generated) = sigmoid(u * logit(scan) + v * logit(best crop) + c)
    """
    from .backends.compact import CompactBackend
    from .records import View
    train_set = [s for s in samples if s.split == "train"] or samples
    labels = np.array([s.label for s in train_set])
    for key in ("scan_calibration", "fusion"):
        model.meta.pop(key, None)
    model.meta["threshold"] = 0.5  # both scores are fitted probabilities
    backend = CompactBackend(model=model)
    max_logit = np.array([m.max() for m in backend.scan_logits([View(s.view, 1.0, 1.0) for s in train_set])])
    model.meta["scan_calibration"] = fit_logistic(max_logit[:, None], labels)
    first, crop, _ = score_samples(model, train_set)
    model.meta["fusion"] = fit_logistic(np.stack([_logit(first), _logit(crop)], axis=1), labels)
    val = [s for s in samples if s.split == "val"]
    report: dict = {"val_images": len(val)}
    if val:
        first, _, final = score_samples(model, val)
        for name, scores in (("scan", first), ("scan_zoom", final)):
            for kind in sorted({s.kind for s in val}):
                idx = [i for i, s in enumerate(val) if s.kind == kind]
                acc = float(np.mean([(scores[i] >= 0.5) == bool(val[i].label) for i in idx]))
                report[f"{name}_accuracy_{kind}"] = round(acc, 3)
            report[f"{name}_accuracy"] = round(float(np.mean(
                [(scores[i] >= 0.5) == bool(s.label) for i, s in enumerate(val)])), 3)
    model.meta["validation"] = report
    return report
