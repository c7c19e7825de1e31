"""What reading provenance marks costs against decoding, in one run: JPEGs without marks (the
common case), JPEGs with an XMP packet, and PNGs without marks at a generator's output size
(the only files whose pixels are searched for an invisible watermark):

    python benchmarks/provenance_cost.py [--n 48] [--side 1536] [--png-side 1024]

Prints per-image milliseconds of `decode.prepare` (the scan view, which includes reading the
marks) and of `provenance.read` alone, and their ratio.
"""
from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from zoomin_core import provenance  # noqa: E402
from zoomin_core.decode import prepare  # noqa: E402
from zoomin_core.records import ImageInput  # noqa: E402


def photos(n: int, side: int, xmp: bytes | None, fmt: str = "JPEG") -> list[bytes]:
    from skimage import data, transform
    base = [getattr(data, k)() for k in ("astronaut", "coffee", "chelsea", "rocket")]
    out = []
    for i in range(n):
        a = base[i % len(base)]
        a = (transform.resize(a, (side * 2 // 3 // 8 * 8, side), preserve_range=True) + i % 7).clip(0, 255).astype(np.uint8)
        buf = io.BytesIO()
        options = {"quality": 90} if fmt == "JPEG" else {}
        Image.fromarray(a).save(buf, format=fmt, **options, **({"xmp": xmp} if xmp else {}))
        out.append(buf.getvalue())
    return out


def timed(fn, items) -> float:
    t0 = time.perf_counter()
    for it in items:
        fn(it)
    return (time.perf_counter() - t0) / len(items) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--side", type=int, default=1536)
    ap.add_argument("--png-side", type=int, default=1024)
    a = ap.parse_args()
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description Iptc4xmpExt:DigitalSourceType='
           b'"http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"/></x:xmpmeta>')
    print(f"{a.n} images, JPEGs {a.side} px wide, PNGs {a.png_side} px wide; ms per image (one process)")
    for label, files in (("JPEG, no marks", photos(a.n, a.side, None)),
                         ("JPEG, XMP claim", photos(a.n, a.side, xmp)),
                         ("PNG, no marks", photos(a.n, a.png_side, None, "PNG"))):
        opened = []
        for f in files:
            im = Image.open(io.BytesIO(f))
            im.load()
            opened.append((im.info, f, im.format, None, im.convert("RGB")))
        decode = timed(lambda f: prepare(ImageInput("x", f)), files)
        marks = timed(lambda t: provenance.read(*t), opened)
        print(f"  {label:16s} decode (with marks) {decode:7.2f}   reading the marks {marks:6.3f}   "
              f"share {100 * marks / decode:5.2f}%")


if __name__ == "__main__":
    main()
