"""`zoomin train`: fit the compact detector's two networks, then calibrate their scores.

Labelled sets: the labels.jsonl written by `zoomin synth` (with region boxes and splits), or two
folders of a user's own images (`--real DIR --generated DIR`; a generated image counts as
generated everywhere). Every image is read through the decoder the job uses, so the scan net
learns on exactly the reduced views it will see, and the zoom net on native-resolution pixels.

Splits: "train" fits the networks, "calib" fits the score calibration (never the training
images: a network is over-confident on what it was fitted to), "test" and "holdout" are only
ever evaluated.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from .compact_model import SCAN_STRIDE, CompactModel, peaks, pool_logits, to_batch, to_tensor
from .decode import DecodeConfig, DecodeError, decode_full, prepare
from .rationale import measure
from .records import ImageInput

log = logging.getLogger(__name__)


@dataclass
class Sample:
    file: str
    label: int                       # 1 generated, 0 real
    kind: str                        # real / whole / regional
    source: str                      # generator family, or "real"
    split: str                       # train / calib / test / holdout
    boxes: list                      # generated boxes, original pixels (empty: none / whole)
    data: bytes                      # the encoded file
    view: np.ndarray                 # the scan view exactly as the job decodes it
    width: int
    height: int
    full: Optional[np.ndarray] = None   # full-resolution pixels, train split only
    hard: list = field(default_factory=list)  # real image: where the trained scan looks first

    def cells_to_pixels(self, cells) -> list[list[float]]:
        """Boxes in scan-map cells of this sample's view -> boxes in original pixels."""
        vh, vw = self.view.shape[:2]
        fx, fy = self.width / vw * SCAN_STRIDE, self.height / vh * SCAN_STRIDE
        return [[x1 * fx, y1 * fy, x2 * fx, y2 * fy] for x1, y1, x2, y2, *_ in cells]

    def regions(self) -> list:
        """Generated areas as boxes: the whole image for a wholly generated one."""
        if self.label and not self.boxes:
            return [[0, 0, self.width, self.height]]
        return self.boxes


@dataclass(frozen=True)
class TrainConfig:
    # 3000 scan steps against 1500, the rest the same (the default 2,400-image `zoomin synth`
    # set, box settings fitted on the same grid): test region recall 0.384 -> 0.438, accuracy
    # 0.866 -> 0.887, and held-out real photos called real 0.46 -> 0.65 of the time.
    scan_steps: int = 3000
    zoom_steps: int = 1500
    batch: int = 32
    lr: float = 2e-3
    seed: int = 0
    patch: int = 96           # zoom training patch side, native pixels (96 beat 64 clearly)
    view_crop: int = 128      # scan training crop side, view pixels (multiple of 8)


def _records(labels: Optional[str], real_dir: Optional[str], generated_dir: Optional[str]) -> list[dict]:
    records = []
    if labels:
        root = Path(labels).parent
        for line in Path(labels).read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                r["path"] = root / r["file"]
                records.append(r)
    for folder, is_gen in ((real_dir, False), (generated_dir, True)):
        if folder:
            files = sorted(p for p in Path(folder).rglob("*") if p.is_file() and not p.name.startswith("."))
            for k, p in enumerate(files):  # 7 in 10 train, 1 calib, 2 test
                split = "train" if k % 10 < 7 else "calib" if k % 10 == 7 else "test"
                records.append({"path": p, "file": str(p), "label": "generated" if is_gen else "real",
                                "kind": "whole" if is_gen else "real", "source": Path(folder).name,
                                "split": split, "boxes": []})
    return records


def load_labelled(labels: Optional[str] = None, real_dir: Optional[str] = None,
                  generated_dir: Optional[str] = None, decode: DecodeConfig = DecodeConfig(),
                  exclude_sources: tuple[str, ...] = ()) -> list[Sample]:
    """Read and decode a labelled set. Images of `exclude_sources` are dropped from the train and
    calib splits (leave-one-family-out) and kept for test/holdout."""
    samples = []
    for r in _records(labels, real_dir, generated_dir):
        split = r.get("split", "train")
        if r.get("source") in exclude_sources and split in ("train", "calib"):
            continue
        data = Path(r["path"]).read_bytes()
        p = prepare(ImageInput(str(r["path"]), data), decode)
        if p.view is None:
            log.warning("train: skipping %s (%s)", r["path"], p.error)
            continue
        try:
            full = decode_full(data, decode) if split == "train" else None
        except DecodeError as e:  # the view decoded, the full image did not (e.g. truncated)
            log.warning("train: skipping %s (%s)", r["path"], e.message)
            continue
        if full is not None and full.shape == p.view.pixels.shape and np.array_equal(full, p.view.pixels):
            full = p.view.pixels  # a view as large as the image: one copy in memory, not two
        samples.append(Sample(str(r["path"]), int(r["label"] == "generated"), r.get("kind", ""),
                              r.get("source", ""), split, r.get("boxes") or [], data, p.view.pixels,
                              p.width, p.height, full))
    if not samples:
        raise RuntimeError("no usable labelled images")
    return samples


