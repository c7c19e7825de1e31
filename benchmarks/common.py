"""Helpers shared by the benchmark scripts: realistic large JPEGs made from packaged photos."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def large_jpegs(folder: Path, n: int, side: int, quality: int = 90) -> list[Path]:
    """n JPEGs whose long side is `side`, cut from packaged real photos enlarged to size, so
    they have photo-like content and entropy (what decode and the models actually cost)."""
    from zoomin_core.synth import package_photos
    photos = list(package_photos().values())
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        a = photos[i % len(photos)]
        h, w = a.shape[:2]
        s = side / max(h, w)
        im = Image.fromarray(a).resize((round(w * s), round(h * s)), Image.Resampling.BICUBIC)
        px = np.asarray(im).astype(np.int16) + rng.integers(-6, 7, (im.height, im.width, 3))
        buf = io.BytesIO()
        Image.fromarray(px.clip(0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=quality)
        p = folder / f"img_{i:04d}.jpg"
        p.write_bytes(buf.getvalue())
        paths.append(p)
    return paths
