"""Rationales say how the verdict follows from the looks they name, in the boxes column's frame
and order; pixel statistics are quoted only where they carry signal."""
import re

import numpy as np
import pytest

from zoomin_core import ImageInput, load_backend, rationale, run_chain
from zoomin_core.compact_model import fuse
from zoomin_core.records import Box
from tests.conftest import jpeg_bytes, textured


def test_measure_detects_smoothing_and_checkerboard():
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 255, (64, 64, 3)).astype(np.uint8)
    flat = np.full((64, 64, 3), 128, np.uint8)
    assert rationale.measure(noisy).detail > 100 * (rationale.measure(flat).detail + 1e-3)
    checker = np.indices((64, 64)).sum(axis=0) % 2 * 60 + 100
    checker = np.repeat(checker[..., None], 3, axis=2).astype(np.uint8)
    assert rationale.measure(checker).periodicity > 3 * rationale.measure(noisy).periodicity


def test_fuse_lies_between_the_two_looks_even_when_both_are_confident():
    # Two confident "real" looks can never make a "generated" verdict (the bug a product feature
    # of the two logits caused: both negative, their product large and positive).
    for first, best in [(1e-6, 1e-6), (0.0, 0.0), (0.3, 0.9), (0.99, 0.01), (1.0, 1.0)]:
        for w in (0.0, 0.3, 0.7, 1.0):
            f = fuse(first, best, w)
            assert min(first, best) - 2e-9 <= f <= max(first, best) + 2e-9


def test_zoom_rationale_orders_regions_by_score_and_states_the_rule():
    c = rationale.Cues(detail=10.0, periodicity=0.5)
    regions = [(Box(0, 0, 10, 10), 0.2, c), (Box(10, 20, 110, 70), 0.91, c)]
    text = rationale.zoom_rationale(regions, "generated", 0.8, "real", 0.31, 0.7, 0.5, {}, {})
    assert text.startswith("Generated, score 0.80")
    assert "scored 0.31" in text and "(region 1) 0.91" in text and "30% and 70%" in text
    assert text.index("Region 1 (10,20)-(110,70), 100x50 px: 0.91") < text.index("Region 2 (0,0)-(10,10)")
    assert "overturned the first look (real)" in text


def test_statistics_are_quoted_only_where_they_carry_signal_and_agree():
    reference = {"detail": 40.0, "periodicity": 0.1}
    smooth = rationale.Cues(detail=10.0, periodicity=0.1)     # 0.25x the real level of detail
    # no signal measured on the calib split: never quoted
    assert rationale.cue_phrase(smooth, reference, {"detail": 0.55, "periodicity": 0.5}, True) is None
    # low detail goes with generated (ROC-AUC 0.2 for "higher means generated"): quoted for a
    # region that looks generated, not for one that looks real
    assert "0.2x" in rationale.cue_phrase(smooth, reference, {"detail": 0.2}, True)
    assert rationale.cue_phrase(smooth, reference, {"detail": 0.2}, False) is None
    typical = rationale.Cues(detail=42.0, periodicity=0.1)
    assert rationale.cue_phrase(typical, reference, {"detail": 0.2}, True) is None
    assert "level of real photos" in rationale.cue_phrase(typical, reference, {"detail": 0.2}, False)


def test_a_score_just_under_the_threshold_never_reads_as_reaching_it():
    assert rationale.decimals(0.62, 0.5) == 2 and rationale.decimals(0.996687, 0.9967) == 5
    assert rationale.decimals(0.9589, 0.9589) == 2          # equal: generated, and reads equal
    c = rationale.Cues(detail=10.0, periodicity=0.5)
    text = rationale.zoom_rationale([(Box(0, 0, 10, 10), 0.9588, c), (Box(0, 0, 9, 9), 0.7, c)], "real", 0.9551,
                                    "real", 0.95, 0.6, 0.9589, {}, {}, "the archive operating point")
    assert text.startswith("Real, score 0.955 (generated at 0.959 or more, the archive operating point).")
    assert "px: 0.9588, leans generated, under the threshold" in text and "px: 0.70, leans generated" in text


