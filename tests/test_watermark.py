"""Invisible watermarks: marks embedded by `invisible-watermark` itself (as Stable Diffusion's
reference scripts and diffusers call it) into real photos are found through the decode step and
decide `generated`; the same photos unmarked, re-encoded as JPEG, or resized are not."""
from __future__ import annotations

import io
from math import comb

import numpy as np
import pytest
from PIL import Image

from zoomin_core import ImageInput, load_backend, run_chain
from zoomin_core import watermark
from zoomin_core.decode import prepare
from zoomin_core.provenance import verdict

from imwatermark import WatermarkDecoder, WatermarkEncoder   # the test extra; a missing one must fail


def photos():
    """Real photos at generator output sizes (sides multiples of 8)."""
    from skimage import data
    from sklearn.datasets import load_sample_images
    base = [data.astronaut(), data.coffee(), data.rocket(), data.stereo_motorcycle()[0], *load_sample_images().images]
    sizes = [(512, 512), (768, 512), (1024, 1024), (640, 448)]
    return [np.asarray(Image.fromarray(rgb).convert("RGB").resize(sizes[i % len(sizes)], Image.Resampling.LANCZOS))
            for i, rgb in enumerate(base)]


def embed(rgb: np.ndarray, bits, swap: bool) -> np.ndarray:
    """The library's dwtDct embedding. swap=False: handed BGR, as the reference scripts do;
    swap=True: handed RGB where it expects BGR, as diffusers' SDXL watermarker does."""
    enc = WatermarkEncoder()
    enc.set_watermark("bits", list(bits))
    out = enc.encode(np.ascontiguousarray(rgb if swap else rgb[:, :, ::-1]), "dwtDct")
    return np.ascontiguousarray(out if swap else out[:, :, ::-1])


def library_matches(rgb: np.ndarray, bits, swap: bool) -> int:
    dec = WatermarkDecoder("bits", len(bits))
    got = dec.decode(np.ascontiguousarray(rgb if swap else rgb[:, :, ::-1]), "dwtDct")
    return int((np.array(got, dtype=bool) == np.array(bits, dtype=bool)).sum())


def encoded(rgb: np.ndarray, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt, **options)
    return buf.getvalue()


def marks(data: bytes):
    p = prepare(ImageInput("x", data))
    assert p.status == "ok", p.error
    return [m for m in p.provenance if m.signal.startswith("watermark_")]


def test_the_threshold_bounds_a_chance_match_under_one_in_a_million():
    for length in (48, 136):
        k = watermark.threshold(length)
        chance = lambda k: 4 * sum(comb(length, i) for i in range(k, length + 1)) / 2 ** length  # noqa: E731
        assert chance(k) < 1e-6 <= chance(k - 1), (length, k)


@pytest.mark.parametrize("mark", watermark.MARKS, ids=lambda m: m.name)
@pytest.mark.parametrize("swap", [False, True], ids=["reference-order", "diffusers-order"])
def test_embedded_marks_are_found_wherever_the_library_reads_them(mark, swap):
    need = watermark.threshold(len(mark.bits))
    readable, ours, shots = 0, 0, photos()
    for rgb in shots:
        marked = np.asarray(Image.open(io.BytesIO(encoded(embed(rgb, mark.bits, swap), "PNG"))).convert("RGB"))
        seen = marks(encoded(marked, "PNG"))
        ours += bool(seen)
        if library_matches(marked, mark.bits, swap) >= need:
            readable += 1
            assert [m.signal for m in seen] == [mark.name], seen
            assert seen[0].says == "generated" and verdict(seen) == "generated"
            assert f"of {len(mark.bits)} bits match" in seen[0].detail
        # the pixels without the mark: nothing
        assert marks(encoded(rgb, "PNG")) == []
    # dwtDct is fragile: on some photos even the library cannot read back what it just embedded
    assert readable >= len(shots) // 2 and ours >= readable, (readable, ours)


def best_match(im: Image.Image, mark) -> int:
    planes = watermark._planes(im)
    want = np.array(mark.bits, dtype=bool)
    return max(int((watermark.decode(np.concatenate([watermark._block_votes(planes[2 * s]),
                                                     watermark._block_votes(planes[2 * s + 1])]), len(want)) == want).sum())
               for s in (0, 1))


def test_real_photos_never_match_and_stay_well_below_the_threshold():
    from skimage import data
    images = [Image.fromarray(rgb) for rgb in photos()] + [Image.fromarray(rgb).resize((512, 512)) for rgb in photos()]
    images += [Image.fromarray(g).convert("RGB").resize((512, 512)) for g in (data.camera(), data.moon(), data.coins())]
    images.append(Image.new("RGB", (512, 512), (200, 30, 30)))   # flat: every vote the same
    for im in images:
        assert watermark.read(im) == []
        for mark in watermark.MARKS:   # measured: at most 77 of 136 and 32 of 48 bits
            assert best_match(im, mark) <= watermark.threshold(len(mark.bits)) - 6


def test_lossy_copies_and_resized_copies_lose_the_mark_and_the_models_decide():
    mark = watermark.MARKS[1]
    rgb = photos()[0]
    marked = embed(rgb, mark.bits, swap=False)
    assert [m.signal for m in marks(encoded(marked, "PNG"))] == [mark.name]
    lossless_webp = encoded(marked, "WEBP", lossless=True)
    assert [m.signal for m in marks(lossless_webp)] == [mark.name]
    jpeg = encoded(marked, "JPEG", quality=100)            # 4:2:0 chroma: the mark's planes are halved
    resized = encoded(np.asarray(Image.fromarray(marked).resize((496, 496))), "PNG")
    assert marks(jpeg) == [] and marks(resized) == []
    rows = run_chain(load_backend("fake"), [ImageInput("copy.jpg", jpeg), ImageInput("marked.png", encoded(marked, "PNG"))])
    assert rows[0].decided_by == "fake" and rows[1].decided_by == "provenance" and rows[1].verdict == "generated"
    assert "invisible watermark of SDXL" in rows[1].rationale


def test_images_too_small_or_too_large_for_a_mark_are_not_searched(monkeypatch):
    rgb = photos()[0]
    small = np.asarray(Image.fromarray(rgb).resize((200, 200)))
    assert watermark.read(Image.fromarray(small)) == []
    marked = Image.fromarray(embed(rgb, watermark.MARKS[1].bits, swap=False))   # 512x512
    assert watermark.read(marked) != []
    monkeypatch.setattr(watermark, "MAX_PIXELS", 500 * 500)   # the cap, lowered under this image
    assert watermark.read(marked) == []
