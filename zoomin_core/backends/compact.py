"""Backend `compact`: the two stages on a CPU with a small torch model (see compact_model.py).

scan: ScanNet over the reduced view -> suspicion map -> up to K peak regions + first verdict.
zoom: ZoomNet over each full-resolution crop -> a calibrated score per region; the final score is
      `compact_model.fuse` of the first look and the best region's score (between the two).
"""
from __future__ import annotations

import logging
from collections import defaultdict
from typing import Optional, Sequence

import numpy as np
import torch

from .. import geometry, rationale
from ..compact_model import (DEFAULT_WEIGHTS, SCAN_STRIDE, CompactModel, fuse, logit, pool_logits, proposals,
                             to_tensor)
from ..decode import DecodeConfig
from ..records import GENERATED, REAL, Box, Crop, ScanResult, Verdict, View

log = logging.getLogger(__name__)

# On a CPU the scan net runs at most this many view pixels per forward pass (at least one view).
# Its first layers' activations are large (32 channels at full view size), and a batch of them
# outgrows the caches and pays fresh page faults: on 2 cores one view per pass ran the scan net
# 1.8x (384 px views) to 2.6x (768 px) faster than batches of 8 (benchmarks/stage_cost.py
# --scan-batches). Small views still share a pass. GPUs take every view of a size in one pass.
CPU_SCAN_PIXELS = 1 << 18


