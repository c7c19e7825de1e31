"""Generator-agnostic training fakes: real training images with 1-3 regions altered by a simple,
non-learned operation.

A detector trained only on the generator families in its labelled set learns their particular
fingerprint (leave-one-family-out: trained on three smoothing families, it ranked the noisy
`denoise` family *below* real photos). What every local regeneration shares is that the region's
fine detail no longer matches a camera's: it is smoother, grainier, resampled, or compressed
differently from its surroundings. These fakes teach that, in either direction, without any
generator: each region gets one of

  resample   down-scaled by 1.5-3x and scaled back up (random filters): interpolation traces
  blur       a Gaussian blur (sigma 0.6-1.5): detail lost
  noise      Gaussian noise (2-6 grey levels): grain that the rest of the image does not have
  median     a 3x3 median filter: detail lost in a non-linear way
  jpeg       an earlier JPEG save at quality 30-70: a different compression history

No learned denoiser, autoencoder or super-resolution net is involved, so a family held out in
leave-one-family-out evaluation stays unseen. Whole images are never altered this way: a whole
photo that is soft, grainy or recompressed is still a real photo; only a region that differs
from the rest of its own image is evidence.

Off by default (`zoomin train --pseudo 0`): on the two families that generalise worst it lifted
held-out ROC-AUC a little (0.361 -> 0.442, 0.557 -> 0.573) but called more real photos
generated, so accuracy fell (README, "Measured").
"""
from __future__ import annotations

import logging

import numpy as np
from PIL import Image, ImageFilter

from zoomin_core.decode import DecodeConfig, decode_full, prepare
from zoomin_core.records import ImageInput
from zoomin_core.synth import as_grey, encode_jpeg, is_grey, random_boxes, recompress

log = logging.getLogger(__name__)

OPS = ("resample", "blur", "noise", "median", "jpeg")
_FILTERS = (Image.BILINEAR, Image.BICUBIC, Image.BOX, Image.LANCZOS)


def alter(region: np.ndarray, op: str, rng: np.random.Generator) -> np.ndarray:
    """One region (h, w, 3) uint8 -> the same region altered by `op`."""
    h, w = region.shape[:2]
    im = Image.fromarray(region)
    if op == "resample":
        f = float(rng.uniform(1.5, 3.0))
        small = im.resize((max(8, round(w / f)), max(8, round(h / f))), _FILTERS[rng.integers(len(_FILTERS))])
        up = (Image.NEAREST,) + _FILTERS
        return np.asarray(small.resize((w, h), up[rng.integers(len(up))]))
    if op == "blur":
        return np.asarray(im.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.6, 1.5)))))
    if op == "noise":
        noisy = region.astype(np.float32) + rng.normal(0, rng.uniform(2.0, 6.0), region.shape)
        return np.clip(noisy + 0.5, 0, 255).astype(np.uint8)
    if op == "median":
        return np.asarray(im.filter(ImageFilter.MedianFilter(3)))
    if op == "jpeg":
        return recompress(region, int(rng.integers(30, 71)))
    raise ValueError(f"unknown operation {op!r}")


def make_pseudo(full: np.ndarray, rng: np.random.Generator, area: tuple[float, float] = (0.015, 0.05)
                ) -> tuple[np.ndarray, list[list[int]], list[str]]:
    """A real image's pixels -> (altered pixels, boxes, the operation of each box)."""
    h, w = full.shape[:2]
    out = full.copy()
    boxes = random_boxes(h, w, rng, area)
    ops = [OPS[rng.integers(len(OPS))] for _ in boxes]
    grey = is_grey(full)
    for (x1, y1, x2, y2), op in zip(boxes, ops):
        patch = alter(np.ascontiguousarray(full[y1:y2, x1:x2]), op, rng)
        out[y1:y2, x1:x2] = as_grey(patch) if grey else patch
    return out, boxes, ops


def pseudo_samples(reals: list, count: int, rng: np.random.Generator, jpeg_quality: int = 92,
                   decode: DecodeConfig = DecodeConfig()) -> list:
    """`count` regional pseudo-fakes (train.Sample, split "train") made from the full pixels of
    the real training samples `reals`, each given the same final JPEG encoding as the set
    (`jpeg_quality`) and decoded exactly as the job decodes."""
    from .train import Sample  # train imports this module: import here to keep the cycle lazy
    pool = [s for s in reals if s.full is not None and min(s.full.shape[:2]) >= 128]
    out: list = []
    if not pool:
        return out
    for k in range(count):
        s = pool[rng.integers(len(pool))]
        pixels, boxes, ops = make_pseudo(s.full, rng)
        if not boxes:
            continue
        data = encode_jpeg(pixels, jpeg_quality)
        p = prepare(ImageInput(f"{s.file}#pseudo{k}", data), decode)
        if p.view is None:
            continue
        out.append(Sample(f"{s.file}#pseudo{k}", 1, "regional", "pseudo",
                          "train", boxes, data, p.view.pixels, p.width, p.height, decode_full(data, decode)))
    log.info("train: %d generator-agnostic pseudo-fakes from %d real images", len(out), len(pool))
    return out
