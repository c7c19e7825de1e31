"""Bytes -> safe RGB pixels: the reduced scan view, and the full-resolution original on demand.

Real archives hold everything: CMYK JPEGs, palette PNGs with transparency, 16-bit scans,
animated GIFs, EXIF-rotated phone photos, truncated uploads, text files named .jpg and
decompression bombs. Each of these either becomes RGB uint8 pixels in display orientation, or a
DecodeError whose `status` and message go into the output row. The content decides the format,
never the file extension.

For JPEG the scan view is decoded with Pillow's draft mode: libjpeg scales the DCT blocks by
1/2, 1/4 or 1/8 while decoding, so a 24 MP photo is never fully decoded just to be shrunk.
"""
from __future__ import annotations

import io
import re
import time
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from . import provenance
from .records import (STATUS_DECODE_ERROR, STATUS_OK, STATUS_TOO_LARGE, STATUS_UNSUPPORTED,
                      ImageInput, Prepared, View, STATUS_READ_ERROR)

try:  # HEIC/HEIF (phone photos) is not in Pillow itself; read it when the plugin is installed
    from pillow_heif import register_heif_opener
    register_heif_opener()
    _HEIF_PLUGIN = True
except ImportError:
    _HEIF_PLUGIN = False

# ISO-BMFF brands of HEIF images ("....ftypheic"): named in the error when no plugin reads them.
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}


@dataclass(frozen=True)
class DecodeConfig:
    # Largest image accepted, in pixels (width x height as the header claims). Guards against
    # decompression bombs: a 40 KB PNG can claim 30000x30000 and need 2.7 GB to decode.
    max_pixels: int = 100_000_000
    # Longest side of the scan view. Larger sees more but the scan costs ~quadratically more.
    # 768 rather than 512: on 700-2000 px photos with regions of a few percent, the bundled
    # detector's ROC-AUC rose from 0.89 to 0.93 (test split), at 1.6x the time per image.
    view_max_side: int = 768
    # Images with a side shorter than this are refused as `unsupported` (nothing to examine).
    min_side: int = 16
    # The view's shorter side is at least this (when the image has it), even if its longer side
    # then exceeds view_max_side (at most 8 times): the classifier backend sets its input size,
    # so a panorama's tiles are squares of real pixels, not slivers stretched to the input.
    view_min_side: int = 0
    # Decode JPEG scan views with DCT scaling (draft mode). Off only for benchmarks.
    draft: bool = True
    # PEM trust anchors for C2PA signers (--c2pa-trust), read while decoding: a capture claim
    # decides `real` only when its signer chains to one of them. None: no signer is trusted.
    c2pa_trust: str | None = None

    def __post_init__(self):
        if self.max_pixels <= 0 or self.view_max_side < 32 or self.min_side < 1:
            raise ValueError(f"invalid DecodeConfig: {self}")


class DecodeError(Exception):
    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _too_large(what: str, cfg: DecodeConfig) -> DecodeError:
    return DecodeError(STATUS_TOO_LARGE, f"{what} exceeds the limit of {cfg.max_pixels:,} "
                                         "(raise --max-pixels to accept it)")


def _open(data: bytes, cfg: DecodeConfig) -> Image.Image:
    """Open (header only) and check size. Raises DecodeError."""
    if not data:
        raise DecodeError(STATUS_DECODE_ERROR, "empty file (0 bytes)")
    # Pillow's own bomb guard raises above 2x MAX_IMAGE_PIXELS; make ours the one that decides.
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < cfg.max_pixels:
        Image.MAX_IMAGE_PIXELS = cfg.max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        # Pillow words its own limit (2x ours); say ours, the one the user can change.
        size = re.search(r"\((\d+) pixels\)", str(e))
        raise _too_large(f"{int(size.group(1)):,} pixels" if size else "the image", cfg) from None
    except UnidentifiedImageError:
        if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
            brand = data[8:12].decode()
            if _HEIF_PLUGIN:
                raise DecodeError(STATUS_DECODE_ERROR, f"HEIC/HEIF image (brand {brand!r}) that pillow-heif "
                                  "cannot read (damaged or truncated)") from None
            raise DecodeError(STATUS_UNSUPPORTED, f"HEIC/HEIF image (brand {brand!r}): install pillow-heif "
                              "on the workers to read it (pip install pillow-heif, or the `heic` extra)") from None
        head = data[:8].hex()
        raise DecodeError(STATUS_DECODE_ERROR,
                          f"not a recognised image format ({len(data)} bytes, starts with {head})") from None
    except Exception as e:  # noqa: BLE001 - any parser failure is a property of the input
        raise DecodeError(STATUS_DECODE_ERROR, f"cannot open image: {type(e).__name__}: {e}") from None
    w, h = im.size
    if w * h > cfg.max_pixels:
        raise _too_large(f"{w}x{h} = {w * h:,} pixels", cfg)
    if min(w, h) < cfg.min_side:
        raise DecodeError(STATUS_UNSUPPORTED,
                          f"image is {w}x{h} px, smaller than the {cfg.min_side} px minimum side")
    return im


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB. Transparency is composited on white (how a viewer shows it)."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16-bit / 32-bit / float single channel: rescale to 8 bit by its nominal range.
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or (mode == "I" and a.max(initial=0) > 255) else 255.0
        if mode == "F":
            top = 1.0 if a.max(initial=0) <= 1.0 else 255.0
        a = np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(a, "L").convert("RGB")
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV ...


