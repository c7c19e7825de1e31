"""The compact forensic detector: two small fully-convolutional networks and their weights file.

ScanNet looks at the reduced view and returns a suspicion map (one logit per 8x8 view pixels);
ZoomNet looks at full-resolution crops and returns a logit map (one per 4x4 original pixels),
pooled to one score per crop. Both see only a fixed high-pass residual of the image (pixel minus
its 3x3 mean): generators leave their traces in fine detail, and a residual input keeps the
tiny training set from teaching the networks what is *in* a photo instead of how it was made.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy import ndimage

from .backends import DEFAULT_WEIGHTS  # noqa: F401 - named here too, where the weights are read
SCAN_STRIDE = 8
ZOOM_STRIDE = 4


class HighPass(nn.Module):
    """x - mean3x3(x), scaled: a fixed, parameter-free residual filter."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) in [0, 1]
        blur = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        return (x - blur) * 8.0


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    # Batch norm: measured on the synthetic set, it lifts the zoom net's patch accuracy from
    # 0.82 to 0.89 at the same number of steps.
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.LeakyReLU(0.1))


class ScanNet(nn.Module):
    def __init__(self, width: int = 32):
        super().__init__()
        self.hp = HighPass()
        self.body = nn.Sequential(_conv(3, 16), _conv(16, width, 2), _conv(width, width, 2),
                                  _conv(width, width, 2), _conv(width, width))
        self.head = nn.Conv2d(width, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B,3,H,W) -> (B, H/8, W/8) logits
        return self.head(self.body(self.hp(x)))[:, 0]


class ZoomNet(nn.Module):
    def __init__(self, width: int = 32):
        super().__init__()
        self.hp = HighPass()
        self.body = nn.Sequential(_conv(3, 16), _conv(16, 16), _conv(16, width, 2),
                                  _conv(width, width), _conv(width, width, 2), _conv(width, width))
        self.head = nn.Conv2d(width, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B,3,H,W) -> (B, H/4, W/4) logits
        return self.head(self.body(self.hp(x)))[:, 0]


