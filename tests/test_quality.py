"""End-to-end quality check of the shipped weights on a tiny fresh synthetic set (CI, ~1 min).

Photos the weights never saw (the held-out ones), a generator trained here from scratch, regions
of a few percent of the image planted in high-resolution canvases: the shipped detector must
score every planted image above every real one, and point at the planted region.
"""
import numpy as np
import pytest

from zoomin_core import ImageInput, load_backend, run_chain
from zoomin_core.geometry import iou
from zoomin_core.generators import train_generator
from zoomin_core.records import Box
from zoomin_core.synth import DEFAULT_HOLDOUT_PHOTOS, SynthConfig, encode_jpeg, make_canvas, make_sample, package_photos

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def planted():
    photos = package_photos()
    held = [photos[k] for k in DEFAULT_HOLDOUT_PHOTOS]
    seen = [v for k, v in photos.items() if k not in DEFAULT_HOLDOUT_PHOTOS]
    gen = train_generator("ae_tconv", seen, steps=150, seed=7)
    cfg = SynthConfig()
    rng = np.random.default_rng(11)
    reals, fakes = [], []
    for i in range(3):
        reals.append((encode_jpeg(make_canvas(held, rng, cfg), 92), []))
        pixels, boxes = make_sample(make_canvas(held, rng, cfg), "regional", gen, rng, cfg)
        fakes.append((encode_jpeg(pixels, 92), boxes))
    return reals, fakes


def test_shipped_weights_find_planted_regions(planted):
    reals, fakes = planted
    backend = load_backend("compact")
    rows = run_chain(backend, [ImageInput(f"real{i}", d) for i, (d, _) in enumerate(reals)]
                     + [ImageInput(f"fake{i}", d) for i, (d, _) in enumerate(fakes)])
    assert all(r.status == "ok" for r in rows)
    real_scores = [r.score for r in rows[:3]]
    fake_rows = rows[3:]
    assert min(r.score for r in fake_rows) > max(real_scores), (real_scores, [r.score for r in fake_rows])
    for r, (_, truth) in zip(fake_rows, fakes):
        assert r.verdict == "generated"
        best = max(iou(b, Box(*t)) for b in r.boxes for t in truth)
        assert best >= 0.3, (r.boxes, truth)
