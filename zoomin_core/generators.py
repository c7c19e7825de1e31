"""Generator families that `zoomin synth` trains on real photos, offline, in seconds each.

Real-world generators differ from each other, and a detector that knows one family's
fingerprint is not worth shipping; leave-one-family-out evaluation needs several. Each family
here regenerates an image (or a region of one) through a small network trained on the real
photos with a pixel loss, the way regeneration-based fakes and inpainting are made:

  ae_tconv     autoencoder, 4x down, decoder up-samples with transposed convolutions
  ae_resize    autoencoder, 4x down, decoder up-samples by nearest-neighbour resize + conv
  sr_shuffle   2x down-sampling, then a learned super-resolution net (pixel shuffle)
  sr_interp    2x down-sampling, bicubic interpolation back, then a learned full-resolution
               refinement (the classic interpolate-then-refine super-resolution design)
  denoise      img2img without any up-sampling: Gaussian noise added, then removed by a
               learned full-resolution denoiser (a diffusion model's single step, in miniature)
  deblur       img2img without any up-sampling: a Gaussian blur, then a learned
               full-resolution restoration net (a restoration model, in miniature)
"""
from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

log = logging.getLogger(__name__)


class Generator(nn.Module):
    """Base: subclasses define forward(x) -> regenerated x, both (B, 3, H, W) in [0, 1]."""
    multiple = 4          # input sides are padded to a multiple of this

    def train_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the network sees during training (the clean patch, or a corrupted one)."""
        return x

    @torch.inference_mode()
    def regenerate(self, pixels: np.ndarray, tile: int = 512, overlap: int = 16) -> np.ndarray:
        """uint8 (H, W, 3) -> regenerated uint8 (H, W, 3). Large images go in overlapping tiles
        (the networks are local), so memory stays bounded."""
        h, w = pixels.shape[:2]
        out = np.empty_like(pixels)
        step = tile - 2 * overlap
        for y0 in range(0, h, step):
            for x0 in range(0, w, step):
                ya, xa = max(0, y0 - overlap), max(0, x0 - overlap)
                yb, xb = min(h, y0 + step + overlap), min(w, x0 + step + overlap)
                out[y0:min(h, y0 + step), x0:min(w, x0 + step)] = self._run(pixels[ya:yb, xa:xb])[
                    y0 - ya:y0 - ya + min(step, h - y0), x0 - xa:x0 - xa + min(step, w - x0)]
        return out

    def _run(self, pixels: np.ndarray) -> np.ndarray:
        h, w = pixels.shape[:2]
        m = self.multiple
        padded = np.pad(pixels, ((0, (-h) % m), (0, (-w) % m), (0, 0)), mode="reflect")
        x = torch.from_numpy(padded).permute(2, 0, 1)[None].float() / 255
        y = self(self.generation_input(x))[0, :, :h, :w].clamp(0, 1).permute(1, 2, 0).numpy()
        return (y * 255 + 0.5).astype(np.uint8)

    def generation_input(self, x: torch.Tensor) -> torch.Tensor:
        return x


class AETConv(Generator):
    def __init__(self, width: int = 48):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(3, width, 4, 2, 1), nn.ReLU(), nn.Conv2d(width, width, 4, 2, 1),
                                 nn.ReLU(), nn.Conv2d(width, width, 3, 1, 1), nn.ReLU())
        self.dec = nn.Sequential(nn.ConvTranspose2d(width, width, 4, 2, 1), nn.ReLU(),
                                 nn.ConvTranspose2d(width, 3, 4, 2, 1))

    def forward(self, x):
        return torch.sigmoid(self.dec(self.enc(x)))


class AEResize(Generator):
    def __init__(self, width: int = 48):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1), nn.ReLU(), nn.Conv2d(width, width, 3, 2, 1),
                                 nn.ReLU(), nn.Conv2d(width, width, 3, 1, 1), nn.ReLU())
        self.dec = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(width, width, 3, 1, 1),
                                 nn.ReLU(), nn.Upsample(scale_factor=2, mode="nearest"),
                                 nn.Conv2d(width, 32, 3, 1, 1), nn.ReLU(), nn.Conv2d(32, 3, 3, 1, 1))

    def forward(self, x):
        return torch.sigmoid(self.dec(self.enc(x)))


class SRShuffle(Generator):
    multiple = 2

    def __init__(self, width: int = 48):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1), nn.ReLU(), nn.Conv2d(width, width, 3, 1, 1),
                                  nn.ReLU(), nn.Conv2d(width, 12, 3, 1, 1), nn.PixelShuffle(2))

    def forward(self, x):  # x: full resolution; the net only ever sees its 2x-reduced version
        low = F.avg_pool2d(x, 2)
        base = F.interpolate(low, scale_factor=2, mode="bilinear", align_corners=False)
        return (base + self.body(low)).clamp(0, 1)


def _full_resolution_net(width: int, first_kernel: int) -> nn.Sequential:
    """Four convolutions, no stride and no up-sampling: the restoration families' body."""
    layers: list[nn.Module] = [nn.Conv2d(3, width, first_kernel, 1, first_kernel // 2), nn.ReLU()]
    for _ in range(2):
        layers += [nn.Conv2d(width, width, 3, 1, 1), nn.ReLU()]
    layers.append(nn.Conv2d(width, 3, 3, 1, 1))
    return nn.Sequential(*layers)


class Denoise(Generator):
    multiple = 1
    sigma = 0.04          # noise level used when generating

    def __init__(self, width: int = 32):
        super().__init__()
        self.body = _full_resolution_net(width, first_kernel=3)

    def forward(self, x):  # x: noisy image; predicts and removes the noise
        return (x - self.body(x)).clamp(0, 1)

    def train_input(self, x):
        sigma = torch.empty(x.shape[0], 1, 1, 1).uniform_(0.02, 0.06)
        return x + sigma * torch.randn_like(x)

    def generation_input(self, x):
        g = torch.Generator().manual_seed(int(x.sum().item() * 1000) % (2 ** 31))
        return x + self.sigma * torch.randn(x.shape, generator=g)


class SRInterp(Generator):
    multiple = 2

    def __init__(self, width: int = 32):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 5, 1, 2), nn.ReLU(), nn.Conv2d(width, width, 3, 1, 1),
                                  nn.ReLU(), nn.Conv2d(width, 3, 3, 1, 1))

    def forward(self, x):  # x: full resolution; the net refines a bicubic 2x up-sampling of its half
        up = F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode="bicubic", align_corners=False)
        return (up + self.body(up)).clamp(0, 1)


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image of (B, C, H, W) with its own sigma (B,) - separable, reflect-padded."""
    r = 4
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-t[None] ** 2 / (2 * sigma.reshape(-1, 1) ** 2))
    k = k / k.sum(dim=1, keepdim=True)                                    # (B, 2r+1)
    b, c, h, w = x.shape
    y = F.pad(x, (r, r, r, r), mode="reflect").reshape(1, b * c, h + 2 * r, w + 2 * r)
    kc = k.repeat_interleave(c, dim=0)                                    # (B*C, 2r+1)
    y = F.conv2d(y, kc[:, None, None, :], groups=b * c)
    y = F.conv2d(y, kc[:, None, :, None], groups=b * c)
    return y.reshape(b, c, h, w)


class Deblur(Generator):
    multiple = 1
    sigma = 1.2           # blur used when generating

    def __init__(self, width: int = 32):
        super().__init__()
        self.body = _full_resolution_net(width, first_kernel=5)

    def forward(self, x):  # x: blurred image; predicts the lost detail and adds it back
        return (x + self.body(x)).clamp(0, 1)

    def train_input(self, x):
        return _gaussian_blur(x, torch.empty(x.shape[0]).uniform_(0.8, 1.6))

    def generation_input(self, x):
        return _gaussian_blur(x, torch.full((x.shape[0],), self.sigma))


FAMILIES: dict[str, type[Generator]] = {
    "ae_tconv": AETConv,
    "ae_resize": AEResize,
    "sr_shuffle": SRShuffle,
    "denoise": Denoise,
    "sr_interp": SRInterp,
    "deblur": Deblur,
}

# What `zoomin synth` makes by default (the shipped weights were trained on these). `sr_interp`
# and `deblur` are opt-in: with them in training, a held-out `sr_shuffle` was recognised better
# and a held-out `denoise` not at all, and a model trained on all six called more photos it never
# saw generated than v7 did (README, "Six families").
DEFAULT_FAMILIES: tuple[str, ...] = ("ae_tconv", "ae_resize", "sr_shuffle", "denoise")


def train_generator(family: str, photos: list[np.ndarray], steps: int = 400, seed: int = 0,
                    patch: int = 64, batch: int = 16) -> Generator:
    """Fit one family to random patches of the photos (L1 to the clean patch)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = FAMILIES[family]()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    arrays = [a for a in photos if min(a.shape[:2]) >= patch]
    if not arrays:
        raise ValueError(f"no photo is at least {patch} px a side")
    loss = torch.zeros(())
    for _ in range(steps):
        crops = []
        for _ in range(batch):
            a = arrays[rng.integers(len(arrays))]
            y, x = rng.integers(a.shape[0] - patch + 1), rng.integers(a.shape[1] - patch + 1)
            crops.append(a[y:y + patch, x:x + patch])
        x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255
        loss = (net(net.train_input(x)) - x).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    log.info("generator %s trained: %d steps, final L1 %.4f", family, steps, loss.item())
    return net