def pool_logits(logit_map: torch.Tensor) -> torch.Tensor:
    """(B, h, w) -> (B,) mean of the top half of the logits: a crop padded with some real
    context around a generated region still scores as that region."""
    flat = logit_map.flatten(1)
    k = max(1, flat.shape[1] // 2)
    return flat.topk(k, dim=1).values.mean(dim=1)


def logit(p, eps: float = 1e-4):
    """log(p / (1 - p)) with p clipped to [eps, 1 - eps]. The default keeps the calibration
    features within +-9.2, so one saturated crop score cannot dominate a linear fit. Scalars or
    arrays."""
    p = np.clip(p, eps, 1 - eps)
    return np.log(p / (1 - p))


def fuse(first: float, best: float, zoom_weight: float) -> float:
    """The final P(generated): a weighted mean, in log-odds, of the first look and the best
    region's zoom score, so the final score always lies between the two looks it is made of (a
    product feature fitted here before let two confident "real" looks make a confident
    "generated": both logits negative, their product large and positive). `zoom_weight` in [0, 1]
    is fitted on the calib split by `zoomin train`."""
    z = (1 - zoom_weight) * logit(first, 1e-9) + zoom_weight * logit(best, 1e-9)
    return float(1.0 / (1.0 + np.exp(-z)))


def to_batch(patches) -> torch.Tensor:
    """uint8 patches of one size ((n, h, w, 3) array or list of (h, w, 3)) -> float (n, 3, h, w) in [0, 1]."""
    return torch.from_numpy(np.stack(patches)).permute(0, 3, 1, 2).float() / 255


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float (1, 3, H, W) in [0, 1]."""
    if not pixels.flags.writeable or not pixels.flags.c_contiguous:
        pixels = np.array(pixels, dtype=np.uint8, order="C")  # torch wants its own writable copy
    return torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255.0


@dataclass
class CompactModel:
    scan: ScanNet
    zoom: ZoomNet
    # Free-form facts about how the weights were made (data, steps, validation figures) and the
    # reference cue levels of real photos, used to phrase rationales. Saved in the file header.
    meta: dict = field(default_factory=dict)

    @property
    def version(self) -> str:
        return self.meta.get("version", "unversioned")

    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file
        tensors = {f"scan.{k}": v for k, v in self.scan.state_dict().items()}
        tensors.update({f"zoom.{k}": v for k, v in self.zoom.state_dict().items()})
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(str(path) + ".tmp")
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp),
                  metadata={"zoomin": json.dumps(self.meta)})
        tmp.replace(path)  # never leave a half-written weights file behind
        Path(path).chmod(0o644)

    @staticmethod
    def new(meta: dict | None = None) -> "CompactModel":
        meta = dict(meta or {})
        if meta.get("residual", "plain") != "plain":
            # Weights of an experiment that did not ship (benchmarks/experiments/, docs/tried.md).
            raise ValueError(f"these weights need the {meta['residual']!r} input residual, which this version "
                             "does not have; train them again with `zoomin train`")
        return CompactModel(ScanNet(), ZoomNet(), meta)

    @staticmethod
    def load(path: str | Path) -> "CompactModel":
        from safetensors import safe_open
        p = Path(path)
        if p.is_dir():
            candidates = sorted(p.glob("*.safetensors"))
            if len(candidates) != 1:
                raise FileNotFoundError(f"{p}: expected exactly one .safetensors file, found {len(candidates)}")
            p = candidates[0]
        if not p.exists():
            raise FileNotFoundError(f"compact weights not found: {p} (train them with `zoomin train`)")
        with safe_open(str(p), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("zoomin", "{}"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        model = CompactModel.new(meta)
        model.scan.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("scan.")})
        model.zoom.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("zoom.")})
        if any(k.startswith("surprise.") for k in tensors):
            raise ValueError(f"{p}: these weights carry a real-photo model this version does not run; "
                             "train them again with `zoomin train`")
        model.scan.eval()
        model.zoom.eval()
        return model


# How suspicion maps become boxes. `zoomin train` fits these on the calib split (the setting
# with the best region recall there); these defaults are what weights without a fit get.
DEFAULT_BOXES = {"threshold": 0.35, "relative": 0.5, "grow": 0, "smooth": 1}


def proposals(prob: np.ndarray, k: int, params: dict | None = None) -> list[tuple[int, int, int, int, float]]:
    """Up to k boxes (map cells) from a suspicion map: `peaks` of the map averaged over
    `smooth` x `smooth` cells (a region's map is patchy, and its raw components came out at a
    third of the true area), each grown by `grow` cells a side."""
    c = {**DEFAULT_BOXES, **(params or {})}
    smooth, g = int(c["smooth"]), int(c["grow"])
    p = ndimage.uniform_filter(prob, smooth, mode="nearest") if smooth > 1 else prob
    h, w = prob.shape
    return [(max(0, x1 - g), max(0, y1 - g), min(w, x2 + g), min(h, y2 + g), s)
            for x1, y1, x2, y2, s in peaks(p, k, float(c["threshold"]), float(c["relative"]))]


def peaks(prob: np.ndarray, k: int, threshold: float = 0.35, relative: float = 0.5
          ) -> list[tuple[int, int, int, int, float]]:
    """Suspicion map (h, w) of probabilities -> up to k boxes (x1, y1, x2, y2, score) in map cells.

    A box is a connected area above max(threshold, relative * its own peak). If nothing passes
    the threshold, the single most suspicious spot (3x3 cells) is still returned: like a human
    examiner, the zoom stage always gets something to look at closely.
    """
    h, w = prob.shape
    out = []
    remaining = prob.copy()
    while len(out) < k:
        y, x = np.unravel_index(int(np.argmax(remaining)), remaining.shape)
        peak = float(remaining[y, x])
        if peak < threshold:
            break
        labels, _ = ndimage.label(remaining >= max(threshold, relative * peak))
        ys, xs = np.nonzero(labels == labels[y, x])
        out.append((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1, peak))
        remaining[labels == labels[y, x]] = -1.0
    if not out:
        y, x = np.unravel_index(int(np.argmax(prob)), prob.shape)
        out.append((max(0, x - 1), max(0, y - 1), min(w, x + 2), min(h, y + 2), float(prob[y, x])))
    return out