def _view_mask(s: Sample, y0: int = 0, x0: int = 0, h: Optional[int] = None, w: Optional[int] = None) -> np.ndarray:
    """Fraction of each view pixel that is generated (boxes scaled to the view), in the window of
    h x w view pixels at (y0, x0) (default: the whole view)."""
    vh, vw = s.view.shape[:2]
    h, w = vh - y0 if h is None else h, vw - x0 if w is None else w
    m = np.zeros((h, w), np.float32)
    sx, sy = vw / s.width, vh / s.height
    for x1, y1, x2, y2 in s.regions():
        r1, r2 = max(int(y1 * sy) - y0, 0), min(int(np.ceil(y2 * sy)) - y0, h)
        c1, c2 = max(int(x1 * sx) - x0, 0), min(int(np.ceil(x2 * sx)) - x0, w)
        if r2 > r1 and c2 > c1:
            m[r1:r2, c1:c2] = 1.0
    return m


def _view_crop(s: Sample, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random size x size crop of the view (edge-padded if smaller) and its per-cell target.
    Half the crops of a regional fake are centred on one of its regions: they are small."""
    vh, vw = s.view.shape[:2]
    ph, pw = max(0, size - vh), max(0, size - vw)
    H, W = vh + ph, vw + pw
    if s.boxes and rng.random() < 0.5:
        x1, y1, x2, y2 = s.boxes[rng.integers(len(s.boxes))]
        cy, cx = (y1 + y2) / 2 * vh / s.height, (x1 + x2) / 2 * vw / s.width
        y = int(np.clip(cy - size / 2 + rng.integers(-size // 4, size // 4 + 1), 0, H - size))
        x = int(np.clip(cx - size / 2 + rng.integers(-size // 4, size // 4 + 1), 0, W - size))
    else:
        y, x = rng.integers(H - size + 1), rng.integers(W - size + 1)
    y, x = y // SCAN_STRIDE * SCAN_STRIDE, x // SCAN_STRIDE * SCAN_STRIDE
    if ph or pw:  # a view smaller than the crop: pad it whole (rare, and small)
        view = np.pad(s.view, ((0, ph), (0, pw), (0, 0)), mode="edge")
        m = np.pad(_view_mask(s), ((0, ph), (0, pw)), mode="edge")
        crop, mc = view[y:y + size, x:x + size], m[y:y + size, x:x + size]
    else:  # only the window: a copy of the whole view per crop was a tenth of a CPU step
        crop, mc = s.view[y:y + size, x:x + size], _view_mask(s, y, x, size, size)
    cells = mc.reshape(size // SCAN_STRIDE, SCAN_STRIDE, size // SCAN_STRIDE, SCAN_STRIDE).mean(axis=(1, 3))
    return crop, cells


def _patch(samples: list[Sample], positive: bool, size: int, rng: np.random.Generator) -> np.ndarray:
    """A native-resolution patch entirely inside (positive) or entirely outside generated areas.
    Negatives come a third each from random places in real images, from where the scan looks
    first in real images (hard negatives: exactly what the zoom is shown at inference), and
    from around the regions of regional fakes."""
    gen = [s for s in samples if s.label == 1]
    regional = [s for s in gen if s.boxes]
    real = [s for s in samples if s.label == 0]
    hard = [s for s in real if s.hard]
    pick = rng.random()
    use_hard = not positive and hard and pick < 1 / 3
    pool = gen if positive else hard if use_hard else (regional if regional and pick > 2 / 3 else real or samples)
    for _ in range(200):
        s = pool[rng.integers(len(pool))]
        H, W = s.full.shape[:2]
        if H < size or W < size:
            continue
        regions = s.regions()
        if positive:
            x1, y1, x2, y2 = regions[rng.integers(len(regions))]
            if x2 - x1 < size or y2 - y1 < size:
                continue
            y, x = rng.integers(y1, y2 - size + 1), rng.integers(x1, x2 - size + 1)
        elif use_hard:
            x1, y1, x2, y2 = s.hard[rng.integers(len(s.hard))]
            cy, cx = rng.uniform(y1, y2), rng.uniform(x1, x2)
            y = int(np.clip(cy - size / 2, 0, H - size))
            x = int(np.clip(cx - size / 2, 0, W - size))
        else:
            y, x = rng.integers(H - size + 1), rng.integers(W - size + 1)
            if any(x < bx2 and x + size > bx1 and y < by2 and y + size > by1 for bx1, by1, bx2, by2 in regions):
                continue
        p = s.full[y:y + size, x:x + size]
        return p[:, ::-1] if rng.random() < 0.5 else p
    raise RuntimeError("could not sample a training patch; is the labelled set too small?")


def one_cycle(opt: torch.optim.Optimizer, lr: float, steps: int):
    """One-cycle schedule: a tenth of the steps warming up. Its warm-up must span at least one step
    (10 steps at a tenth divide by zero inside torch); under 3 steps, None: a constant rate."""
    if steps < 3:
        return None
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=max(0.1, 2 / steps))


def _fit(net: torch.nn.Module, steps: int, lr: float, make_batch, loss_fn, name: str, on_step=None) -> dict:
    """AdamW with a one-cycle schedule. Batches are made on the CPU and go wherever the net is.
    `on_step(step, output, target, loss)`, if given, sees each step's result (0-based step).
    Returns the seconds spent in all and making batches."""
    device = next(net.parameters()).device
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = one_cycle(opt, lr, steps)
    net.train()
    t0, t_batches = time.perf_counter(), 0.0
    for step in range(steps):
        tb = time.perf_counter()
        x, y = make_batch()
        t_batches += time.perf_counter() - tb
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True) if y is not None else None
        out = net(x)
        loss = loss_fn(out, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        if on_step is not None:
            on_step(step, out, y, loss)
        if step % 100 == 0 or step == steps - 1:
            log.info("%s step %d/%d loss %.4f", name, step + 1, steps, loss.item())
    # On a GPU the batches made on the CPU can be most of the time: say how much.
    seconds = time.perf_counter() - t0
    log.info("%s: %d steps in %.1f s on %s, %.0f%% of it making batches", name, steps, seconds, device,
             100 * t_batches / max(seconds, 1e-9))
    net.eval()
    return {"steps": steps, "seconds": round(seconds, 2), "batch_seconds": round(t_batches, 2)}


@torch.inference_mode()
def _mark_hard_negatives(model: CompactModel, reals: list[Sample], k: int = 3) -> None:
    """Record, for each real training image, the k areas the trained scan finds most suspicious
    (original pixels): the zoom is trained to clear them."""
    device = next(model.scan.parameters()).device
    for s in reals:
        prob = torch.sigmoid(model.scan(to_tensor(s.view).to(device)))[0].cpu().numpy()
        s.hard = s.cells_to_pixels(peaks(prob, k, threshold=0.0))


def fit_zoom(model: CompactModel, train_set: list[Sample], cfg: TrainConfig, rng: np.random.Generator) -> dict:
    """Train model.zoom on native-resolution patches of `train_set`, half inside generated regions
    and half outside any, the hard negatives taken where model.scan (already trained) looks first
    in real images. Separate from `train` so that a zoom net can be trained again on a kept scan
    net (benchmarks/zoom_retrain.py)."""
    _mark_hard_negatives(model, [s for s in train_set if s.label == 0])
    half = cfg.batch // 2
    labels = torch.cat([torch.ones(half), torch.zeros(half)])

    def zoom_batch():
        return to_batch([_patch(train_set, positive, cfg.patch, rng)
                         for positive in (True, False) for _ in range(half)]), labels

    return _fit(model.zoom, cfg.zoom_steps, cfg.lr, zoom_batch,
                lambda out, y: F.binary_cross_entropy_with_logits(pool_logits(out), y), "zoom")


def train(samples: list[Sample], cfg: TrainConfig = TrainConfig(), meta: Optional[dict] = None,
          device: str = "cpu") -> CompactModel:
    """The scan net, then the zoom net on its hard negatives. The nets learn on `device` ("cpu",
    "cuda", "cuda:1"); the model comes back on the CPU, like a loaded one."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    train_set = [s for s in samples if s.split == "train"]
    if not train_set:
        raise RuntimeError("the labelled set has no 'train' split")
    t0 = time.perf_counter()
    model = CompactModel.new(meta)
    model.scan.to(device)
    model.zoom.to(device)

    def scan_batch():  # per-cell P(generated) on reduced views
        pairs = [_view_crop(train_set[rng.integers(len(train_set))], cfg.view_crop, rng)
                 for _ in range(cfg.batch // 2)]
        return (to_batch([p[0] for p in pairs]),
                torch.from_numpy(np.stack([p[1] for p in pairs])).float())

    timing = {"scan": _fit(model.scan, cfg.scan_steps, cfg.lr, scan_batch, F.binary_cross_entropy_with_logits, "scan"),
              "zoom": fit_zoom(model, train_set, cfg, rng)}
    model.scan.cpu()
    model.zoom.cpu()

    # Reference levels of the rationale's statistics in real pixels of the training set.
    cues = [measure(_patch(train_set, False, 128, rng)) for _ in range(200)]
    model.meta.update({
        "real_cues": {"detail": float(np.median([c.detail for c in cues])),
                      "periodicity": float(np.median([c.periodicity for c in cues]))},
        "train_seconds": round(time.perf_counter() - t0, 1),
        "train_timing": timing,
        "train_device": torch.cuda.get_device_name(device) if torch.device(device).type == "cuda" else "cpu",
        "train_config": asdict(cfg),
        "train_images": len(train_set),
        "train_sources": sorted({s.source for s in train_set}),
    })
    return model