def _load(im: Image.Image) -> Image.Image:
    """Decode pixels (first frame), apply EXIF orientation, convert to RGB."""
    try:
        if getattr(im, "n_frames", 1) > 1:
            im.seek(0)  # animated GIF/WebP/APNG: judge the first frame
        im.load()
        oriented = ImageOps.exif_transpose(im)
        return _to_rgb(oriented if oriented is not None else im)
    except DecodeError:
        raise
    except OSError as e:
        msg = str(e)
        if "truncated" in msg:
            # Pillow's "(N bytes not processed)" counts its own buffer, not what is missing.
            raise DecodeError(STATUS_DECODE_ERROR, "truncated image data: the file ends before the image "
                                                   "does (a cut-off upload or copy)") from None
        raise DecodeError(STATUS_DECODE_ERROR, f"cannot decode pixels: {msg}") from None
    except Exception as e:  # noqa: BLE001
        raise DecodeError(STATUS_DECODE_ERROR, f"cannot decode pixels: {type(e).__name__}: {e}") from None


def _oriented_size(im: Image.Image) -> tuple[int, int]:
    """Size after EXIF orientation, read from the header (no pixel decode)."""
    w, h = im.size
    try:
        orientation = im.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not fail the image
        orientation = 1
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def fit(w: int, h: int, max_side: int, min_short: int = 0) -> tuple[int, int]:
    """Size that fits in max_side, keeping the aspect ratio; never enlarges. With min_short, the
    shorter side stays at least that (the longer then at most 8 x max_side)."""
    s = min(1.0, max_side / max(w, h))
    if min_short and min(w, h) * s < min_short:
        s = min(1.0, max(s, min(min_short / min(w, h), 8 * max_side / max(w, h))))
    return max(1, round(w * s)), max(1, round(h * s))


def prepare(item: ImageInput, cfg: DecodeConfig = DecodeConfig()) -> Prepared:
    """Decode the scan view of one input. Never raises: failures become a Prepared with a status."""
    t0 = time.perf_counter()
    image_id = item.image_id
    if item.data is None:
        return Prepared(image_id, item.uri, item.read_status or STATUS_READ_ERROR, item.read_error or "unreadable")
    try:
        im = _open(item.data, cfg)
        width, height = _oriented_size(im)
        vw, vh = fit(width, height, cfg.view_max_side, cfg.view_min_side)
        if cfg.draft and im.format == "JPEG":
            # Ask libjpeg for the smallest DCT scale that is still >= the view (raw orientation).
            raw_w, raw_h = im.size
            rw, rh = fit(raw_w, raw_h, cfg.view_max_side, cfg.view_min_side)
            im.draft("RGB", (rw, rh))
        rgb = _load(im)
        # after loading: PNG text chunks may follow the pixels; a watermark needs them at full size
        marks = provenance.read(im.info, item.data, im.format, cfg.c2pa_trust,
                                pixels=rgb if rgb.size == (width, height) else None)
        if rgb.size != (vw, vh):
            rgb = rgb.resize((vw, vh), Image.Resampling.BILINEAR)
        view = View(np.asarray(rgb, dtype=np.uint8), scale_x=width / vw, scale_y=height / vh)
    except DecodeError as e:
        return Prepared(image_id, item.uri, e.status, e.message, decode_s=time.perf_counter() - t0,
                        nbytes=len(item.data))
    return Prepared(image_id, item.uri, STATUS_OK, None, width, height, view, item.data,
                    decode_s=time.perf_counter() - t0, nbytes=len(item.data), provenance=marks)


def decode_full(data: bytes, cfg: DecodeConfig = DecodeConfig()) -> np.ndarray:
    """Full-resolution RGB uint8 pixels (h, w, 3), display orientation. Raises DecodeError."""
    return np.asarray(_load(_open(data, cfg)), dtype=np.uint8)