class CompactBackend:
    name = "compact"

    def __init__(self, model=None, max_boxes: int = 4, threshold: Optional[float] = None,
                 max_crop_side: int = 256, threads: Optional[int] = None, device: str = "cpu",
                 prior: Optional[float] = None):
        # max_crop_side: the zoom classifier reads at most this many native pixels per side of a
        # crop (the centre); larger regions are sampled, never shrunk, so fine traces survive.
        if threads:
            torch.set_num_threads(threads)
        # `model`: a weights path, or an in-memory CompactModel (used while training).
        self.model = model if isinstance(model, CompactModel) else CompactModel.load(model or DEFAULT_WEIGHTS)
        self.device = torch.device(device)
        self.model.scan.to(self.device)
        self.model.zoom.to(self.device)
        self.max_boxes = max_boxes
        self.max_crop_side = max_crop_side
        self.reference = self.model.meta.get("real_cues", {})
        self.cue_auc = self.model.meta.get("cue_auc", {})   # which pixel statistics the rationale may quote
        self.boxes = self.model.meta.get("boxes")  # map -> boxes settings fitted by `zoomin train`
        # The view size the scan net learned on (`zoomin train --view-size`; older weights: the default).
        self.view_size = int(self.model.meta.get("view_size", DecodeConfig.view_max_side))
        self._warned_view = False
        # --prior: scores for an archive where this share of images is generated. The scores are
        # calibrated on the calib split, whose share is the weights' own (about 0.6 for synth
        # sets); Bayes' rule moves their odds by the ratio of the two shares.
        # Every score (first look, regions, final) moves by the same shift, so the final score's
        # rule (a weighted mean of the two looks in log-odds) holds for the scores a row shows.
        self.shift = 0.0
        share = self.model.meta.get("calib_generated_share")
        if prior is not None:
            self.shift = float(logit(prior, 1e-9) - logit(calibration_share(self.model), 1e-9))
        # The share of generated images the scores assume, written into every row ("prior").
        self.prior = float(prior) if prior is not None else (float(share) if share is not None else None)
        # The operating point: the score at which a verdict (first look and final alike) turns
        # generated, written into every row ("threshold"). --threshold sets it; with --prior alone
        # it is even odds at that share; else the weights' archive point (a threshold that flagged
        # about 1% of real photos never used in training or calibration), else even odds at the
        # calibration share (weights made before the archive point).
        archive = self.model.meta.get("archive_threshold")
        if threshold is not None:
            self.threshold, self.point = float(threshold), "--threshold"
        elif prior is not None:
            self.threshold, self.point = 0.5, f"even odds at --prior {prior:g}"
        elif archive is not None:
            self.threshold, self.point = float(archive), "the archive operating point"
        else:
            self.threshold, self.point = float(self.model.meta.get("threshold", 0.5)), ""
        # Region calibration and the zoom's weight in the final score (compact_model.fuse). Weights
        # calibrated before this rule hold neither: their region scores stay raw, the looks count evenly.
        self.zoom_calibration = self.model.meta.get("zoom_calibration", (1.0, 0.0))
        self.zoom_weight = float(self.model.meta.get("zoom_weight", 0.5))
        if "zoom_weight" not in self.model.meta and "fusion" in self.model.meta:
            log.warning("compact/%s was calibrated by an earlier version (a product term in the final score, "
                        "which can contradict both looks): its looks now count evenly; calibrate it again "
                        "(benchmarks/recalibrate.py) or train with this version", self.model.version)

    @property
    def model_id(self) -> str:
        return f"compact/{self.model.version}"

    @torch.inference_mode()
    def scan_logits(self, views: Sequence[View]) -> list[np.ndarray]:
        """Raw logit map per view (h/8, w/8). Views of equal size run as one batch (on a CPU, in
        passes of at most CPU_SCAN_PIXELS)."""
        maps: list[Optional[np.ndarray]] = [None] * len(views)
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, v in enumerate(views):
            groups[v.pixels.shape].append(i)
        for shape, idx in groups.items():
            step = len(idx) if self.device.type != "cpu" else max(1, CPU_SCAN_PIXELS // (shape[0] * shape[1]))
            for start in range(0, len(idx), step):
                part = idx[start:start + step]
                x = torch.cat([to_tensor(views[i].pixels) for i in part]).to(self.device)
                logits = self.model.scan(x).double().cpu().numpy()
                for j, i in enumerate(part):
                    maps[i] = logits[j]
        return maps  # type: ignore[return-value]

    def suspicion_maps(self, views: Sequence[View]) -> list[np.ndarray]:
        """Calibrated P(generated) per cell: sigmoid(a * logit + b), with (a, b) fitted by
        `zoomin train` so that the image's most suspicious cell reads as a probability."""
        a, b = self.model.meta.get("scan_calibration", (1.0, 0.0))
        return [1.0 / (1.0 + np.exp(-(a * m + b))) for m in self.scan_logits(views)]

    def _check_view(self, v: View) -> None:
        """Warn once when views are not reduced the way the scan net learned: a net trained on
        half-scale views sees other traces at full scale (and the other way round)."""
        w, h = v.size
        longest = max(round(w * v.scale_x), round(h * v.scale_y))
        if self._warned_view or abs(max(w, h) - min(longest, self.view_size)) <= 1:
            return
        self._warned_view = True
        log.warning("compact/%s: the scan net learned on views of at most %d px a side, this job's view is "
                    "%dx%d for a %d px image; run with --view-size %d", self.model.version, self.view_size,
                    w, h, longest, self.view_size)

    def scan(self, views: Sequence[View]) -> list[ScanResult]:
        out = []
        for v, prob in zip(views, self.suspicion_maps(views)):
            self._check_view(v)
            h, w = v.pixels.shape[:2]
            boxes = tuple(
                Box(x1 * SCAN_STRIDE, y1 * SCAN_STRIDE, min(w, x2 * SCAN_STRIDE), min(h, y2 * SCAN_STRIDE),
                    _shifted(s, self.shift))
                for x1, y1, x2, y2, s in proposals(prob, self.max_boxes, self.boxes))
            score = _shifted(float(prob.max()), self.shift)
            verdict = GENERATED if score >= self.threshold else REAL
            out.append(ScanResult(boxes, verdict, score, rationale.scan_explanation(boxes, score, verdict)))
        return out

    def _window(self, pixels: np.ndarray) -> np.ndarray:
        """Centre window of at most max_crop_side per side, native pixels."""
        h, w = pixels.shape[:2]
        ch, cw = min(h, self.max_crop_side), min(w, self.max_crop_side)
        y, x = (h - ch) // 2, (w - cw) // 2
        return pixels[y:y + ch, x:x + cw]

    @torch.inference_mode()
    def crop_logits(self, crops: Sequence[Crop], chunk: int = 64) -> list[Optional[float]]:
        """The zoom net's pooled logit per crop (None: a window under 8 px a side carries no usable
        evidence). Windows of equal size run as one batch (across images): on a GPU, one crop per
        call left the zoom stage slower there than on 15 CPU cores (benchmarks/gpu_check.py)."""
        out: list[Optional[float]] = [None] * len(crops)
        groups: dict[tuple, list[tuple[int, np.ndarray]]] = defaultdict(list)
        for i, c in enumerate(crops):
            win = self._window(c.pixels)
            if min(win.shape[:2]) >= 8:
                groups[win.shape].append((i, win))
        for members in groups.values():
            for start in range(0, len(members), chunk):
                part = members[start:start + chunk]
                x = torch.cat([to_tensor(w) for _, w in part]).to(self.device)
                for (i, _), z in zip(part, pool_logits(self.model.zoom(x)).double().cpu().numpy()):
                    out[i] = float(z)
        return out

    def crop_scores(self, crops: Sequence[Crop]) -> list[Optional[float]]:
        """Calibrated P(generated) per crop at this job's prior (None: no usable evidence)."""
        a, b = self.zoom_calibration
        return [None if z is None else _shifted(float(1.0 / (1.0 + np.exp(-(a * z + b)))), self.shift)
                for z in self.crop_logits(crops)]

    def zoom(self, items: Sequence[tuple[View, Sequence[Crop], ScanResult]]) -> list[Verdict]:
        out = []
        flat = self.crop_scores([c for _, crops, _ in items for c in crops])
        at = 0
        for view, crops, scan in items:
            scores, at = flat[at:at + len(crops)], at + len(crops)
            judged = [(c, s) for c, s in zip(crops, scores) if s is not None]
            # The rule holds at any prior: every score carries the same shift (see __init__).
            score = (fuse(scan.initial_score, max(s for _, s in judged), self.zoom_weight) if judged
                     else scan.initial_score)
            verdict = GENERATED if score >= self.threshold else REAL
            # Regions as the boxes column writes them (whole pixels), so the text and the column agree.
            regions = [(geometry.to_int(c.region or c.box), s, rationale.measure(self._window(c.pixels)))
                       for c, s in judged]
            text = rationale.zoom_rationale(regions, verdict, score, scan.initial_verdict, scan.initial_score,
                                            self.zoom_weight, self.threshold, self.reference, self.cue_auc,
                                            self.point)
            # A region without usable evidence keeps its first-look score, not a made-up zoom score.
            region_scores = tuple(s if s is not None else (c.region or c.box).score for c, s in zip(crops, scores))
            out.append(Verdict(verdict, score, text, region_scores))
        return out


def calibration_share(model: CompactModel) -> float:
    """Share of generated images in the split the weights' scores were calibrated on."""
    share = model.meta.get("calib_generated_share")
    if share is None:
        raise ValueError(f"compact/{model.version}: these weights do not record the share of generated images "
                         "they were calibrated on, which --prior needs; calibrate them again with this version's "
                         "`zoomin train`")
    if not 0 < share < 1:  # a calib split of one class: its scores carry no usable prior
        raise ValueError(f"compact/{model.version}: calibrated on a split whose images were all of one "
                         f"label (share of generated {share}); --prior cannot move such scores")
    return float(share)


def _shifted(p: float, shift: float) -> float:
    """p with its log-odds moved by `shift` (p itself, to the bit, when there is no shift). Clipped
    far less than the calibration features are, so that moving a score and moving it back return it."""
    return p if shift == 0.0 else float(1.0 / (1.0 + np.exp(-(logit(p, 1e-9) + shift))))
