"""Helpers shared by the benchmark scripts: realistic large JPEGs made from packaged photos."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image


def large_jpegs(folder: Path, n: int, side: int, quality: int = 90) -> list[Path]:
    """n JPEGs whose long side is `side`, cut from packaged real photos enlarged to size, so
    they have photo-like content and entropy (what decode and the models actually cost). Made on
    all cores (PIL and numpy let go of the GIL); image i's grain comes from seed i alone."""
    from concurrent.futures import ThreadPoolExecutor

    from zoomin_core.synth import package_photos
    photos = list(package_photos().values())
    folder.mkdir(parents=True, exist_ok=True)
    enlarged: dict[int, Image.Image] = {}
    for k, a in enumerate(photos[:n]):
        h, w = a.shape[:2]
        s = side / max(h, w)
        enlarged[k] = Image.fromarray(a).resize((round(w * s), round(h * s)), Image.Resampling.BICUBIC)

    def make(i: int) -> Path:
        im = enlarged[i % len(photos)]
        rng = np.random.default_rng(i)
        px = np.asarray(im).astype(np.int16) + rng.integers(-6, 7, (im.height, im.width, 3), dtype=np.int16)
        buf = io.BytesIO()
        Image.fromarray(px.clip(0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=quality)
        p = folder / f"img_{i:04d}.jpg"
        p.write_bytes(buf.getvalue())
        return p

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        return list(pool.map(make, range(n)))
