"""The self-consistency check: does one region of a photo disagree with the rest of it?

A regional fake is a photo whose region went through another process than the rest. A network
that only judges "did these two 64 px patches of one image go through the same process?" needs
no generator to learn (in the manner of learned self-consistency for splice detection): it is
trained on real photos alone, with regions altered by the generator-agnostic operations of
`pseudo.py` (`consistency_train.py`). So it is the one cue here that does not depend on which
generator families the detector was trained on.

On an image (at full resolution: the traces are in single pixels): 64 px blocks on a grid, each
block's disagreement with reference blocks spread over the same image (1 - the mean probability
of "same process"), smoothed over 3x3 blocks. The image's `consistency` is the map's peak (high =
some region disagrees with the rest); the region around the peak becomes a box for the zoom.

In the job it is opt-in (`zoomin scan --consistency`): `stages.crop_stage` runs it on the full
decode it already makes for the zoom. Measured figures are in the README ("The self-consistency
check").
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

from zoomin_core.compact_model import HighPass, _conv, to_batch
from zoomin_core.records import Box

DEFAULT_CONSISTENCY = Path(__file__).parent / "consistency-v1.safetensors"
PATCH = 64              # block side, native pixels
REFS = 200              # reference blocks per image
MIN_BLOCKS = 4          # fewer blocks than this (an image under ~128 px): no map, no score
CHUNK = 256             # blocks per forward pass (bounds memory on huge images)
DEFAULT_BOX = {"relative": 0.5}


class Embed(nn.Module):
    """64 px patch -> 64-d description of its processing (from the high-pass residual)."""

    def __init__(self, width: int = 48):
        super().__init__()
        self.hp = HighPass()
        self.body = nn.Sequential(_conv(3, 24), _conv(24, width, 2), _conv(width, width), _conv(width, width, 2),
                                  _conv(width, width), _conv(width, width, 2))
        self.out = nn.Linear(2 * width, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(self.hp(x))
        return self.out(torch.cat([h.mean((2, 3)), h.std((2, 3))], 1))


class Same(nn.Module):
    """Two descriptions -> logit that their patches went through the same process."""

    def __init__(self):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(128, 64), nn.LeakyReLU(0.1), nn.Linear(64, 1))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([(a - b).abs(), a * b], -1))[..., 0]


@dataclass
class ConsistencyModel:
    embed: Embed = field(default_factory=Embed)
    same: Same = field(default_factory=Same)
    meta: dict = field(default_factory=dict)   # how it was trained, and its map -> box setting

    @property
    def version(self) -> str:
        return self.meta.get("version", "unversioned")

    def eval(self) -> "ConsistencyModel":
        self.embed.eval()
        self.same.eval()
        return self

    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file
        tensors = {f"embed.{k}": v for k, v in self.embed.state_dict().items()}
        tensors.update({f"same.{k}": v for k, v in self.same.state_dict().items()})
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(str(path) + ".tmp")
        save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, str(tmp),
                  metadata={"zoomin": json.dumps({**self.meta, "kind": "consistency"})})
        tmp.replace(path)  # never leave a half-written weights file behind
        Path(path).chmod(0o644)

    @staticmethod
    def load(path: str | Path) -> "ConsistencyModel":
        """Weights from a local file; "default" is the bundled file of this installation (each
        node of a cluster resolves it in its own)."""
        from safetensors import safe_open
        p = DEFAULT_CONSISTENCY if str(path) == "default" else Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"consistency weights not found: {p} (train them with `zoomin train-consistency`)")
        with safe_open(str(p), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("zoomin", "{}"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if meta.get("kind") != "consistency":
            raise ValueError(f"{p} is not a consistency check's weights (a detector's? those go to --model)")
        m = ConsistencyModel(meta=meta)
        m.embed.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("embed.")})
        m.same.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("same.")})
        return m.eval()

    @torch.inference_mode()
    def anomaly_map(self, pixels: np.ndarray, refs: int = REFS) -> np.ndarray | None:
        """(H, W, 3) uint8 at full resolution -> (H // 64, W // 64) disagreement in [0, 1], or
        None for an image with fewer than MIN_BLOCKS blocks. Deterministic: the reference blocks
        are spread evenly over the grid, so the same image always gets the same map."""
        h, w = pixels.shape[0] // PATCH, pixels.shape[1] // PATCH
        if h * w < MIN_BLOCKS:
            return None
        grid = pixels[:h * PATCH, :w * PATCH].reshape(h, PATCH, w, PATCH, 3).swapaxes(1, 2).reshape(-1, PATCH, PATCH, 3)
        e = torch.cat([self.embed(to_batch(grid[k:k + CHUNK])) for k in range(0, len(grid), CHUNK)])
        ref = e[np.unique(np.linspace(0, len(grid) - 1, min(refs, len(grid))).round().astype(int))]
        agree = torch.cat([torch.sigmoid(self.same(c[:, None].expand(-1, len(ref), -1),
                                                   ref[None].expand(len(c), -1, -1))).mean(1)
                           for c in e.split(CHUNK)])
        m = (1 - agree).reshape(1, 1, h, w)
        return F.avg_pool2d(F.pad(m, (1, 1, 1, 1), mode="replicate"), 3, stride=1)[0, 0].numpy()

    def propose(self, pixels: np.ndarray) -> tuple[float | None, Box | None]:
        """The image's consistency score (the map's peak) and the box of blocks around the peak,
        in original pixels; (None, None) for an image too small to judge."""
        m = self.anomaly_map(pixels)
        if m is None:
            return None, None
        return float(m.max()), peak_region(m, float(self.meta.get("box", DEFAULT_BOX)["relative"]), pixels.shape)


def peak_box(m: np.ndarray, relative: float) -> tuple[int, int, int, int]:
    """The connected blocks around the map's peak that stand out by at least `relative` of the
    peak's height above the map's median, as (x1, y1, x2, y2) in blocks (x2/y2 exclusive)."""
    y, x = np.unravel_index(int(np.argmax(m)), m.shape)
    base = float(np.median(m))
    labels, _ = ndimage.label(m >= base + relative * (float(m[y, x]) - base))
    ys, xs = np.nonzero(labels == labels[y, x])
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def peak_region(m: np.ndarray, relative: float, shape: tuple) -> Box:
    """`peak_box` in the original pixels of an image of `shape` (H, W, ...), scored by the peak."""
    x1, y1, x2, y2 = peak_box(m, relative)
    return Box(x1 * PATCH, y1 * PATCH, min(shape[1], x2 * PATCH), min(shape[0], y2 * PATCH), float(m.max()))
