"""Invisible watermarks that Stable Diffusion releases embed, read from the pixels.

Both use `invisible-watermark`'s `dwtDct` method: in the U and V planes of the image (OpenCV's
BGR->YUV), the haar DWT's approximation band is cut into 4x4 blocks; block n carries bit
n mod L of the message in the remainder, modulo 36, of its largest off-DC coefficient (a quarter
of 36 for a 0, three quarters for a 1). A bit is read as the mean vote of all its blocks.

- Stable Diffusion 1.x (CompVis `scripts/txt2img.py`): the bytes "StableDiffusionV1" (136 bits).
- SDXL (Stability's `generative-models` and diffusers' `StableDiffusionXLWatermarker`): a fixed
  48-bit message. diffusers hands the library RGB arrays where it expects BGR, so the mark sits
  in the planes of the swapped channels; both orders are read and the better one counts. (On
  some photos a mark embedded in one order also reads in the other, so the order is not
  reported.)

This module re-implements only the decoder, in numpy and Pillow (no OpenCV, no PyWavelets): the
YUV planes by a Pillow colour matrix and the approximation band by a 2x2 box reduce. Both round
where OpenCV does not, which moves a coefficient by a unit or two against the 9 the embedding
leaves on each side of the decision point. The tests embed marks with the library itself and
check that this decoder finds every one the library's own decoder reads above the threshold.

A message counts as found when at least `threshold(L)` of its L bits match: a number that an
image whose bits are fair coin flips reaches, for any of the four (message, channel order) pairs,
with probability under 1e-6 (`FALSE_MATCH`). The mark is fragile: JPEG re-encoding, resizing,
cropping off the 8-pixel grid, or screenshots erase it. Its absence proves nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from math import comb

import numpy as np
from PIL import Image

SCALE = 36          # dwtDct's quantisation step on the U and V planes (its default scales [0, 36, 36])
BLOCK = 4           # block side in the approximation band
MIN_PIXELS = 256 * 256   # the library refuses smaller images; nothing below this carries a mark
# Generators that embed these marks write a few megapixels at most, and an upscaled copy has lost
# the mark: larger images are not searched (the search costs ~4 ms per megapixel).
MAX_PIXELS = 4096 * 4096
FALSE_MATCH = 1e-6  # bound on the chance that an unmarked image is called marked


@dataclass(frozen=True)
class Mark:
    name: str        # signal name in the provenance column
    who: str         # the generator family, for `detail`
    bits: tuple[int, ...]


def _bits_of(data: bytes) -> tuple[int, ...]:
    return tuple(int(b) for b in np.unpackbits(np.frombuffer(data, dtype=np.uint8)))


MARKS = (
    Mark("watermark_sd", "Stable Diffusion 1.x ('StableDiffusionV1')", _bits_of(b"StableDiffusionV1")),
    Mark("watermark_sdxl", "SDXL (48-bit message)",
         tuple(int(c) for c in bin(0b101100111110110010010000011110111011000110011110)[2:])),
)
_TESTS = len(MARKS) * 2   # each mark is read in both channel orders


@lru_cache(maxsize=None)
def threshold(length: int, tests: int = _TESTS, p: float = FALSE_MATCH) -> int:
    """Fewest matching bits out of `length` whose chance under fair coin flips, summed over
    `tests` comparisons, stays under p."""
    tail = 0
    for k in range(length, -1, -1):
        tail += comb(length, k)
        if tests * tail / 2 ** length >= p:
            return k + 1
    return 0


# OpenCV's BGR->YUV: Y = .299R + .587G + .114B, U = .492(B - Y) + 128, V = .877(R - Y) + 128.
_Y = (0.299, 0.587, 0.114)


def _uv_matrix(swap: bool) -> tuple[float, ...]:
    """A Pillow RGB->RGB colour matrix whose first two output channels are U and V (the third
    repeats U). swap: the library was handed R and B in each other's place."""
    y = _Y[::-1] if swap else _Y
    blue, red = (0, 2) if swap else (2, 0)
    u = [-0.492 * c for c in y]
    u[blue] += 0.492
    v = [-0.877 * c for c in y]
    v[red] += 0.877
    return (*u, 128.0, *v, 128.0, *u, 128.0)


# A block's vote from its largest off-DC coefficient c = 2 * (box mean): 1 when c mod 36 > 18.
_VOTE = (np.arange(256) * 2 % SCALE > SCALE / 2)


def _planes(image: Image.Image) -> list[np.ndarray]:
    """Box means over 2x2 pixels of U, V, and the swapped order's U, V ((h/2, w/2) uint8 each).
    The box mean is taken before the colour matrix (both linear; a quarter of the pixels to
    convert): rounding and clipping then differ from OpenCV's order by a unit or two at most,
    against the 9 units the embedding leaves each side of the decision point."""
    w, h = image.size
    if w % 4 or h % 4:
        image = image.crop((0, 0, w // 4 * 4, h // 4 * 4))
    small = image.reduce(2)
    planes = []
    for swap in (False, True):
        uv = np.asarray(small.convert("RGB", matrix=_uv_matrix(swap)))
        planes += [uv[:, :, 0], uv[:, :, 1]]
    return planes


def _block_votes(plane: np.ndarray) -> np.ndarray:
    """One vote per 4x4 block of an approximation-band plane (row-major block order): the
    largest of its 15 off-DC values, taken as 15 strided views (no copy of the plane)."""
    rows, cols = plane.shape[0] // BLOCK, plane.shape[1] // BLOCK
    plane = plane[:rows * BLOCK, :cols * BLOCK]
    top = plane[0::BLOCK, 1::BLOCK].copy()     # values are >= 0, so a plain max works
    for i in range(BLOCK):
        for j in range(BLOCK):
            if (i, j) not in ((0, 0), (0, 1)):
                np.maximum(top, plane[i::BLOCK, j::BLOCK], out=top)
    return _VOTE[top.ravel()]


def decode(votes: np.ndarray, length: int) -> np.ndarray:
    """The L bits the block votes spell (block n of each plane votes for bit n mod L)."""
    per_plane = len(votes) // 2
    index = np.tile(np.arange(per_plane) % length, 2)
    mean = np.bincount(index, weights=votes, minlength=length) / np.maximum(np.bincount(index, minlength=length), 1)
    return mean * 255 > 127


def read(image: Image.Image):
    """[(mark, matched bits)] for each known mark found in an RGB image at its original size,
    read in the channel order that matches best."""
    w, h = image.size
    if not MIN_PIXELS <= w * h <= MAX_PIXELS or image.mode != "RGB":
        return []
    planes = _planes(image)
    votes = [np.concatenate([_block_votes(planes[2 * swap]), _block_votes(planes[2 * swap + 1])]) for swap in (0, 1)]
    found = []
    for mark in MARKS:
        if len(votes[0]) // 2 < len(mark.bits):
            continue
        want = np.array(mark.bits, dtype=bool)
        matched = max(int((decode(v, len(want)) == want).sum()) for v in votes)
        if matched >= threshold(len(want)):
            found.append((mark, matched))
    return found
