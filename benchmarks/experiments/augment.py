"""Training-time perturbations of whole patches, the same for real and generated ones.

A fake's fingerprint in the small labelled set is exact: one JPEG quality, one noise level, one
sharpness. Nets trained on it learn those levels ("smooth = generated"), which fails on soft or
grainy real photos and on a generator family that leaves grain behind. Perturbing every patch,
whatever its label, with a little noise, blur or re-compression makes those levels useless as a
cue on their own; what still separates the classes is how the content was made. (The same idea
as the blur and JPEG augmentation that lets detectors trained on one GAN carry to others.)

Unlike `pseudo.py`, nothing here changes a label or a region: a perturbed real patch is real,
a perturbed generated patch is generated.

Off by default (`zoomin train --augment 0`): at 0.25 it lifted leave-one-family-out ROC-AUC
from 0.650 to 0.676 (the two autoencoder families; `denoise` unchanged), but in-distribution
accuracy fell from 0.887 to 0.805 and region recall from 0.438 to 0.342 (README, "Measured").
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from zoomin_core.synth import recompress


def perturb(patch: np.ndarray, rng: np.random.Generator, p: float) -> np.ndarray:
    """uint8 (h, w, 3) -> a perturbed copy (or the patch itself when nothing was drawn). Each
    operation is drawn on its own with probability p, in this order: noise, blur, JPEG."""
    if p <= 0:
        return patch
    out = patch
    if rng.random() < p:  # grain: 1-5 grey levels, per pixel and channel
        noisy = out.astype(np.float32) + rng.normal(0, rng.uniform(1.0, 5.0), out.shape)
        out = np.clip(noisy + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < p:  # softness: a Gaussian blur of 0.3-1.2 px
        out = np.asarray(Image.fromarray(out).filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.2)))))
    if rng.random() < p:  # another compression: JPEG quality 60-95
        out = recompress(out, int(rng.integers(60, 96)))
    return out