def test_no_region_examined_says_the_first_look_decides():
    text = rationale.zoom_rationale([], "real", 0.1, "real", 0.1, 0.6, 0.5, {}, {})
    assert "first look at the whole image decides: 0.10" in text


def test_scan_explanation_states_the_first_look():
    t = rationale.scan_explanation([Box(0, 0, 5, 5, 0.8), Box(9, 9, 20, 20, 0.4)], 0.8, "generated")
    assert "generated (0.80)" in t and "region(s)" not in t   # the count would be the count before merging


def _images() -> list[ImageInput]:
    """Real photos, the bundled samples, textures, and odd sizes: 40 px, a panorama, a PNG."""
    import io
    from pathlib import Path

    from PIL import Image
    from skimage import data
    out = []
    for name in ("astronaut", "chelsea", "coffee", "rocket", "camera", "brick"):
        a = getattr(data, name)()
        out.append(ImageInput(name, jpeg_bytes(np.stack([a] * 3, -1) if a.ndim == 2 else a[..., :3])))
    samples = Path(__file__).resolve().parent.parent / "jobs" / "samples"
    out += [ImageInput(p.name, p.read_bytes()) for p in sorted(samples.glob("*.jpg"))]
    for w, h, seed in ((40, 40, 1), (1600, 200, 2), (300, 900, 3), (64, 48, 4)):
        buf = io.BytesIO()
        Image.fromarray(textured(w, h, seed=seed)).save(buf, format="PNG")
        out.append(ImageInput(f"t{w}x{h}.png", buf.getvalue()))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("prior", [None, 0.02])
def test_verdict_score_boxes_and_rationale_agree_over_many_rows(prior):
    backend = load_backend("compact", prior=prior)
    images = _images()
    if prior is not None:   # the rule holds at any prior: a few images show it
        images = images[:6] + images[-4:]
    rows = [r for r in run_chain(backend, images) if r.status == "ok"]
    assert len(rows) >= (9 if prior is not None else 18)
    for r in rows:
        scores = [b.score for b in r.boxes]
        assert scores == sorted(scores, reverse=True), r.uri                     # best first
        assert (r.verdict == "generated") == (r.score >= backend.threshold), r.uri
        assert (r.initial_verdict == "generated") == (r.initial_score >= backend.threshold), r.uri
        # the final score lies between the two looks it is made of
        lo, hi = sorted((r.initial_score, scores[0]))
        assert lo - 1e-6 <= r.score <= hi + 1e-6, (r.uri, r.initial_score, scores[0], r.score)
        # the rationale quotes the row's own numbers, and its regions are the boxes column's
        d = rationale.decimals(r.score, backend.threshold)
        assert r.rationale.startswith(f"{r.verdict.capitalize()}, score {r.score:.{d}f} (generated at "
                                      f"{backend.threshold:.{d}f} or more"), r.uri
        assert f"whole image scored {r.initial_score:.2f}" in r.rationale
        quoted = re.findall(r"Region (\d+) \((\d+),(\d+)\)-\((\d+),(\d+)\), \d+x\d+ px: ([\d.]+)", r.rationale)
        assert [(int(n), int(x1), int(y1), int(x2), int(y2), s) for n, x1, y1, x2, y2, s in quoted] == [
            (k, int(b.x1), int(b.y1), int(b.x2), int(b.y2), f"{b.score:.{rationale.decimals(b.score, backend.threshold)}f}")
            for k, b in enumerate(r.boxes, 1)]
        assert ("overturned" in r.rationale) == (r.verdict != r.initial_verdict), r.uri
        assert r.prior == pytest.approx(prior if prior is not None else backend.model.meta["calib_generated_share"])
