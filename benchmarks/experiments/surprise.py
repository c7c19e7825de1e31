"""A second opinion for the zoom that knows only real photos (opt-in: `zoomin train --surprise-steps`).

The zoom net learns what the training families' fakes look like; on a family it never saw it can
do worse than chance (a held-out `denoise` ranks below real images: its grain reads as a
camera's). This model learns nothing from fakes: a blind-spot predictor guesses each pixel from
its 7x7 neighbourhood without the pixel itself, as a Laplace distribution (a mean and a scale),
trained on real photos only. Seven statistics of how surprised it is by a crop (too predictable
for its content, or too noisy) go through a small logistic head fitted on the calib split.

The two opinions are combined per crop as the larger of the two, each standardised on real
crops: a balance fitted on the calib split would trust the zoom net, which is right on every
family that split holds (on crops of true regions, a fitted balance kept 0.69 of the 0.81 the
statistics alone reached on a held-out family). What it changes through the whole job, on held-out
families and on photos never seen, is measured in the README ("A second opinion that knows only
real photos").
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

STATS = ("nll", "surprise", "abs_surprise", "log_scale", "block_min", "block_max", "block_std")
MIN_SIDE = 24  # a window must leave room for the 7x7 neighbourhood and one 16 px block


class BlindSpot(nn.Module):
    """Each pixel from its k x k neighbours, never from itself: the first layer's centre tap is
    masked and every later layer is 1x1, so the pixel cannot leak back in."""

    def __init__(self, k: int = 7, width: int = 48):
        super().__init__()
        self.k = k
        self.first = nn.Conv2d(3, width, k, padding=k // 2)
        mask = torch.ones(1, 1, k, k)
        mask[..., k // 2, k // 2] = 0
        self.register_buffer("mask", mask)
        self.body = nn.Sequential(nn.GELU(), nn.Conv2d(width, width, 1), nn.GELU(),
                                  nn.Conv2d(width, width, 1), nn.GELU(), nn.Conv2d(width, 6, 1))

    def context(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) in [0, 1] -> what the neighbours say of each pixel: an offset from its
        3x3 mean (0..1 units) and a scale (0..255 units). Neither reads the pixel itself."""
        o = self.body(F.conv2d(x, self.first.weight * self.mask, self.first.bias, padding=self.k // 2))
        return o[:, :3] * (8 / 255), F.softplus(o[:, 3:]) + 0.3

    def forward(self, x: torch.Tensor):
        """(B, 3, H, W) in [0, 1] -> per pixel and channel, in 0..255 units: negative
        log-likelihood, surprise beyond the predicted entropy (|x - mean| / scale - 1: zero on
        average where the predictor is right about itself), and the scale."""
        offset, scale = self.context(x)
        # The 3x3 mean holds the pixel at 1/9: x - mean = 8/9 (x - its 8 neighbours' mean) - offset,
        # so the guess itself is made from the neighbours alone (the 8/9 is a constant factor).
        mean = F.avg_pool2d(x, 3, 1, 1) + offset
        r = (x - mean).abs() * 255 / scale
        return r + torch.log(2 * scale), r - 1.0, scale


def crop_stats(net: BlindSpot, x: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) windows of one size -> (B, 7) statistics (STATS), borders left out."""
    nll, d, scale = (t[..., 3:-3, 3:-3] for t in net(x))
    blocks = F.avg_pool2d(d.mean(1, keepdim=True), 16).flatten(1)
    m = d.mean(dim=(1, 2, 3))
    spread = blocks.std(dim=1) if blocks.shape[1] > 1 else torch.zeros_like(m)
    return torch.stack([nll.mean(dim=(1, 2, 3)), m, m.abs(), torch.log(scale).mean(dim=(1, 2, 3)),
                        blocks.min(dim=1).values, blocks.max(dim=1).values, spread], 1).double().cpu().numpy()


def region_windows(samples, size: int = 256, per_image: int = 2, seed: int = 0) -> list:
    """(sample, window) pairs from labelled samples (train.Sample): the centre of each true
    region (of a whole fake: of the image) and random windows of real images, at most `size` a
    side, as the zoom reads them."""
    from .decode import decode_full
    rng = np.random.default_rng(seed)
    out = []
    for s in samples:
        full = decode_full(s.data)
        H, W = full.shape[:2]
        for box in (s.regions() if s.label else [None] * per_image)[:per_image]:
            if box is None:
                w, h = min(size, W), min(size, H)
                x, y = int(rng.integers(W - w + 1)), int(rng.integers(H - h + 1))
            else:
                x1, y1, x2, y2 = (int(v) for v in box)
                w, h = min(size, x2 - x1), min(size, y2 - y1)
                x = int(np.clip((x1 + x2) // 2 - w // 2, 0, W - w))
                y = int(np.clip((y1 + y2) // 2 - h // 2, 0, H - h))
            out.append((s, full[y:y + h, x:x + w]))
    return out


def fit_blindspot(real_pixels: list[np.ndarray], steps: int, seed: int, lr: float = 2e-3,
                  device: str = "cpu") -> BlindSpot:
    """Train on 96 px patches of real images (uint8 H x W x 3). Its own random streams, so that
    adding it leaves every other part of a training run as it was."""
    from .compact_model import to_batch
    from .train import _fit
    usable = [p for p in real_pixels if min(p.shape[:2]) >= 96]
    if not usable:
        raise ValueError("no real training image is 96 px or more a side")
    rng = np.random.default_rng(seed + 7919)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed + 7919)

    def patch():
        p = usable[rng.integers(len(usable))]
        y, x = rng.integers(p.shape[0] - 95), rng.integers(p.shape[1] - 95)
        return p[y:y + 96, x:x + 96]

    net = BlindSpot().to(device)
    _fit(net, steps, lr, lambda: (to_batch([patch() for _ in range(16)]), None),
         lambda out, _: out[0][..., 3:-3, 3:-3].mean(), "blind-spot")
    torch.random.set_rng_state(state)
    return net.cpu().eval()


def head_logits(stats: np.ndarray, head: dict) -> np.ndarray:
    """The head's logit per crop, standardised on the calib split's real crops."""
    z = (stats - np.asarray(head["mean"])) / np.asarray(head["std"])
    w = np.asarray(head["weights"])
    s = z @ w[:-1] + w[-1]
    return (s - head["real_s"][0]) / head["real_s"][1]


def combine(zoom_logits: np.ndarray, surprise: np.ndarray | None, head: dict) -> np.ndarray:
    """Per crop: the larger of the zoom logit and the surprise logit, each in standard
    deviations of real crops (see the module docstring for why not a fitted balance). Without
    a surprise logit (a window too small for it), the zoom's alone, on the same scale."""
    z = (zoom_logits - head["real_z"][0]) / head["real_z"][1]
    return z if surprise is None else np.maximum(z, surprise)
